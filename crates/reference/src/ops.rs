//! The operations of MedDr, one function each, on plain row-major slices.
//!
//! These are the ground truth for GPU kernel tests, so the signatures stay simple: slices in, `Vec` out, shapes
//! passed explicitly. A slice whose length disagrees with the shape arguments is a programming error and
//! panics with a message naming the argument; [`crate::ReferenceModel`] validates untrusted input before it
//! reaches these functions.
//!
//! Element-wise results are rounded to f32 after each step (like an f32 PyTorch model); dot products and norm
//! statistics are accumulated in f64 in natural order, which makes every output independent of summation order.

/// Panics with a message naming `what` when a slice does not hold `expected` values.
fn check_len(what: &str, got: usize, expected: usize) {
    assert_eq!(
        got, expected,
        "`{what}` holds {got} values, the shape arguments need {expected}"
    );
}

/// Dot product of two equally long f32 slices, accumulated in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// `y[r, o] = sum_i w[o*in_dim + i] * x[r*in_dim + i] (+ bias[o])`.
///
/// `w` is a ggml `[in, out]` weight: `out` rows of `in_dim` contiguous values (PyTorch's `[out, in]`). The bias is
/// added in f32 after rounding the dot product, as `torch.nn.Linear` does.
pub fn matmul_wt(
    x: &[f32],
    rows: usize,
    in_dim: usize,
    w: &[f32],
    out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    check_len("x", x.len(), rows * in_dim);
    check_len("w", w.len(), out * in_dim);
    if let Some(b) = bias {
        check_len("bias", b.len(), out);
    }
    let mut y = Vec::with_capacity(rows * out);
    for r in 0..rows {
        let xr = &x[r * in_dim..(r + 1) * in_dim];
        for o in 0..out {
            let acc = dot(xr, &w[o * in_dim..(o + 1) * in_dim]) as f32;
            y.push(match bias {
                Some(b) => acc + b[o],
                None => acc,
            });
        }
    }
    y
}

/// RMSNorm per row: `(x * rsqrt(mean(x²) + eps)) * w` (LLaMA and InternViT).
pub fn rms_norm(x: &[f32], rows: usize, width: usize, w: &[f32], eps: f32) -> Vec<f32> {
    check_len("x", x.len(), rows * width);
    check_len("w", w.len(), width);
    let mut y = Vec::with_capacity(x.len());
    for xr in x.chunks_exact(width.max(1)) {
        let ms = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / width as f64;
        let r = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
        y.extend(xr.iter().zip(w).map(|(&v, &g)| (v * r) * g));
    }
    y
}

/// LayerNorm per row with biased variance: `(x − mean) · rsqrt(var + eps) · w + b` (the projector's `mlp1.0`).
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    width: usize,
    w: &[f32],
    b: &[f32],
    eps: f32,
) -> Vec<f32> {
    check_len("x", x.len(), rows * width);
    check_len("w", w.len(), width);
    check_len("b", b.len(), width);
    let mut y = Vec::with_capacity(x.len());
    for xr in x.chunks_exact(width.max(1)) {
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / width as f64;
        let var = xr
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / width as f64;
        let rstd = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
        let mean = mean as f32;
        y.extend(
            xr.iter()
                .zip(w)
                .zip(b)
                .map(|((&v, &g), &bb)| (v - mean) * rstd * g + bb),
        );
    }
    y
}

/// The error function, in f64.
///
/// Uses the everywhere-convergent series `erf(x) = 2/√π · e^(−x²) · Σ (2x²)ⁿ x / (1·3·…·(2n+1))`, whose terms are
/// all of one sign (no cancellation), so the relative error stays below ~1e-14 for |x| < 6; beyond that
/// |erf(x)| rounds to 1 in f64 (erfc(6) ≈ 2e-17). Absolute error < 1e-14 everywhere — far below f32 resolution.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return x.signum();
    }
    let two_a2 = 2.0 * a * a;
    let mut term = a;
    let mut sum = a;
    let mut n = 0.0_f64;
    // Terms grow until n ≈ x² (≤ 36) and then shrink geometrically; 400 iterations is a safe cap.
    for _ in 0..400 {
        n += 1.0;
        term *= two_a2 / (2.0 * n + 1.0);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    let v = sum * (-a * a).exp() * std::f64::consts::FRAC_2_SQRT_PI;
    v.min(1.0).copysign(x)
}

/// GELU with the exact erf: `0.5 · x · (1 + erf(x/√2))`, evaluated in f64 and rounded once to f32.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            let v = f64::from(v);
            (0.5 * v * (1.0 + erf(v * std::f64::consts::FRAC_1_SQRT_2))) as f32
        })
        .collect()
}

/// SiLU `x / (1 + e^(−x))` in f32 (LLaMA's gate activation).
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v / (1.0 + (-v).exp())).collect()
}

/// Numerically stable softmax of one row, in place.
///
/// Subtracts the maximum before exponentiating so large logits cannot overflow; the normaliser is summed in f64.
/// A row without any finite maximum (empty, or all −∞) becomes all zeros instead of NaN.
pub fn softmax_inplace(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0_f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `log_softmax` of a logit row (f64 normaliser, f32 result), used for the fixtures' log-probabilities.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return vec![f32::NEG_INFINITY; logits.len()];
    }
    let m = f64::from(max);
    let lse = m + logits
        .iter()
        .map(|&v| (f64::from(v) - m).exp())
        .sum::<f64>()
        .ln();
    logits
        .iter()
        .map(|&v| (f64::from(v) - lse) as f32)
        .collect()
}

/// Index of the largest value; ties go to the lowest index (like `torch.argmax`). `None` for an empty slice.
pub fn argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            Some((_, b)) if v.total_cmp(&b).is_le() => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// The `k` largest `(index, value)` pairs, largest first; ties ordered by index.
pub fn top_k(values: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, values[i])).collect()
}

/// RoPE on adjacent pairs (llama.cpp "normal" mode), returning the rotated copy.
///
/// `x` is `[n_tokens, n_heads * head_dim]`; within each head, pair `(x[2i], x[2i+1])` is rotated by
/// `pos · theta^(−2i/head_dim)`. On q/k rows permuted like llama.cpp's converter this equals HF's rotate-half on
/// the original rows. The angle is formed in f32 (`pos · inv_freq`) exactly as HF and llama.cpp do, so large
/// positions rotate by the same rounded angle; cos/sin of that angle are then correctly rounded.
pub fn rope_adjacent_pairs(
    x: &[f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    positions: &[usize],
    theta: f32,
) -> Vec<f32> {
    check_len("x", x.len(), n_tokens * n_heads * head_dim);
    check_len("positions", positions.len(), n_tokens);
    assert!(
        head_dim % 2 == 0,
        "`head_dim` = {head_dim} must be even for RoPE"
    );
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / (f64::from(theta).powf((2 * i) as f64 / head_dim as f64) as f32))
        .collect();
    let mut y = x.to_vec();
    for (t, &pos) in positions.iter().enumerate() {
        let cs: Vec<(f32, f32)> = inv_freq
            .iter()
            .map(|&f| {
                let angle = f64::from(pos as f32 * f);
                (angle.cos() as f32, angle.sin() as f32)
            })
            .collect();
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for (i, &(c, s)) in cs.iter().enumerate() {
                let x0 = x[base + 2 * i];
                let x1 = x[base + 2 * i + 1];
                y[base + 2 * i] = x0 * c - x1 * s;
                y[base + 2 * i + 1] = x0 * s + x1 * c;
            }
        }
    }
    y
}

/// Scaled dot-product attention with grouped KV heads.
///
/// `q` is `[n_q_tokens, n_heads * head_dim]`, `k` and `v` are `[n_kv_tokens, n_kv_heads * head_dim]`; the result
/// has q's shape. KV head `j` serves query heads `j*ratio .. (j+1)*ratio` with `ratio = n_heads / n_kv_heads`.
/// Scores are `q·k / √head_dim`. `causal_offset: None` is bidirectional (the ViT); `Some(off)` means query token
/// `t` sits at absolute position `off + t` and sees KV positions `0 ..= off + t` (the decoder with a KV cache
/// that starts at position 0).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n_q_tokens: usize,
    n_kv_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    causal_offset: Option<usize>,
) -> Vec<f32> {
    check_len("q", q.len(), n_q_tokens * n_heads * head_dim);
    check_len("k", k.len(), n_kv_tokens * n_kv_heads * head_dim);
    check_len("v", v.len(), n_kv_tokens * n_kv_heads * head_dim);
    assert!(
        n_kv_heads > 0 && n_heads % n_kv_heads == 0,
        "`n_heads` = {n_heads} must be a multiple of `n_kv_heads` = {n_kv_heads}"
    );
    let ratio = n_heads / n_kv_heads;
    let q_width = n_heads * head_dim;
    let kv_width = n_kv_heads * head_dim;
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let mut out = vec![0.0_f32; q.len()];
    let mut scores = Vec::with_capacity(n_kv_tokens);
    let mut acc = vec![0.0_f64; head_dim];
    for t in 0..n_q_tokens {
        let visible = match causal_offset {
            None => n_kv_tokens,
            Some(off) => (off + t + 1).min(n_kv_tokens),
        };
        for h in 0..n_heads {
            let kvh = h / ratio;
            let qh = &q[t * q_width + h * head_dim..][..head_dim];
            scores.clear();
            scores.extend((0..visible).map(|j| {
                let kj = &k[j * kv_width + kvh * head_dim..][..head_dim];
                dot(qh, kj) as f32 * scale
            }));
            softmax_inplace(&mut scores);
            acc.iter_mut().for_each(|a| *a = 0.0);
            for (j, &p) in scores.iter().enumerate() {
                let vj = &v[j * kv_width + kvh * head_dim..][..head_dim];
                for (a, &vv) in acc.iter_mut().zip(vj) {
                    *a += f64::from(p) * f64::from(vv);
                }
            }
            let o = &mut out[t * q_width + h * head_dim..][..head_dim];
            for (dst, &a) in o.iter_mut().zip(&acc) {
                *dst = a as f32;
            }
        }
    }
    out
}

/// Upstream `pixel_shuffle(0.5)`, version 1 (no final permute), on a `grid × grid` patch grid without CLS.
///
/// `features` is `[grid * grid, c]` (row-major patches). The result is `[(grid/2)², 4c]` in upstream's transposed
/// order: token `t = c2 · grid/2 + r2` is `[g[2r2, 2c2], g[2r2, 2c2+1], g[2r2+1, 2c2], g[2r2+1, 2c2+1]]`.
pub fn pixel_shuffle_v1(features: &[f32], grid: usize, c: usize) -> Vec<f32> {
    check_len("features", features.len(), grid * grid * c);
    assert!(
        grid % 2 == 0,
        "`grid` = {grid} must be even for a 0.5 pixel shuffle"
    );
    let half = grid / 2;
    let mut out = Vec::with_capacity(features.len());
    for c2 in 0..half {
        for r2 in 0..half {
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let patch = (2 * r2 + dr) * grid + (2 * c2 + dc);
                out.extend_from_slice(&features[patch * c..(patch + 1) * c]);
            }
        }
    }
    out
}

/// Patch embedding = Conv2d(3 → c_out, kernel = stride = `patch_size`) as a matmul over flattened patches.
///
/// `pixel_values` is CHW `[3, image_size, image_size]`; `w` is the ggml `[3·p·p, c_out]` weight whose rows are the
/// conv kernels flattened in (channel, y, x) order. Output `[(image_size/p)², c_out]`, patches row-major.
pub fn patch_embed(
    pixel_values: &[f32],
    image_size: usize,
    patch_size: usize,
    w: &[f32],
    c_out: usize,
    bias: &[f32],
) -> Vec<f32> {
    check_len(
        "pixel_values",
        pixel_values.len(),
        3 * image_size * image_size,
    );
    assert!(
        patch_size > 0 && image_size % patch_size == 0,
        "`image_size` = {image_size} must be a multiple of `patch_size` = {patch_size}"
    );
    let g = image_size / patch_size;
    let k = 3 * patch_size * patch_size;
    let mut patches = Vec::with_capacity(g * g * k);
    for py in 0..g {
        for px in 0..g {
            for ch in 0..3 {
                for y in 0..patch_size {
                    let row =
                        (ch * image_size + py * patch_size + y) * image_size + px * patch_size;
                    patches.extend_from_slice(&pixel_values[row..row + patch_size]);
                }
            }
        }
    }
    matmul_wt(&patches, g * g, k, w, c_out, Some(bias))
}
