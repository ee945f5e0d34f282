//! The original one-sub-block-at-a-time k-quant quantizers, kept (test builds only) as the oracle the
//! lane-parallel versions in the parent module must match byte for byte.

#![allow(clippy::needless_range_loop)]

use super::get_scale_min_k4;
use crate::{fp32, get_f16, nearest_int, put_f16, BlockResult, QK_K};

/// ggml's `GROUP_MAX_EPS`: sub-blocks below it count as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `make_qkx2_quants` for n = 32 with squared-error weighting: fits `x ≈ scale·L − the_min`
/// (L ∈ 0..=nmax, min ≤ 0) by trying `nstep+1` candidate inverse scales and a weighted least-squares
/// refit for each. Returns `(scale, the_min)`; `l` receives the levels.
#[inline(always)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32; 32],
    weights: &[f32; 32],
    l: &mut [u8; 32],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..32 {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        // `min` may have been replaced by a better fit in an earlier step; ggml uses the new value.
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..32 {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let qf = q as f32;
            sum_l += w * qf;
            sum_l2 += w * qf * qf;
            sum_xl += w * qf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..32 {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                *l = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Shared Q4_K/Q5_K front end: per-sub-block affine fits, 6-bit scale/min quantization, f16 super
/// scales, then requantization of every element against the stored scales. Writes d, dmin and the
/// 12 scale bytes into `head` (16 bytes) and returns the levels.
#[inline(always)]
fn quantize_affine_k(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    head: &mut [u8],
    levels: &mut [u8; QK_K],
) -> BlockResult {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32]
            .try_into()
            .expect("32-element sub-block");
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let ls: &mut [u8; 32] = (&mut levels[32 * j..32 * j + 32])
            .try_into()
            .expect("32 levels");
        let (scale, min) = make_qkx2_quants(nmax, xs, &weights, ls, rmin, rdelta, nstep);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }

    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut head[4..16];
    sc.fill(0);
    for j in 0..8 {
        // C assigns the int to a uint8_t (wrapping) before MIN(63, ·).
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    put_f16(&mut head[0..2], max_scale / 63.0)?;
    put_f16(&mut head[2..4], max_min / 63.0)?;

    let d_all = get_f16(head, 0);
    let dmin_all = get_f16(head, 2);
    for j in 0..8 {
        let (s, m) = get_scale_min_k4(j, &head[4..16]);
        let d = d_all * s as f32;
        if d == 0.0 {
            // ggml keeps the levels from the fit for sub-blocks whose scale rounded to zero.
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            levels[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    Ok(())
}

pub(crate) fn quantize_q4_k(x: &[f32; QK_K], y: &mut [u8; 144]) -> BlockResult {
    let mut l = [0u8; QK_K];
    quantize_affine_k(x, 15, -1.0, 0.1, 20, &mut y[0..16], &mut l)?;
    let qs = &mut y[16..144];
    for g in 0..4 {
        for i in 0..32 {
            qs[32 * g + i] = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
        }
    }
    Ok(())
}

pub(crate) fn quantize_q5_k(x: &[f32; QK_K], y: &mut [u8; 176]) -> BlockResult {
    let mut l = [0u8; QK_K];
    quantize_affine_k(x, 31, -0.5, 0.1, 15, &mut y[0..16], &mut l)?;
    let (qh, ql) = y[16..176].split_at_mut(32);
    qh.fill(0);
    let mut m1 = 1u8;
    let mut m2 = 2u8;
    for g in 0..4 {
        for j in 0..32 {
            let mut l1 = l[64 * g + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[64 * g + 32 + j];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * g + j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
    Ok(())
}

/// ggml's `make_qx_quants(16, 32, x, L, rmse_type = 1, NULL)`: symmetric fit `x ≈ scale·(L−32)` with
/// weights x², searching 18 perturbed inverse scales around −32/max.
#[inline(always)]
fn make_qx_quants_q6(x: &[f32; 16], l: &mut [i8]) -> f32 {
    const NMAX: i32 = 32;
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..16].fill(0);
        return 0.0;
    }
    let mut iscale = -(NMAX as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..16 {
        let q = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
        l[i] = (q + NMAX) as i8;
        let w = x[i] * x[i];
        let qf = q as f32;
        sumlx += w * x[i] * qf;
        suml2 += w * qf * qf;
    }
    // C's `suml2 ? a : b` treats NaN as true, as does `!= 0.0`.
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(NMAX as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for i in 0..16 {
            let q = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
            let w = x[i] * x[i];
            let qf = q as f32;
            sumlx += w * x[i] * qf;
            suml2 += w * qf * qf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..16 {
                let q = nearest_int(iscale * x[i]).clamp(-NMAX, NMAX - 1);
                l[i] = (q + NMAX) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

pub(crate) fn quantize_q6_k(x: &[f32; QK_K], y: &mut [u8; 210]) -> BlockResult {
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for ib in 0..16 {
        let xs: &[f32; 16] = x[16 * ib..16 * ib + 16]
            .try_into()
            .expect("16-element sub-block");
        let scale = make_qx_quants_q6(xs, &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return Ok(());
    }
    let iscale = -128.0f32 / max_scale;
    put_f16(&mut y[208..210], 1.0 / iscale)?;
    for ib in 0..16 {
        y[192 + ib] = (nearest_int(iscale * scales[ib]).min(127) as i8) as u8;
    }
    let d_all = fp32(u16::from_le_bytes([y[208], y[209]]));
    for j in 0..16 {
        let d = d_all * (y[192 + j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let (ql, rest) = y.split_at_mut(128);
    let qh = &mut rest[..64];
    for h in 0..2 {
        let lb = &l[128 * h..128 * h + 128];
        for i in 0..32 {
            let q1 = lb[i] as u8;
            let q2 = lb[i + 32] as u8;
            let q3 = lb[i + 64] as u8;
            let q4 = lb[i + 96] as u8;
            ql[64 * h + i] = (q1 & 0xf) | ((q3 & 0xf) << 4);
            ql[64 * h + i + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
            qh[32 * h + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
        }
    }
    Ok(())
}
