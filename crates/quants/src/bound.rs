//! A-priori round-trip error bounds, for conformance checks of quantized files.

use crate::{QuantType, QK_K};

/// Worst-case absolute error of storing `d` as f16 (round to nearest even: half an ulp, i.e. a relative
/// 2⁻¹¹ for normals, and at most 2⁻²⁵ absolute in the subnormal range or when flushing to zero).
fn f16_err(d: f32) -> f32 {
    d.abs() * (1.0 / 2048.0) + 2f32.powi(-25)
}

/// Slack for the f32 rounding in `x·(1/d)` and friends: a few ulps of the largest magnitude involved.
fn f32_slop(a: f32) -> f32 {
    a * 2f32.powi(-20)
}

fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Largest `max(x,0) − min(x,0)` over the `sub`-element sub-blocks of `x`: the span an affine
/// k-quant grid with a non-positive offset has to cover.
fn max_subblock_span(x: &[f32], sub: usize) -> f32 {
    x.chunks(sub)
        .map(|c| {
            let hi = c.iter().fold(0.0f32, |m, &v| m.max(v));
            let lo = c.iter().fold(0.0f32, |m, &v| m.min(v));
            hi - lo
        })
        .fold(0.0, f32::max)
}

/// Upper bound on `max |x_i − dequantize(quantize(x))_i|` over one block of `ty`, computed from the
/// input alone. `block` must hold exactly `ty.block_size()` finite values (anything else yields
/// `f32::INFINITY`, i.e. "no bound").
///
/// Derivations (step `d`, `h(d)` = f16 storage error of the scale, see `f16_err`; every bound also
/// gets a few f32 ulps of slack):
/// * F32: exact. F16: half an ulp, `amax·2⁻¹¹ + 2⁻²⁵`. BF16: `amax·2⁻⁸ + 2⁻¹³⁴`.
/// * Q8_0: `d = amax/127`, rounding costs `d/2`, the stored scale is off by `h(d)` per level, up to
///   127 levels: `d/2 + 127·h(d)`.
/// * Q4_0 / Q5_0: `|d| = amax/8` (`/16`) but the grid is `−8..=7` (`−16..=15`) with the extreme
///   mapped to −8, so a value of the opposite sign and full magnitude is clamped one whole step:
///   `|d| + 8·h(d)` (`16·h(d)`).
/// * Q4_1: `d = (max−min)/15`: `d/2 + 15·h(d) + h(min)`.
/// * Q4_K / Q5_K (`n` = 15 / 31 levels per 32-element sub-block, 6-bit sub-scales and sub-mins):
///   with `R` the widest sub-block span (`max(x,0) − min(x,0)`), the scale search picks steps no
///   coarser than `R/(n−1)`; final requantization costs half a step plus up to one step of clamping
///   at the grid ends from the least-squares fit; quantizing each sub-scale to 6 bits moves the top of
///   its grid by at most `n·max_scale/126 ≈ R/126`, each sub-min by `R/126`. Total
///   `R·(1.5/(n−1) + 2/126)` plus f16 terms for `d`, `dmin` (each multiplied by ≤ 63·(n+1)).
/// * Q6_K (16-element sub-blocks, levels −32..=31, 8-bit signed sub-scales): with `A` the block's
///   amax, steps are at most `A/(32−0.9)` (the search shrinks −32/max by up to 0.9 levels); half a
///   step plus one clamped step, plus the 8-bit sub-scale rounding (`max_scale/256` per level, 32
///   levels ≈ `A/256`): `A·(1.5/31.1 + 1/256)` plus f16 terms.
///
/// These are verified on large random and adversarial inputs by the crate's tests.
pub fn max_abs_error_bound(ty: QuantType, block: &[f32]) -> f32 {
    if block.len() != ty.block_size() || block.iter().any(|v| !v.is_finite()) {
        return f32::INFINITY;
    }
    let a = amax(block);
    match ty {
        QuantType::F32 => 0.0,
        QuantType::F16 => a * (1.0 / 2048.0) + 2f32.powi(-25),
        QuantType::BF16 => a * (1.0 / 256.0) + 2f32.powi(-134),
        QuantType::Q8_0 => {
            let d = a / 127.0;
            d / 2.0 + 127.0 * f16_err(d) + f32_slop(a)
        }
        QuantType::Q4_0 => {
            let d = a / 8.0;
            d + 8.0 * f16_err(d) + f32_slop(a)
        }
        QuantType::Q5_0 => {
            let d = a / 16.0;
            d + 16.0 * f16_err(d) + f32_slop(a)
        }
        QuantType::Q4_1 => {
            let max = block.iter().fold(f32::MIN, |m, &v| m.max(v));
            let min = block.iter().fold(f32::MAX, |m, &v| m.min(v));
            let d = (max - min) / 15.0;
            d / 2.0 + 15.0 * f16_err(d) + f16_err(min) + f32_slop(a)
        }
        QuantType::Q4_K | QuantType::Q5_K => {
            debug_assert_eq!(block.len(), QK_K);
            let n: f32 = if ty == QuantType::Q4_K { 15.0 } else { 31.0 };
            let r = max_subblock_span(block, 32);
            let scale_terms = 2.0 * 63.0 * (n + 1.0) * f16_err(r / n);
            r * (1.5 / (n - 1.0) + 2.0 / 126.0) + scale_terms + f32_slop(a)
        }
        QuantType::Q6_K => {
            let scale_terms = 128.0 * 32.0 * f16_err(a / 32.0 / 128.0);
            a * (1.5 / 31.1 + 1.0 / 256.0) + scale_terms + f32_slop(a)
        }
    }
}
