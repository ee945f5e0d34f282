use std::path::PathBuf;

/// Every failure this crate reports. Messages name the offending field (key, tensor, dimension) and the
/// value found, because a GGUF file is untrusted input and the user needs to know what exactly is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The data ends before a fixed-size field does.
    #[error("truncated GGUF: {field} needs bytes up to offset {needed}, but the file has only {available} bytes")]
    Truncated {
        field: String,
        needed: u64,
        available: u64,
    },

    #[error("not a GGUF file: magic is {found:02x?} (expected \"GGUF\")")]
    BadMagic { found: [u8; 4] },

    #[error("unsupported GGUF version {version} (supported: 2, 3; v1 used 32-bit counts, a byte-swapped value means a big-endian file)")]
    UnsupportedVersion { version: u32 },

    #[error("unknown ggml type id {id} in {field}")]
    UnknownGgmlType { id: u32, field: String },

    #[error("unknown ggml type name {name:?}")]
    UnknownGgmlTypeName { name: String },

    #[error("unknown GGUF value type id {id} in {field}")]
    UnknownValueType { id: u32, field: String },

    #[error("duplicate metadata key {key:?}")]
    DuplicateKey { key: String },

    #[error("metadata entry #{index} has key {key:?}: {why} (GGUF keys are non-empty ASCII, dot-separated)")]
    InvalidKey {
        index: u64,
        key: String,
        why: &'static str,
    },

    #[error("duplicate tensor name {name:?}")]
    DuplicateTensor { name: String },

    #[error("tensor {tensor:?} has {n_dims} dimensions (allowed: 1..=4)")]
    BadDimCount { tensor: String, n_dims: u64 },

    #[error("tensor {tensor:?} has dims[{axis}] = {value} (zero-sized or > i64::MAX dimensions are rejected)")]
    BadDim {
        tensor: String,
        axis: usize,
        value: u64,
    },

    #[error("{field}: string length {len} exceeds the cap of {max} bytes")]
    StringTooLong { field: String, len: u64, max: u64 },

    /// A declared length/count cannot possibly fit in the bytes left in the file.
    #[error("{field}: declared length {len} needs at least {needed} bytes, but only {remaining} remain in the file")]
    LengthExceedsRemaining {
        field: String,
        len: u64,
        needed: u64,
        remaining: u64,
    },

    /// The header would extend past [`crate::MAX_HEADER_LEN`]; real headers are a few MiB at most.
    #[error("{field}: header would extend to byte {needed}, beyond the cap of {max} bytes")]
    HeaderTooLarge {
        field: String,
        needed: u64,
        max: u64,
    },

    #[error("{field}: arrays nested deeper than {max} levels")]
    NestingTooDeep { field: String, max: usize },

    #[error("{field}: string is not valid UTF-8")]
    InvalidUtf8 { field: String },

    #[error("{field}: bool byte is {value} (must be 0 or 1)")]
    InvalidBool { field: String, value: u8 },

    #[error("arithmetic overflow computing {field}")]
    Overflow { field: String },

    #[error("general.alignment = {value} is not a non-zero power of two")]
    BadAlignment { value: u64 },

    #[error("tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "{ty} row of {n_elements} elements is not a whole number of {block_size}-element blocks"
    )]
    NotBlockMultiple {
        ty: &'static str,
        n_elements: u64,
        block_size: u64,
    },

    #[error("tensor {tensor:?}: data [{start}, {end}) extends past the end of the file ({file_len} bytes)")]
    TensorOutOfBounds {
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error("tensors {first:?} (data ends at {first_end}) and {second:?} (data starts at {second_start}) overlap")]
    TensorOverlap {
        first: String,
        first_end: u64,
        second: String,
        second_start: u64,
    },

    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },

    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    TypeMismatch {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("metadata key {key:?}: value {value} does not fit in {target}")]
    ValueOutOfRange {
        key: String,
        value: String,
        target: &'static str,
    },

    // The cause is part of the message, not a `source()`: a chain walker (anyhow's `{:#}`) would print it twice.
    #[error("{op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A [`crate::ByteSource`] that is not a local file (e.g. a browser Blob) failed.
    #[error("reading {len} bytes at offset {offset}: {message}")]
    Source {
        offset: u64,
        len: u64,
        message: String,
    },

    #[error("refusing to overwrite existing file {path} (set WriteOptions::overwrite)")]
    FileExists { path: PathBuf },

    #[error("writer: {0}")]
    Writer(String),

    /// A language-model GGUF and an `mmproj` GGUF that cannot be one model (see [`crate::merge_mmproj`]).
    #[error("{mmproj} cannot be the vision part of {text}: {reason}")]
    SplitMismatch {
        text: String,
        mmproj: String,
        reason: String,
    },
}

impl GgufError {
    pub(crate) fn overflow(field: impl Into<String>) -> Self {
        GgufError::Overflow {
            field: field.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        GgufError::Io {
            op,
            path: path.into(),
            cause,
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
