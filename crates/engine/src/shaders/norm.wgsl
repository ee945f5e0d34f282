// Row normalisations, one workgroup per row, statistics accumulated in f32 by a 256-wide tree reduction.
// `rms_norm_lane` (CPU drivers, many rows: the ViT's 1025-token q/k norms) gives each row one invocation and
// four running sums instead: on lavapipe the tree's ten barriers per row cost more than the row's arithmetic
// (12 norms were 139 ms of the dev ViT's 1.05 s).
//
// Rows are strided views so the ViT's q/k norms can read the q and k thirds of the fused qkv output in place.
// LayerNorm uses two passes over the row (mean, then centred variance) rather than E[x²]−E[x]², which loses
// digits when |mean| ≫ std.

struct Params {
    rows: u32,
    width: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read> Bias: array<f32>;

const WG: u32 = 256u;
var<workgroup> red: array<f32, WG>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Sum of `v` over the workgroup, returned to every invocation.
fn wg_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn rms_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = row_index(wid, nwg);
    if (r >= P.rows) {
        return;
    }
    let xb = P.x_offset + r * P.x_stride;
    var ss = 0.0;
    for (var i = lid; i < P.width; i += WG) {
        let v = X[xb + i];
        ss += v * v;
    }
    let total = wg_sum(lid, ss);
    let scale = inverseSqrt(total / f32(P.width) + P.eps);
    let yb = P.y_offset + r * P.y_stride;
    for (var i = lid; i < P.width; i += WG) {
        Y[yb + i] = (X[xb + i] * scale) * G[i];
    }
}

@compute @workgroup_size(256)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = row_index(wid, nwg);
    if (r >= P.rows) {
        return;
    }
    let xb = P.x_offset + r * P.x_stride;
    var s = 0.0;
    for (var i = lid; i < P.width; i += WG) {
        s += X[xb + i];
    }
    let mean = wg_sum(lid, s) / f32(P.width);
    var sv = 0.0;
    for (var i = lid; i < P.width; i += WG) {
        let d = X[xb + i] - mean;
        sv += d * d;
    }
    let rstd = inverseSqrt(wg_sum(lid, sv) / f32(P.width) + P.eps);
    let yb = P.y_offset + r * P.y_stride;
    for (var i = lid; i < P.width; i += WG) {
        Y[yb + i] = (X[xb + i] - mean) * rstd * G[i] + Bias[i];
    }
}

@compute @workgroup_size(64)
fn rms_norm_lane(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = row_index(wid, nwg) * 64u + lid;
    if (r >= P.rows) {
        return;
    }
    let xb = P.x_offset + r * P.x_stride;
    var ss = vec4<f32>(0.0);
    var i = 0u;
    for (; i + 4u <= P.width; i += 4u) {
        let v = vec4<f32>(X[xb + i], X[xb + i + 1u], X[xb + i + 2u], X[xb + i + 3u]);
        ss += v * v;
    }
    for (; i < P.width; i++) {
        let v = X[xb + i];
        ss.x += v * v;
    }
    let scale = inverseSqrt((ss.x + ss.y + ss.z + ss.w) / f32(P.width) + P.eps);
    let yb = P.y_offset + r * P.y_stride;
    for (var j = 0u; j < P.width; j++) {
        Y[yb + j] = (X[xb + j] * scale) * G[j];
    }
}
