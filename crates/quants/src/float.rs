//! Element-wise formats: F32, F16, BF16.

use crate::{find_non_finite, fp16, fp32, QuantError, QuantType};

pub(crate) fn quantize_f32(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if let Some((index, value)) = find_non_finite(src) {
        return Err(QuantError::NonFinite { index, value });
    }
    for (x, y) in src.iter().zip(dst.chunks_exact_mut(4)) {
        y.copy_from_slice(&x.to_le_bytes());
    }
    Ok(())
}

pub(crate) fn quantize_f16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if let Some((index, value)) = find_non_finite(src) {
        return Err(QuantError::NonFinite { index, value });
    }
    for (i, (x, y)) in src.iter().zip(dst.chunks_exact_mut(2)).enumerate() {
        let h = fp16(*x);
        if h & 0x7c00 == 0x7c00 {
            return Err(QuantError::OutOfRange {
                ty: QuantType::F16,
                index: i,
                value: *x,
            });
        }
        y.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

/// ggml's `ggml_compute_fp32_to_bf16` for non-NaN input: round to nearest even on the bit pattern
/// (subnormals are rounded, not flushed).
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub(crate) fn quantize_bf16(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    if let Some((index, value)) = find_non_finite(src) {
        return Err(QuantError::NonFinite { index, value });
    }
    for (i, (x, y)) in src.iter().zip(dst.chunks_exact_mut(2)).enumerate() {
        let h = bf16_bits(*x);
        if h & 0x7f80 == 0x7f80 {
            return Err(QuantError::OutOfRange {
                ty: QuantType::BF16,
                index: i,
                value: *x,
            });
        }
        y.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

pub(crate) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
    }
}

pub(crate) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = fp32(u16::from_le_bytes([x[0], x[1]]));
    }
}

pub(crate) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (x, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f32::from_bits((u16::from_le_bytes([x[0], x[1]]) as u32) << 16);
    }
}
