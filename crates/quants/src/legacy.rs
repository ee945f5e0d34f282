//! 32-element block formats: Q8_0, Q4_0, Q4_1, Q5_0 (ggml's `quantize_row_q*_ref`).
//!
use crate::{get_f16, put_f16, BlockResult};

/// C's `(int8_t)f` as compiled for x86-64 (`cvttss2si`, keep the low byte): truncates in range, and
/// NaN/out-of-range give 0. Reached only when a block is so small (amax below ~1e-37) that `1/d`
/// overflows; the stored f16 scale is then 0, so only the (meaningless) level bytes depend on it.
#[inline(always)]
fn c_f32_to_i8(v: f32) -> i8 {
    let i = if (-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        v as i32
    } else {
        i32::MIN
    };
    i as i8
}

/// The first element of largest magnitude (ggml keeps the first on ties).
#[inline(always)]
fn signed_absmax(x: &[f32; 32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

pub(crate) fn quantize_q8_0(x: &[f32; 32], y: &mut [u8; 34]) -> BlockResult {
    let mut amax = 0.0f32;
    for &v in x {
        amax = if amax > v.abs() { amax } else { v.abs() };
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d)?;
    for (q, &v) in y[2..].iter_mut().zip(x) {
        // roundf: half away from zero, like f32::round.
        *q = c_f32_to_i8((v * id).round()) as u8;
    }
    Ok(())
}

pub(crate) fn dequantize_q8_0(x: &[u8; 34], y: &mut [f32; 32]) {
    let d = get_f16(x, 0);
    for (o, &q) in y.iter_mut().zip(&x[2..]) {
        *o = (q as i8) as f32 * d;
    }
}

pub(crate) fn quantize_q4_0(x: &[f32; 32], y: &mut [u8; 18]) -> BlockResult {
    let max = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d)?;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let q0 = c_f32_to_i8(x0 + 8.5).min(15) as u8;
        let q1 = c_f32_to_i8(x1 + 8.5).min(15) as u8;
        y[2 + j] = q0 | (q1 << 4);
    }
    Ok(())
}

pub(crate) fn dequantize_q4_0(x: &[u8; 18], y: &mut [f32; 32]) {
    let d = get_f16(x, 0);
    for j in 0..16 {
        let b = x[2 + j];
        y[j] = ((b & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((b >> 4) as i32 - 8) as f32 * d;
    }
}

pub(crate) fn quantize_q4_1(x: &[f32; 32], y: &mut [u8; 20]) -> BlockResult {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d)?;
    put_f16(&mut y[2..4], min)?;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[j + 16] - min) * id;
        let q0 = c_f32_to_i8(x0 + 0.5).min(15) as u8;
        let q1 = c_f32_to_i8(x1 + 0.5).min(15) as u8;
        y[4 + j] = q0 | (q1 << 4);
    }
    Ok(())
}

pub(crate) fn dequantize_q4_1(x: &[u8; 20], y: &mut [f32; 32]) {
    let d = get_f16(x, 0);
    let m = get_f16(x, 2);
    for j in 0..16 {
        let b = x[4 + j];
        y[j] = (b & 0x0f) as f32 * d + m;
        y[j + 16] = (b >> 4) as f32 * d + m;
    }
}

pub(crate) fn quantize_q5_0(x: &[f32; 32], y: &mut [u8; 22]) -> BlockResult {
    let max = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    put_f16(&mut y[0..2], d)?;
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = x[j] * id;
        let x1 = x[j + 16] * id;
        let q0 = c_f32_to_i8(x0 + 16.5).min(31) as u8;
        let q1 = c_f32_to_i8(x1 + 16.5).min(31) as u8;
        y[6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
    Ok(())
}

pub(crate) fn dequantize_q5_0(x: &[u8; 22], y: &mut [f32; 32]) {
    let d = get_f16(x, 0);
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        let b = x[6 + j] as u32;
        y[j] = (((b & 0x0f) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((b >> 4) | h1) as i32 - 16) as f32 * d;
    }
}
