//! Each op against an independent naive formula (f64, written from the maths, not from `src/ops.rs`), on
//! awkward shapes.

// Naive index loops are the point of the independent formulas below.
#![allow(clippy::needless_range_loop)]

mod common;

use meddr_reference::*;
use ndarray::{Array2, Array3, Array4};

/// Deterministic values in [-scale, scale) (xorshift64*), so failures are reproducible.
fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn erf_and_gelu_match_tabulated_values() {
    // Values from Python's math.erf / math.erfc (correctly rounded double precision).
    for (x, want) in [
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (1.5, 0.9661051464753108),
        (2.0, 0.9953222650189527),
        (3.0, 0.9999779095030014),
        (4.5, 0.9999999998033839),
        (-0.7, -0.6778011938374184),
        (0.0, 0.0),
    ] {
        assert!(
            (erf(x) - want).abs() < 1e-15,
            "erf({x}) = {} vs {want}",
            erf(x)
        );
    }
    // In the tail, 1 − erf is right to a few ulps of 1 (the limit of f64 near 1), which keeps GELU of negative
    // inputs accurate in absolute terms.
    for (x, erfc) in [
        (3.0, 2.2090496998585438e-05),
        (4.0, 1.541725790028002e-08),
        (5.0, 1.5374597944280351e-12),
    ] {
        let got = 1.0 - erf(x);
        assert!((got - erfc).abs() < 1e-15, "1 - erf({x}) = {got} vs {erfc}");
    }
    assert_eq!(erf(7.0), 1.0);
    assert_eq!(erf(-40.0), -1.0);
    assert!(erf(f64::NAN).is_nan());

    let xs = [1.0f32, -1.0, 2.0, -3.0, 0.25, -6.0];
    let want = [
        0.8413447460685429,
        -0.15865525393145707,
        1.9544997361036416,
        -0.00404969409489031,
        0.14967658142073093,
        -5.919525869479969e-09,
    ];
    for ((g, w), x) in gelu_erf(&xs).iter().zip(want).zip(xs) {
        let rel = ((f64::from(*g) - w) / w).abs();
        assert!(rel < 1e-6, "gelu({x}) = {g} vs {w}");
    }
}

#[test]
fn silu_is_x_sigmoid_x_and_finite_at_extremes() {
    let xs = [-100.0f32, -3.5, -0.1, 0.0, 0.7, 20.0, 100.0];
    let want: Vec<f64> = xs
        .iter()
        .map(|&x| f64::from(x) / (1.0 + (-f64::from(x)).exp()))
        .collect();
    let got = silu(&xs);
    assert!(max_diff(&got, &want) < 1e-5);
    assert!(got.iter().all(|v| v.is_finite()));
}

fn naive_linear(
    x: &[f32],
    rows: usize,
    n_in: usize,
    w: &[f32],
    n_out: usize,
    b: Option<&[f32]>,
) -> Vec<f64> {
    let mut y = vec![0.0; rows * n_out];
    for r in 0..rows {
        for o in 0..n_out {
            let mut s = b.map_or(0.0, |b| f64::from(b[o]));
            for i in 0..n_in {
                s += f64::from(x[r * n_in + i]) * f64::from(w[o * n_in + i]);
            }
            y[r * n_out + o] = s;
        }
    }
    y
}

#[test]
fn matmul_wt_matches_naive_linear_on_odd_shapes() {
    for &(rows, n_in, n_out) in &[(3, 7, 5), (1, 1, 1), (5, 33, 2), (0, 4, 3), (2, 0, 3)] {
        let x = rand_vec(rows * n_in, 1, 2.0);
        let w = rand_vec(n_out * n_in, 2, 1.0);
        let b = rand_vec(n_out, 3, 0.5);
        let got = matmul_wt(&x, rows, n_in, &w, n_out, Some(&b));
        assert_eq!(got.len(), rows * n_out);
        assert!(max_diff(&got, &naive_linear(&x, rows, n_in, &w, n_out, Some(&b))) < 1e-5);
        let got = matmul_wt(&x, rows, n_in, &w, n_out, None);
        assert!(max_diff(&got, &naive_linear(&x, rows, n_in, &w, n_out, None)) < 1e-5);
    }
}

#[test]
fn norms_match_naive_formulas() {
    let (rows, width) = (4, 13);
    let mut x = rand_vec(rows * width, 4, 3.0);
    x[width..2 * width].iter_mut().for_each(|v| *v = 0.25); // a constant row
    let w = rand_vec(width, 5, 1.5);
    let b = rand_vec(width, 6, 0.3);
    let eps = 1e-5_f32;
    let mut want_rms = Vec::new();
    let mut want_ln = Vec::new();
    for r in 0..rows {
        let row: Vec<f64> = x[r * width..(r + 1) * width]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let ms = row.iter().map(|v| v * v).sum::<f64>() / width as f64;
        let mean = row.iter().sum::<f64>() / width as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / width as f64;
        for i in 0..width {
            want_rms.push(row[i] / (ms + f64::from(eps)).sqrt() * f64::from(w[i]));
            want_ln.push(
                (row[i] - mean) / (var + f64::from(eps)).sqrt() * f64::from(w[i]) + f64::from(b[i]),
            );
        }
    }
    assert!(max_diff(&rms_norm(&x, rows, width, &w, eps), &want_rms) < 1e-5);
    let ln = layer_norm(&x, rows, width, &w, &b, eps);
    assert!(max_diff(&ln, &want_ln) < 1e-5);
    // A constant row normalises to exactly the bias.
    assert_eq!(&ln[width..2 * width], &b[..]);
}

#[test]
fn softmax_is_stable_for_large_and_infinite_values() {
    let mut x = [1000.0f32, 1001.0, 1002.0, f32::NEG_INFINITY];
    softmax_inplace(&mut x);
    let z = 1.0 + (-1.0f64).exp() + (-2.0f64).exp();
    let want = [(-2.0f64).exp() / z, (-1.0f64).exp() / z, 1.0 / z, 0.0];
    assert!(max_diff(&x, &want) < 1e-7, "{x:?}");
    let mut y = [-1e30f32, -1e30, 3e38];
    softmax_inplace(&mut y);
    assert_eq!(y, [0.0, 0.0, 1.0]);
    let mut all_masked = [f32::NEG_INFINITY; 3];
    softmax_inplace(&mut all_masked);
    assert_eq!(all_masked, [0.0; 3]);

    let lp = log_softmax(&[1000.0, 1001.0, 1002.0]);
    let want: Vec<f64> = want[..3].iter().map(|p| p.ln()).collect();
    assert!(max_diff(&lp, &want) < 1e-6, "{lp:?}");
}

#[test]
fn argmax_and_top_k_break_ties_by_lowest_index() {
    let v = [1.0f32, 5.0, -2.0, 5.0, 3.0, 3.0];
    assert_eq!(argmax(&v), Some(1));
    assert_eq!(argmax(&[]), None);
    assert_eq!(top_k(&v, 4), vec![(1, 5.0), (3, 5.0), (4, 3.0), (5, 3.0)]);
    assert_eq!(top_k(&v, 10).len(), 6);
}

/// llama.cpp's converter permutation written as numpy does it: reshape (n_head, 2, hd/2, in), swap axes 1 and 2.
fn permute_like_numpy(w: &[f32], n_head: usize, head_dim: usize, n_in: usize) -> Vec<f32> {
    let a = Array4::from_shape_vec((n_head, 2, head_dim / 2, n_in), w.to_vec()).unwrap();
    a.permuted_axes([0, 2, 1, 3])
        .as_standard_layout()
        .iter()
        .copied()
        .collect()
}

#[test]
fn test_side_permutation_matches_numpy_swapaxes() {
    let w = rand_vec(4 * 10 * 3, 7, 1.0);
    assert_eq!(
        common::permute_rows(&w, 4, 10, 3),
        permute_like_numpy(&w, 4, 10, 3)
    );
}

/// HF rotate-half RoPE on unpermuted rows, in f64 from the angle HF forms in f32 (`t.float() * inv_freq`).
fn hf_rotate_half(
    x: &[f32],
    n_tokens: usize,
    n_heads: usize,
    hd: usize,
    pos: &[usize],
    theta: f64,
) -> Vec<f64> {
    let half = hd / 2;
    let mut y = vec![0.0; x.len()];
    for t in 0..n_tokens {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * hd;
            for d in 0..half {
                let inv_freq = (1.0 / theta.powf((2 * d) as f64 / hd as f64)) as f32;
                let angle = f64::from(pos[t] as f32 * inv_freq);
                let (a, b) = (f64::from(x[base + d]), f64::from(x[base + d + half]));
                y[base + d] = a * angle.cos() - b * angle.sin();
                y[base + d + half] = b * angle.cos() + a * angle.sin();
            }
        }
    }
    y
}

#[test]
fn rope_adjacent_pairs_on_permuted_weights_equals_hf_rotate_half() {
    let (n_tokens, n_in, theta) = (5, 12, 5_000_000.0_f32);
    let pos = [0usize, 1, 7, 1000, 4095];
    let x = rand_vec(n_tokens * n_in, 8, 1.0);
    for &(n_heads, hd) in &[(3usize, 8usize), (2, 32), (1, 2)] {
        let w = rand_vec(n_heads * hd * n_in, 9, 0.5);
        let wp = permute_like_numpy(&w, n_heads, hd, n_in);
        let q_hf = matmul_wt(&x, n_tokens, n_in, &w, n_heads * hd, None);
        let q_ll = matmul_wt(&x, n_tokens, n_in, &wp, n_heads * hd, None);
        let want = hf_rotate_half(&q_hf, n_tokens, n_heads, hd, &pos, f64::from(theta));
        let got = rope_adjacent_pairs(&q_ll, n_tokens, n_heads, hd, &pos, theta);
        // Feature 2i+j of a permuted head is feature j·hd/2 + i of the HF head.
        let half = hd / 2;
        let mut want_perm = vec![0.0; want.len()];
        for t in 0..n_tokens {
            for h in 0..n_heads {
                let base = (t * n_heads + h) * hd;
                for i in 0..half {
                    for j in 0..2 {
                        want_perm[base + 2 * i + j] = want[base + j * half + i];
                    }
                }
            }
        }
        let d = max_diff(&got, &want_perm);
        assert!(d < 1e-5, "heads {n_heads} head_dim {hd}: {d}");
        // Position 0 is the identity.
        assert_eq!(&got[..n_heads * hd], &q_ll[..n_heads * hd]);
    }
}

/// Per-head naive attention in f64 with an explicit visibility rule.
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nq: usize,
    nkv: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    causal: Option<usize>,
) -> Vec<f64> {
    let group = heads / kv_heads;
    let mut out = vec![0.0; nq * heads * hd];
    for h in 0..heads {
        let g = h / group;
        for t in 0..nq {
            let visible: Vec<usize> = (0..nkv)
                .filter(|&j| causal.is_none_or(|off| j <= off + t))
                .collect();
            let scores: Vec<f64> = visible
                .iter()
                .map(|&j| {
                    (0..hd)
                        .map(|d| {
                            f64::from(q[(t * heads + h) * hd + d])
                                * f64::from(k[(j * kv_heads + g) * hd + d])
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for (s, &j) in scores.iter().zip(&visible) {
                let p = (s - m).exp() / z;
                for d in 0..hd {
                    out[(t * heads + h) * hd + d] += p * f64::from(v[(j * kv_heads + g) * hd + d]);
                }
            }
        }
    }
    out
}

#[test]
fn attention_with_gqa_ratios_1_3_7_matches_per_head_loop() {
    let hd = 5;
    for &(heads, kv_heads) in &[(2usize, 2usize), (6, 2), (7, 1), (14, 2)] {
        for &(nq, nkv, causal) in &[
            (4usize, 4usize, None),
            (3, 6, None),
            (4, 4, Some(0)),
            (3, 7, Some(4)),
            (2, 5, Some(9)),
        ] {
            let q = rand_vec(nq * heads * hd, 10 + heads as u64, 2.0);
            let k = rand_vec(nkv * kv_heads * hd, 20 + nkv as u64, 2.0);
            let v = rand_vec(nkv * kv_heads * hd, 30, 1.0);
            let got = attention(&q, &k, &v, nq, nkv, heads, kv_heads, hd, causal);
            let want = naive_attention(&q, &k, &v, nq, nkv, heads, kv_heads, hd, causal);
            let d = max_diff(&got, &want);
            assert!(
                d < 1e-5,
                "heads {heads}/{kv_heads}, nq {nq}, nkv {nkv}, causal {causal:?}: {d}"
            );
        }
    }
}

/// Upstream `pixel_shuffle(x, 0.5)` (version 1) as tensor views: [h, w, c] → view [h, w/2, 2c] → permute →
/// [w/2, h, 2c] → view [w/2, h/2, 4c].
fn torch_style_shuffle(features: &[f32], grid: usize, c: usize) -> Vec<f32> {
    let x = Array3::from_shape_vec((grid, grid / 2, 2 * c), features.to_vec()).unwrap();
    let x = x.permuted_axes([1, 0, 2]).as_standard_layout().to_owned();
    let x: Array2<f32> = x
        .into_shape_with_order((grid / 2 * grid / 2, 4 * c))
        .unwrap();
    x.iter().copied().collect()
}

#[test]
fn pixel_shuffle_v1_matches_upstream_view_permute() {
    for &(grid, c) in &[(6usize, 3usize), (32, 2), (2, 1)] {
        let f = rand_vec(grid * grid * c, 11, 1.0);
        assert_eq!(
            pixel_shuffle_v1(&f, grid, c),
            torch_style_shuffle(&f, grid, c),
            "grid {grid} c {c}"
        );
    }
    // The documented formula on a labelled grid: token t = c2·16 + r2 starts with g[2r2, 2c2].
    let grid = 32;
    let labels: Vec<f32> = (0..grid * grid).map(|p| p as f32).collect();
    let s = pixel_shuffle_v1(&labels, grid, 1);
    let (r2, c2) = (3, 5);
    let t = c2 * 16 + r2;
    let g = |r: usize, c: usize| (r * grid + c) as f32;
    assert_eq!(
        &s[4 * t..4 * t + 4],
        &[
            g(2 * r2, 2 * c2),
            g(2 * r2, 2 * c2 + 1),
            g(2 * r2 + 1, 2 * c2),
            g(2 * r2 + 1, 2 * c2 + 1)
        ]
    );
}

#[test]
fn patch_embed_matches_naive_convolution() {
    let (size, p, c_out) = (9usize, 3usize, 4usize);
    let img = rand_vec(3 * size * size, 12, 2.0);
    let w = rand_vec(c_out * 3 * p * p, 13, 0.5); // conv weight [c_out, 3, p, p] flattened
    let b = rand_vec(c_out, 14, 0.2);
    let g = size / p;
    let mut want = vec![0.0; g * g * c_out];
    for py in 0..g {
        for px in 0..g {
            for o in 0..c_out {
                let mut s = f64::from(b[o]);
                for ch in 0..3 {
                    for y in 0..p {
                        for x in 0..p {
                            s += f64::from(w[((o * 3 + ch) * p + y) * p + x])
                                * f64::from(img[(ch * size + py * p + y) * size + px * p + x]);
                        }
                    }
                }
                want[(py * g + px) * c_out + o] = s;
            }
        }
    }
    assert!(max_diff(&patch_embed(&img, size, p, &w, c_out, &b), &want) < 1e-5);
}
