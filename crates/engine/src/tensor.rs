//! Activation buffers and strided row views.

use crate::error::{invalid, EngineError, Result};

/// Element type of an activation/cache buffer. Weights have their own [`crate::QuantType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Only with shader-f16 (the KV cache on capable devices).
    F16,
    U32,
}

impl DType {
    pub const fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// WGSL scalar name, spliced into templated kernels.
    pub(crate) const fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

/// A device buffer of `len` elements of `dtype` (usable as storage, copy source and destination).
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub len: u64,
    pub dtype: DType,
}

impl GpuBuffer {
    pub(crate) fn expect(&self, op: &'static str, field: &'static str, dtype: DType) -> Result<()> {
        if self.dtype != dtype {
            return Err(EngineError::DType {
                op,
                field,
                expected: dtype,
                got: self.dtype,
            });
        }
        Ok(())
    }

    /// Checks that `len` elements from `offset` lie inside the buffer.
    pub(crate) fn check_span(
        &self,
        op: &'static str,
        field: &'static str,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(invalid(
                op,
                field,
                offset.saturating_add(len),
                format!("runs past the buffer's {} elements", self.len),
            )),
        }
    }
}

/// A strided 2-D view of a buffer: `rows` rows of `width` elements, row `r` starting at `offset + r·stride`.
///
/// Views let kernels read slices of fused tensors in place (the q/k/v thirds of the ViT's qkv output, the K
/// and V of a KV cache) instead of copying them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    pub rows: u32,
    pub width: u32,
    pub offset: u32,
    pub stride: u32,
}

impl Rows {
    /// Contiguous rows from element 0.
    pub const fn dense(rows: u32, width: u32) -> Self {
        Rows {
            rows,
            width,
            offset: 0,
            stride: width,
        }
    }

    /// Columns `col .. col + width` of a dense `[rows, full_width]` tensor.
    pub const fn columns(rows: u32, full_width: u32, col: u32, width: u32) -> Self {
        Rows {
            rows,
            width,
            offset: col,
            stride: full_width,
        }
    }

    /// Checks that every element the view touches lies inside `buf`.
    pub(crate) fn check(
        &self,
        op: &'static str,
        field: &'static str,
        buf: &GpuBuffer,
    ) -> Result<()> {
        if self.rows > 1 && self.stride < self.width {
            return Err(invalid(
                op,
                field,
                self.stride,
                format!("stride is smaller than the width {}", self.width),
            ));
        }
        if self.rows == 0 {
            return Ok(());
        }
        let span = u64::from(self.rows - 1) * u64::from(self.stride) + u64::from(self.width);
        buf.check_span(op, field, u64::from(self.offset), span)
    }
}
