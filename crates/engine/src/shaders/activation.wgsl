// Element-wise activations and row softmax.
//
// GELU needs erf, which WGSL lacks. We use the complementary form gelu(x) = ½·x·erfc(−x/√2) with the
// Chebyshev-fitted erfc of Press et al. (Numerical Recipes §6.2, "erfcc"), whose *relative* error is below
// 1.2e-7 for every argument. Relative accuracy on erfc matters: for x ≪ 0 GELU is a tiny ½·x·erfc(|x|/√2), and
// an absolute-error erf (Abramowitz–Stegun 7.1.26, 1.5e-7 absolute) would be off by 100 % there, while for
// x ≫ 0 erfc → 0 and 2 − erfc is exact to f32 rounding anyway.

struct Params {
    n: u32,
    width: u32,   // row width for layer-scaled add and softmax
    has_scale: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> A: array<f32>;
@group(0) @binding(2) var<storage, read> Bv: array<f32>;
@group(0) @binding(3) var<storage, read> S: array<f32>;

fn erfc_pos(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

fn erfc(x: f32) -> f32 {
    let r = erfc_pos(abs(x));
    return select(2.0 - r, r, x >= 0.0);
}

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

@compute @workgroup_size(256)
fn gelu(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < P.n) {
        let x = A[i];
        A[i] = 0.5 * x * erfc(-x * 0.70710678118654752);
    }
}

// A = silu(A) · B (LLaMA's gated MLP: A is the gate projection, B the up projection).
@compute @workgroup_size(256)
fn silu_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < P.n) {
        let g = A[i];
        A[i] = g / (1.0 + exp(-g)) * Bv[i];
    }
}

// A += S ⊙ B with S a per-column layer scale (InternViT ls1/ls2), or A += B.
@compute @workgroup_size(256)
fn add_scaled(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i < P.n) {
        var b = Bv[i];
        if (P.has_scale != 0u) {
            b = S[i % P.width] * b;
        }
        A[i] = A[i] + b;
    }
}

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

fn wg_reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] += red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Softmax of each row of A (rows = n / width), in place, one workgroup per row.
@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    if (r * P.width >= P.n) {
        return;
    }
    let b = r * P.width;
    var m = -3.0e38;
    for (var i = lid; i < P.width; i += WG) {
        m = max(m, A[b + i]);
    }
    m = wg_reduce(lid, m, true);
    var s = 0.0;
    for (var i = lid; i < P.width; i += WG) {
        let e = exp(A[b + i] - m);
        A[b + i] = e;
        s += e;
    }
    let inv = 1.0 / wg_reduce(lid, s, false);
    for (var i = lid; i < P.width; i += WG) {
        A[b + i] = A[b + i] * inv;
    }
}
