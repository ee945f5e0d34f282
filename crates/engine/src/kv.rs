//! The decoder's KV cache and the RoPE cos/sin table.

use crate::context::GpuContext;
use crate::error::{invalid, Result};
use crate::tensor::{DType, GpuBuffer, Rows};

/// Per-layer K and V buffers of `capacity` positions × `width` (= n_kv_heads · head_dim), f16 when the device
/// has shader-f16 (half the memory: 245,760 bytes per token for MedDr's LLM) and f32 otherwise.
pub struct KvCache {
    pub k: Vec<GpuBuffer>,
    pub v: Vec<GpuBuffer>,
    pub capacity: u32,
    pub width: u32,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, layers: u32, capacity: u32, width: u32) -> Result<KvCache> {
        let len = u64::from(capacity) * u64::from(width);
        if len == 0 {
            return Err(invalid(
                "kv_cache",
                "capacity",
                capacity,
                "capacity and width must be positive",
            ));
        }
        let dtype = ctx.kv_dtype();
        let mut k = Vec::with_capacity(layers as usize);
        let mut v = Vec::with_capacity(layers as usize);
        for _ in 0..layers {
            k.push(ctx.zeros(dtype, len, "kv.k")?);
            v.push(ctx.zeros(dtype, len, "kv.v")?);
        }
        Ok(KvCache {
            k,
            v,
            capacity,
            width,
        })
    }

    /// The view attention reads: the first `n` cached positions.
    pub fn view(&self, n: u32) -> Rows {
        Rows::dense(n, self.width)
    }

    pub fn dtype(&self) -> DType {
        self.k.first().map_or(DType::F32, |b| b.dtype)
    }
}

/// cos/sin of `pos · θ^(−2i/head_dim)` for every position below `max_pos`, uploaded once.
///
/// Computed on the CPU because GPU sin/cos are only loosely specified; the angle is formed in f32 (as HF and
/// llama.cpp do) and its cos/sin are then correctly rounded via f64, matching the reference bit for bit.
pub struct RopeTable {
    pub buffer: GpuBuffer,
    pub max_pos: u32,
    pub head_dim: u32,
}

impl RopeTable {
    pub fn new(ctx: &GpuContext, max_pos: u32, head_dim: u32, theta: f32) -> Result<RopeTable> {
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(invalid(
                "rope_table",
                "head_dim",
                head_dim,
                "must be even and positive",
            ));
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(invalid(
                "rope_table",
                "theta",
                theta.to_bits(),
                format!("{theta} must be finite and positive"),
            ));
        }
        let half = (head_dim / 2) as usize;
        let len = (max_pos as usize)
            .checked_mul(half * 2)
            .ok_or_else(|| invalid("rope_table", "max_pos", max_pos, "overflows"))?;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / (f64::from(theta).powf((2 * i) as f64 / f64::from(head_dim)) as f32))
            .collect();
        let mut data = Vec::with_capacity(len);
        for pos in 0..max_pos {
            for &fr in &inv_freq {
                let angle = f64::from(pos as f32 * fr);
                data.push(angle.cos() as f32);
                data.push(angle.sin() as f32);
            }
        }
        Ok(RopeTable {
            buffer: ctx.upload_f32(&data, "rope_table")?,
            max_pos,
            head_dim,
        })
    }
}
