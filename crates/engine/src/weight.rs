//! Quantized weights kept in their GGUF block form on the GPU.

use crate::context::GpuContext;
use crate::error::{invalid, EngineError, Result};

/// The block formats the kernels read directly are exactly those of `meddr-quants` (one table for the whole
/// project; sizes and ids come from `meddr_gguf::GgmlType`).
pub use meddr_quants::QuantType;

/// Shape of a 2-D weight: `rows` rows of `row_len` elements (GGUF dims `[row_len, rows]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightDesc {
    pub ty: QuantType,
    pub rows: u64,
    pub row_len: u64,
}

impl WeightDesc {
    /// Rows per GPU buffer when one binding holds at most `limit` bytes: a tensor is split by whole rows.
    ///
    /// Errors: one row is larger than `limit` ([`EngineError::TooLarge`]).
    pub fn rows_per_part(&self, limit: u64) -> Result<u64> {
        let row_bytes = self.row_bytes()?;
        if row_bytes > limit {
            return Err(EngineError::TooLarge {
                op: "weight",
                field: "row_len",
                needed: row_bytes,
                limit,
            });
        }
        Ok(limit / row_bytes)
    }

    /// GPU bytes of this tensor once uploaded under a binding limit of `limit` bytes (its packed bytes
    /// plus ≤ 3 bytes of padding per part), as [`GpuWeight::upload_with`] allocates them.
    pub fn gpu_bytes(&self, limit: u64) -> Result<u64> {
        let per_part = self.rows_per_part(limit)?;
        let row_bytes = self.row_bytes()?;
        let full = self.rows / per_part;
        let rest = self.rows % per_part;
        Ok(full * part_size(per_part * row_bytes)
            + if rest > 0 {
                part_size(rest * row_bytes)
            } else {
                0
            })
    }

    /// Packed bytes per row.
    pub fn row_bytes(&self) -> Result<u64> {
        const OP: &str = "weight";
        if self.row_len == 0 || self.row_len % self.ty.ggml().block_size() != 0 {
            return Err(invalid(
                OP,
                "row_len",
                self.row_len,
                format!(
                    "must be a positive multiple of the {:?} block size {}",
                    self.ty,
                    self.ty.ggml().block_size()
                ),
            ));
        }
        // Kernels decode 4 elements per step, so float rows must hold whole groups of 4.
        if self.row_len % 4 != 0 {
            return Err(invalid(
                OP,
                "row_len",
                self.row_len,
                "must be a multiple of 4",
            ));
        }
        if self.rows == 0 {
            return Err(invalid(OP, "rows", 0u64, "must be positive"));
        }
        (self.row_len / self.ty.ggml().block_size())
            .checked_mul(self.ty.ggml().type_size())
            .ok_or_else(|| invalid(OP, "row_len", self.row_len, "overflows the byte size"))
    }

    /// Packed bytes of the whole tensor (what the GGUF file holds).
    pub fn total_bytes(&self) -> Result<u64> {
        self.row_bytes()?
            .checked_mul(self.rows)
            .ok_or_else(|| invalid("weight", "rows", self.rows, "overflows the byte size"))
    }
}

/// One storage buffer holding whole rows `first_row .. first_row + n_rows` of a weight.
#[derive(Clone, Debug)]
pub struct WeightPart {
    pub buffer: wgpu::Buffer,
    pub first_row: u64,
    pub n_rows: u64,
}

/// A weight resident on the GPU in its packed GGUF form (GPU bytes ≈ file bytes, never expanded).
///
/// Tensors larger than one storage binding (128 MiB on lavapipe) are split by whole rows into several buffers;
/// every kernel runs once per part and writes its rows at `first_row`.
#[derive(Clone, Debug)]
pub struct GpuWeight {
    pub ty: QuantType,
    pub rows: u64,
    pub row_len: u64,
    pub row_bytes: u64,
    pub parts: Vec<WeightPart>,
}

/// A part's buffer size: its packed bytes padded to 4 (`write_buffer` and storage arrays of u32).
fn part_size(bytes: u64) -> u64 {
    bytes.div_ceil(4) * 4
}

/// Host bytes staged per `write_buffer`: bounds host memory while streaming from mmap or a browser `File`.
pub const UPLOAD_CHUNK_BYTES: usize = 16 << 20;

impl GpuWeight {
    /// Uploads a whole tensor from a byte slice (e.g. a slice of an mmap).
    pub fn upload(
        ctx: &GpuContext,
        desc: WeightDesc,
        label: &str,
        bytes: &[u8],
    ) -> Result<GpuWeight> {
        let total = desc.total_bytes()?;
        if bytes.len() as u64 != total {
            return Err(invalid(
                "weight",
                "bytes",
                bytes.len() as u64,
                format!(
                    "{:?} × {} × {} needs {total} bytes",
                    desc.ty, desc.rows, desc.row_len
                ),
            ));
        }
        Self::upload_with(ctx, desc, label, None, |offset, dst: &mut [u8]| {
            let start = offset as usize;
            dst.copy_from_slice(&bytes[start..start + dst.len()]);
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// Uploads a tensor by pulling byte ranges from `read(offset, dst)` in chunks of at most
    /// [`UPLOAD_CHUNK_BYTES`], so the caller never holds the whole tensor.
    ///
    /// `max_part_bytes` lowers the per-buffer size below the device's binding limit (tests use it to exercise
    /// splitting without allocating 128 MiB).
    pub fn upload_with<E: std::fmt::Display>(
        ctx: &GpuContext,
        desc: WeightDesc,
        label: &str,
        max_part_bytes: Option<u64>,
        mut read: impl FnMut(u64, &mut [u8]) -> std::result::Result<(), E>,
    ) -> Result<GpuWeight> {
        let row_bytes = desc.row_bytes()?;
        let total = desc.total_bytes()?;
        let mut limit = ctx.max_binding_bytes();
        if let Some(m) = max_part_bytes {
            limit = limit.min(m);
        }
        let rows_per_part = desc.rows_per_part(limit)?;
        let mut parts = Vec::new();
        let mut chunk = Vec::new();
        let mut first_row = 0u64;
        let mut pending = 0u64;
        while first_row < desc.rows {
            let n_rows = rows_per_part.min(desc.rows - first_row);
            let bytes = n_rows * row_bytes;
            let size = part_size(bytes);
            let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let base = first_row * row_bytes;
            let mut done = 0u64;
            while done < bytes {
                let n = (bytes - done).min(UPLOAD_CHUNK_BYTES as u64) as usize;
                // write_buffer wants 4-byte multiples: only a part's last chunk can need zero padding.
                chunk.clear();
                chunk.resize(n.div_ceil(4) * 4, 0);
                read(base + done, &mut chunk[..n]).map_err(|e| EngineError::Read {
                    offset: base + done,
                    message: e.to_string(),
                })?;
                ctx.queue.write_buffer(&buffer, done, &chunk);
                done += n as u64;
                pending += n as u64;
                if pending >= 256 << 20 {
                    // Staging copies are released only after a submit completes; keep them bounded.
                    ctx.queue.submit([]);
                    ctx.poll_wait();
                    pending = 0;
                }
            }
            parts.push(WeightPart {
                buffer,
                first_row,
                n_rows,
            });
            first_row += n_rows;
        }
        debug_assert_eq!(
            parts.iter().map(|p| p.n_rows * row_bytes).sum::<u64>(),
            total
        );
        ctx.queue.submit([]);
        Ok(GpuWeight {
            ty: desc.ty,
            rows: desc.rows,
            row_len: desc.row_len,
            row_bytes,
            parts,
        })
    }

    /// Bytes resident on the GPU (the packed size plus ≤ 3 bytes of padding per part).
    pub fn gpu_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }
}
