//! 256-element super-block formats Q4_K, Q5_K, Q6_K (ggml's `quantize_row_q{4,5,6}_K_ref`).
//!
//! Every f32 expression keeps ggml's evaluation order (C's left-to-right `a*b*c`, int→float promotion
//! points) because the scale search compares rounded sums and a different order changes chosen scales.
//!
//! Speed comes from running the independent sub-block searches of one super-block in lockstep, one
//! SIMD lane per sub-block ([`lanes`]): each lane still adds its terms one by one in ggml's order, so
//! the bytes are those of the scalar code (kept as the test oracle in `reference`). On x86-64 the
//! same code is also compiled with AVX2 and picked at run time; no FMA is ever enabled.

// Index loops mirror ggml's C so the arithmetic order is easy to audit.
#![allow(clippy::needless_range_loop)]

use crate::{fp32, get_f16, nearest_int, put_f16, BlockResult, QK_K};

mod lanes;
#[cfg(test)]
mod reference;

use lanes::F;

/// ggml's `GROUP_MAX_EPS`: sub-blocks below it count as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Sub-blocks searched side by side: Q4_K/Q5_K have 8 independent 32-element sub-blocks per
/// super-block.
const LANES_AFFINE: usize = 8;
/// Q6_K has 16 independent 16-element sub-blocks per super-block.
const LANES_Q6: usize = 16;

type V8 = F<LANES_AFFINE>;
type V16 = F<LANES_Q6>;

/// ggml's `make_qkx2_quants` for n = 32 with squared-error weighting, run on all 8 sub-blocks of a
/// super-block at once. Fits `x ≈ scale·L − the_min` (L ∈ 0..=nmax, min ≤ 0) by trying `nstep+1`
/// candidate inverse scales and a weighted least-squares refit for each.
///
/// Data is `[element][sub-block]`; every lane performs exactly the f32 operations, in exactly the
/// order, of the one-sub-block C loop (the sub-blocks are independent), so results are bit-identical
/// while the lane operations become SIMD. ggml's branches become per-lane selects. Returns
/// `(scale, the_min)` per lane; `l` receives the levels.
#[inline(always)]
fn make_qkx2_quants_x8(fit: Qkx2, x: &[V8; 32], weights: &[V8; 32], l: &mut [V8; 32]) -> (V8, V8) {
    let Qkx2 {
        nmax,
        rmin,
        rdelta,
        nstep,
    } = fit;
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        let v = x[i];
        min = v.lt(min).select(v, min);
        max = v.gt(max).select(v, max);
        let w = weights[i];
        sum_w = sum_w + w;
        sum_x = sum_x + w * v;
    }
    let zero = V8::splat(0.0);
    min = min.gt(zero).select(zero, min);
    // ggml returns early (levels 0, scale 0, the_min = -min) for lanes with max == min; those lanes
    // run the search on meaningless values below and are overwritten at the end.
    let flat = max.eq(min);
    let flat_min = min;
    let nmaxf = nmax as f32;
    let mut iscale = V8::splat(nmaxf) / (max - min);
    let mut scale = V8::splat(1.0) / iscale;
    let mut best_error = zero;
    for i in 0..32 {
        let q = (iscale * (x[i] - min)).round_clamp(0, nmax);
        l[i] = q;
        let diff = scale * q + min - x[i];
        best_error = best_error + weights[i] * (diff * diff);
    }
    let mut laux = [zero; 32];
    for is in 0..=nstep {
        // `min` may have been replaced by a better fit in an earlier step; ggml uses the new value.
        iscale = V8::splat(rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let mut sum_l = zero;
        let mut sum_l2 = zero;
        let mut sum_xl = zero;
        for i in 0..32 {
            let q = (iscale * (x[i] - min)).round_clamp(0, nmax);
            laux[i] = q;
            let wq = weights[i] * q;
            sum_l = sum_l + wq;
            sum_l2 = sum_l2 + wq * q;
            sum_xl = sum_xl + wq * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        let fit_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
        let fit_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
        let clip = fit_min.gt(zero);
        let this_scale = clip.select(sum_xl / sum_l2, fit_scale);
        let this_min = clip.select(zero, fit_min);
        let mut cur_error = zero;
        for i in 0..32 {
            let diff = this_scale * laux[i] + this_min - x[i];
            cur_error = cur_error + weights[i] * (diff * diff);
        }
        let better = det.gt(zero) & cur_error.lt(best_error);
        if better.any() {
            best_error = better.select(cur_error, best_error);
            scale = better.select(this_scale, scale);
            min = better.select(this_min, min);
            for i in 0..32 {
                l[i] = better.select(laux[i], l[i]);
            }
        }
    }
    let scale = flat.select(zero, scale);
    let min = flat.select(flat_min, min);
    for i in 0..32 {
        l[i] = flat.select(zero, l[i]);
    }
    (scale, zero - min)
}

/// `make_qkx2_quants` parameters of one format.
#[derive(Clone, Copy)]
struct Qkx2 {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
}

const Q4_K_FIT: Qkx2 = Qkx2 {
    nmax: 15,
    rmin: -1.0,
    rdelta: 0.1,
    nstep: 20,
};

const Q5_K_FIT: Qkx2 = Qkx2 {
    nmax: 31,
    rmin: -0.5,
    rdelta: 0.1,
    nstep: 15,
};

/// Picks the widest SIMD the CPU has for the lane loops. Both paths run the same IEEE f32
/// operations (no FMA is enabled), so their bytes are identical; AVX2 just packs 8 lanes per register
/// and clamps integers in one instruction.
macro_rules! dispatch {
    ($name:ident, $portable:ident, $bytes:literal) => {
        pub(crate) fn $name(x: &[f32; QK_K], y: &mut [u8; $bytes]) -> BlockResult {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 support was just checked.
                return unsafe { avx2::$name(x, y) };
            }
            $portable(x, y)
        }
    };
}
dispatch!(quantize_q4_k, quantize_q4_k_portable, 144);
dispatch!(quantize_q5_k, quantize_q5_k_portable, 176);
dispatch!(quantize_q6_k, quantize_q6_k_portable, 210);

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Qkx2, V8};
    use crate::{BlockResult, QK_K};

    /// Kept out of line so that LLVM vectorises the search on its own: inlined into the transposing
    /// caller it splits the 8 lanes into two 4-wide halves.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline(never)]
    unsafe fn make_qkx2_quants_x8(
        fit: Qkx2,
        x: &[V8; 32],
        weights: &[V8; 32],
        l: &mut [V8; 32],
    ) -> (V8, V8) {
        super::make_qkx2_quants_x8(fit, x, weights, l)
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_q4_k(x: &[f32; QK_K], y: &mut [u8; 144]) -> BlockResult {
        // SAFETY: we are running on an AVX2 CPU (this function's own precondition).
        super::quantize_q4_k_with(x, y, |f, x, w, l| unsafe {
            make_qkx2_quants_x8(f, x, w, l)
        })
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_q5_k(x: &[f32; QK_K], y: &mut [u8; 176]) -> BlockResult {
        // SAFETY: we are running on an AVX2 CPU (this function's own precondition).
        super::quantize_q5_k_with(x, y, |f, x, w, l| unsafe {
            make_qkx2_quants_x8(f, x, w, l)
        })
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_q6_k(x: &[f32; QK_K], y: &mut [u8; 210]) -> BlockResult {
        super::quantize_q6_k_portable(x, y)
    }
}

/// 6-bit scale `j` and min `j` from the packed 12-byte field (ggml's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Shared Q4_K/Q5_K front end: per-sub-block affine fits, 6-bit scale/min quantization, f16 super
/// scales, then requantization of every element against the stored scales. Writes d, dmin and the
/// 12 scale bytes into `head` (16 bytes) and returns the levels.
#[inline(always)]
fn quantize_affine_k<S: FnOnce(Qkx2, &[V8; 32], &[V8; 32], &mut [V8; 32]) -> (V8, V8)>(
    x: &[f32; QK_K],
    fit: Qkx2,
    search: S,
    head: &mut [u8],
    levels: &mut [u8; QK_K],
) -> BlockResult {
    // Transpose to [element][sub-block] so the per-sub-block searches run in lockstep.
    let mut xt = [V8::splat(0.0); 32];
    for j in 0..LANES_AFFINE {
        for i in 0..32 {
            xt[i].0[j] = x[32 * j + i];
        }
    }
    let mut sum_x2 = V8::splat(0.0);
    for i in 0..32 {
        sum_x2 = sum_x2 + xt[i] * xt[i];
    }
    let av_x = (sum_x2 / V8::splat(32.0)).sqrt();
    let mut weights = [V8::splat(0.0); 32];
    for i in 0..32 {
        weights[i] = av_x + xt[i].abs();
    }
    let mut lt = [V8::splat(0.0); 32];
    let nmax = fit.nmax;
    let (scales, mins) = search(fit, &xt, &weights, &mut lt);
    let (scales, mins) = (scales.0, mins.0);
    for j in 0..LANES_AFFINE {
        for i in 0..32 {
            levels[32 * j + i] = lt[i].0[j] as u8;
        }
    }
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..LANES_AFFINE {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
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

#[inline(always)]
fn quantize_q4_k_portable(x: &[f32; QK_K], y: &mut [u8; 144]) -> BlockResult {
    quantize_q4_k_with(x, y, make_qkx2_quants_x8)
}

#[inline(always)]
fn quantize_q4_k_with<S: FnOnce(Qkx2, &[V8; 32], &[V8; 32], &mut [V8; 32]) -> (V8, V8)>(
    x: &[f32; QK_K],
    y: &mut [u8; 144],
    search: S,
) -> BlockResult {
    let mut l = [0u8; QK_K];
    quantize_affine_k(x, Q4_K_FIT, search, &mut y[0..16], &mut l)?;
    let qs = &mut y[16..144];
    for g in 0..4 {
        for i in 0..32 {
            qs[32 * g + i] = l[64 * g + i] | (l[64 * g + 32 + i] << 4);
        }
    }
    Ok(())
}

pub(crate) fn dequantize_q4_k(x: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = get_f16(x, 0);
    let min = get_f16(x, 2);
    let sc = &x[4..16];
    let qs = &x[16..144];
    for g in 0..4 {
        let (s1, m1) = get_scale_min_k4(2 * g, sc);
        let (s2, m2) = get_scale_min_k4(2 * g + 1, sc);
        let d1 = d * s1 as f32;
        let m1 = min * m1 as f32;
        let d2 = d * s2 as f32;
        let m2 = min * m2 as f32;
        let q = &qs[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for i in 0..32 {
            out[i] = d1 * (q[i] & 0xf) as f32 - m1;
            out[32 + i] = d2 * (q[i] >> 4) as f32 - m2;
        }
    }
}

#[inline(always)]
fn quantize_q5_k_portable(x: &[f32; QK_K], y: &mut [u8; 176]) -> BlockResult {
    quantize_q5_k_with(x, y, make_qkx2_quants_x8)
}

#[inline(always)]
fn quantize_q5_k_with<S: FnOnce(Qkx2, &[V8; 32], &[V8; 32], &mut [V8; 32]) -> (V8, V8)>(
    x: &[f32; QK_K],
    y: &mut [u8; 176],
    search: S,
) -> BlockResult {
    let mut l = [0u8; QK_K];
    quantize_affine_k(x, Q5_K_FIT, search, &mut y[0..16], &mut l)?;
    let (qh, ql) = y[16..176].split_at_mut(32);
    qh.fill(0);
    // Levels are at most 31, so bit 4 is ggml's `l > 15` test; branch-free so it vectorises.
    for g in 0..4 {
        for j in 0..32 {
            let l1 = l[64 * g + j];
            let l2 = l[64 * g + 32 + j];
            qh[j] |= ((l1 >> 4) << (2 * g)) | ((l2 >> 4) << (2 * g + 1));
            ql[32 * g + j] = (l1 & 0xf) | ((l2 & 0xf) << 4);
        }
    }
    Ok(())
}

pub(crate) fn dequantize_q5_k(x: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = get_f16(x, 0);
    let min = get_f16(x, 2);
    let sc = &x[4..16];
    let qh = &x[16..48];
    let ql = &x[48..176];
    for g in 0..4 {
        let (s1, m1) = get_scale_min_k4(2 * g, sc);
        let (s2, m2) = get_scale_min_k4(2 * g + 1, sc);
        let d1 = d * s1 as f32;
        let m1 = min * m1 as f32;
        let d2 = d * s2 as f32;
        let m2 = min * m2 as f32;
        let u1 = 1u8 << (2 * g);
        let u2 = 2u8 << (2 * g);
        let q = &ql[32 * g..32 * g + 32];
        let out = &mut y[64 * g..64 * g + 64];
        for i in 0..32 {
            let h1 = if qh[i] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[i] & u2 != 0 { 16 } else { 0 };
            out[i] = d1 * ((q[i] & 0xf) as i32 + h1) as f32 - m1;
            out[32 + i] = d2 * ((q[i] >> 4) as i32 + h2) as f32 - m2;
        }
    }
}

/// ggml's `make_qx_quants(16, 32, x, L, rmse_type = 1, NULL)` on all 16 sub-blocks of a Q6_K
/// super-block at once: symmetric fit `x ≈ scale·(L−32)` with weights x², searching 18 perturbed
/// inverse scales around −32/max. Data is `[element][sub-block]`; each lane repeats the C loop's f32
/// operations in order (see [`make_qkx2_quants_x8`]). `l` receives the signed level `L − 32`.
#[inline(always)]
fn make_qx_quants_q6_x16(x: &[V16; 16], l: &mut [V16; 16]) -> V16 {
    const NMAX: i32 = 32;
    let zero = V16::splat(0.0);
    let mut max = zero;
    let mut amax = zero;
    for i in 0..16 {
        let ax = x[i].abs();
        let larger = ax.gt(amax);
        amax = larger.select(ax, amax);
        max = larger.select(x[i], max);
    }
    // The C code's weight w = x² enters as `w*x*q` and `w*q*q`; `w*x` is its leading product.
    let mut w = [zero; 16];
    let mut wx = [zero; 16];
    for i in 0..16 {
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
    }
    let iscale = V16::splat(-(NMAX as f32)) / max;
    let mut sumlx = zero;
    let mut suml2 = zero;
    for i in 0..16 {
        let q = (iscale * x[i]).round_clamp(-NMAX, NMAX - 1);
        l[i] = q;
        sumlx = sumlx + wx[i] * q;
        suml2 = suml2 + w[i] * q * q;
    }
    // C's `suml2 ? a : b` treats NaN as true, as does `!= 0.0`.
    let mut scale = suml2.ne(zero).select(sumlx / suml2, zero);
    let mut best = scale * sumlx;
    let mut laux = [zero; 16];
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = V16::splat(-(NMAX as f32 + 0.1 * is as f32)) / max;
        let mut sumlx = zero;
        let mut suml2 = zero;
        for i in 0..16 {
            let q = (iscale * x[i]).round_clamp(-NMAX, NMAX - 1);
            laux[i] = q;
            sumlx = sumlx + wx[i] * q;
            suml2 = suml2 + w[i] * q * q;
        }
        let better = suml2.gt(zero) & (sumlx * sumlx).gt(best * suml2);
        if better.any() {
            let s = sumlx / suml2;
            scale = better.select(s, scale);
            best = better.select(s * sumlx, best);
            for i in 0..16 {
                l[i] = better.select(laux[i], l[i]);
            }
        }
    }
    // ggml returns early (levels 0, scale 0) for sub-blocks with amax < GROUP_MAX_EPS.
    let vanish = amax.lt(V16::splat(GROUP_MAX_EPS));
    for i in 0..16 {
        l[i] = vanish.select(V16::splat(-(NMAX as f32)), l[i]);
    }
    vanish.select(zero, scale)
}

#[inline(always)]
fn quantize_q6_k_portable(x: &[f32; QK_K], y: &mut [u8; 210]) -> BlockResult {
    let mut xt = [V16::splat(0.0); 16];
    for ib in 0..LANES_Q6 {
        for i in 0..16 {
            xt[i].0[ib] = x[16 * ib + i];
        }
    }
    let mut lt = [V16::splat(0.0); 16];
    let scales = make_qx_quants_q6_x16(&xt, &mut lt).0;
    let mut l = [0i8; QK_K];
    for ib in 0..LANES_Q6 {
        for i in 0..16 {
            l[16 * ib + i] = (lt[i].0[ib] as i32 + 32) as i8;
        }
    }
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for &scale in &scales {
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

pub(crate) fn dequantize_q6_k(x: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = get_f16(x, 208);
    for h in 0..2 {
        let ql = &x[64 * h..64 * h + 64];
        let qh = &x[128 + 32 * h..128 + 32 * h + 32];
        let sc = &x[192 + 8 * h..192 + 8 * h + 8];
        let out = &mut y[128 * h..128 * h + 128];
        for i in 0..32 {
            let is = i / 16;
            let q1 = ((ql[i] & 0xf) | ((qh[i] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[i + 32] & 0xf) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
            out[i] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[i + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[i + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[i + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        quantize_q4_k, quantize_q4_k_portable, quantize_q5_k, quantize_q5_k_portable,
        quantize_q6_k, quantize_q6_k_portable, reference,
    };
    use crate::{BlockResult, QK_K};

    /// SplitMix64; the test must not depend on anything but the crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * self.unit()
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn sign(&mut self) -> f64 {
            if self.next() & 1 == 0 {
                1.0
            } else {
                -1.0
            }
        }
        fn normal(&mut self) -> f64 {
            let u1 = self.unit().max(1e-300);
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
        }
    }

    const KINDS: u64 = 16;

    /// Adversarial values for one piece of a block: every branch of the scale searches (flat
    /// sub-blocks, vanishing sub-blocks, clipped mins, exact rounding ties, f16 overflow) is hit.
    fn fill(rng: &mut Rng, kind: u64, out: &mut [f32]) {
        let mag = |rng: &mut Rng, lo: f64, hi: f64| 10f64.powf(rng.range(lo, hi));
        match kind {
            0 => {
                let s = mag(rng, -6.0, 3.0);
                out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
            }
            1 => {
                let a = mag(rng, -4.0, 4.0);
                out.iter_mut().for_each(|v| *v = rng.range(-a, a) as f32);
            }
            2 => out.fill(0.0),
            3 => out.fill((rng.sign() * mag(rng, -8.0, 6.0)) as f32),
            4 => {
                let s = mag(rng, -3.0, 0.0);
                out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
                let i = rng.below(out.len() as u64) as usize;
                out[i] = (rng.sign() * s * rng.range(10.0, 1e4)) as f32;
            }
            // Tiny: subnormals, and magnitudes straddling GROUP_MAX_EPS.
            5 => {
                let s = [1e-40, 1e-30, 1e-16, 1e-15, 3e-15][rng.below(5) as usize];
                out.iter_mut().for_each(|v| *v = (rng.normal() * s) as f32);
            }
            // Huge, up to KQUANT_MAX_ABS (f16 scales overflow for most of these).
            6 => {
                let s = mag(rng, 3.0, 10.0);
                out.iter_mut()
                    .for_each(|v| *v = (rng.range(-1.0, 1.0) * s).clamp(-1e10, 1e10) as f32);
            }
            // One sign only (min clips to 0, or max is 0).
            7 => {
                let sg = rng.sign();
                let lo = rng.range(0.0, 2.0);
                out.iter_mut()
                    .for_each(|v| *v = (sg * rng.range(lo, lo + 1.0)) as f32);
            }
            // Exact rounding ties on a power-of-two grid.
            8 => {
                let s = 2f64.powi(rng.range(-12.0, 4.0) as i32);
                let n = [8.0, 16.0, 32.0, 64.0][rng.below(4) as usize];
                out.iter_mut()
                    .for_each(|v| *v = ((rng.below(2 * n as u64) as f64 - n + 0.5) * s) as f32);
            }
            // Small integers: levels representable exactly.
            9 => out
                .iter_mut()
                .for_each(|v| *v = rng.below(64) as f32 - 32.0),
            10 => {
                let s = rng.range(0.01, 1.0);
                out.iter_mut().for_each(|v| {
                    *v = if rng.below(8) == 0 {
                        (rng.normal() * s) as f32
                    } else {
                        0.0
                    }
                });
            }
            // Near-constant: determinant close to zero.
            11 => {
                let c = rng.sign() * mag(rng, -2.0, 2.0);
                let e = c * mag(rng, -8.0, -3.0);
                out.iter_mut()
                    .for_each(|v| *v = (c + e * rng.below(3) as f64) as f32);
            }
            // Two distinct values (ties for max/amax, degenerate fits).
            12 => {
                let a = (rng.normal() * mag(rng, -3.0, 1.0)) as f32;
                let b = if rng.below(2) == 0 {
                    -a
                } else {
                    (rng.normal() as f32) * a
                };
                out.iter_mut()
                    .for_each(|v| *v = if rng.below(2) == 0 { a } else { b });
            }
            // Mixed signs with exponential magnitudes.
            13 => out
                .iter_mut()
                .for_each(|v| *v = (rng.sign() * -rng.unit().max(1e-12).ln() * 0.05) as f32),
            // Random bit patterns of finite floats below 1e10 in magnitude.
            14 => out.iter_mut().for_each(|v| {
                *v = loop {
                    let f = f32::from_bits(rng.next() as u32);
                    if f.is_finite() && f.abs() <= 1e10 {
                        break f;
                    }
                }
            }),
            // Negative zeros among positives and zeros.
            _ => out.iter_mut().for_each(|v| {
                *v = match rng.below(3) {
                    0 => -0.0,
                    1 => 0.0,
                    _ => rng.range(0.0, 1.0) as f32,
                }
            }),
        }
    }

    type Quantize<const T: usize> = fn(&[f32; QK_K], &mut [u8; T]) -> BlockResult;

    /// Compares the dispatched (AVX2 where available) and portable lane versions with the scalar
    /// reference, bytes and overflow outcome alike.
    fn check<const T: usize>(
        name: &str,
        [dispatched, portable, slow]: [Quantize<T>; 3],
        seed: u64,
        n_blocks: usize,
    ) {
        let mut rng = Rng(seed);
        let mut x = [0.0f32; QK_K];
        let (mut errors, mut ok) = (0usize, 0usize);
        for b in 0..n_blocks {
            // Whole blocks of one kind, or every 16/32-element piece of its own kind so that lanes
            // of one super-block take different paths.
            match b % 3 {
                0 => {
                    let k = rng.below(KINDS);
                    fill(&mut rng, k, &mut x);
                }
                1 => {
                    for c in x.chunks_mut(16) {
                        let k = rng.below(KINDS);
                        fill(&mut rng, k, c);
                    }
                }
                _ => {
                    for c in x.chunks_mut(32) {
                        let k = rng.below(KINDS);
                        fill(&mut rng, k, c);
                    }
                }
            }
            let mut r = [0xa5u8; T];
            let rr = slow(&x, &mut r);
            for (variant, fast) in [("dispatched", dispatched), ("portable", portable)] {
                let mut a = [0xa5u8; T];
                let ra = fast(&x, &mut a);
                let same_result = match (ra, rr) {
                    (Ok(()), Ok(())) => true,
                    (Err(p), Err(q)) => p.to_bits() == q.to_bits(),
                    _ => false,
                };
                assert!(
                    same_result && a == r,
                    "{name} ({variant}) block {b} differs: {ra:?} vs reference {rr:?}\nx = {x:?}\nfast = {a:?}\nref  = {r:?}"
                );
            }
            let ra = rr;
            if ra.is_ok() {
                ok += 1;
            } else {
                errors += 1;
            }
        }
        // The generator must exercise both outcomes.
        assert!(
            ok > n_blocks / 2 && errors > 0,
            "{name}: {ok} ok, {errors} overflow"
        );
    }

    const BLOCKS: usize = 8192;

    #[test]
    fn q4_k_lanes_match_scalar_reference() {
        check(
            "q4_K",
            [
                quantize_q4_k,
                quantize_q4_k_portable,
                reference::quantize_q4_k,
            ],
            1,
            BLOCKS,
        );
    }

    #[test]
    fn q5_k_lanes_match_scalar_reference() {
        check(
            "q5_K",
            [
                quantize_q5_k,
                quantize_q5_k_portable,
                reference::quantize_q5_k,
            ],
            2,
            BLOCKS,
        );
    }

    #[test]
    fn q6_k_lanes_match_scalar_reference() {
        check(
            "q6_K",
            [
                quantize_q6_k,
                quantize_q6_k_portable,
                reference::quantize_q6_k,
            ],
            3,
            BLOCKS,
        );
    }
}
