//! Typed errors: every message names the offending field and its value.

/// Why an engine call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no GPU adapter found ({0}); on a machine without a GPU install lavapipe (mesa-vulkan-drivers)")]
    NoAdapter(String),
    #[error("requesting the device failed: {0}")]
    RequestDevice(String),
    #[error("{op}: `{field}` = {value} is invalid: {why}")]
    Invalid {
        op: &'static str,
        field: &'static str,
        value: u64,
        why: String,
    },
    #[error("{op}: `{field}` needs {needed} bytes but the device allows at most {limit}")]
    TooLarge {
        op: &'static str,
        field: &'static str,
        needed: u64,
        limit: u64,
    },
    #[error(
        "buffer `{label}` needs {needed} bytes but the device allows at most {limit} per buffer \
         (max_buffer_size / max_storage_buffer_binding_size); use a shorter context or a smaller model"
    )]
    BufferTooLarge {
        label: String,
        needed: u64,
        limit: u64,
    },
    #[error("{op}: `{field}` must have dtype {expected:?}, got {got:?}")]
    DType {
        op: &'static str,
        field: &'static str,
        expected: crate::DType,
        got: crate::DType,
    },
    #[error("{op}: the device lacks shader-f16, so `{field}` cannot be f16")]
    NoF16 {
        op: &'static str,
        field: &'static str,
    },
    #[error("reading weight bytes at offset {offset} failed: {message}")]
    Read { offset: u64, message: String },
    #[error("mapping a buffer for readback failed: {0}")]
    Map(String),
    #[error(
        "the GPU device was lost ({0}); nothing computed since can be trusted: load the model again (a driver \
         reset, a removed GPU or memory pressure can cause this)"
    )]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Gpu(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Shorthand for [`EngineError::Invalid`].
pub(crate) fn invalid(
    op: &'static str,
    field: &'static str,
    value: impl TryInto<u64>,
    why: impl Into<String>,
) -> EngineError {
    EngineError::Invalid {
        op,
        field,
        value: value.try_into().unwrap_or(u64::MAX),
        why: why.into(),
    }
}
