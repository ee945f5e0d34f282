// Prefill / ViT Y[n, out] = X[n, in] · Wᵀ (+ b), tiled: 32 tokens × 64 output rows per workgroup, K in
// steps of 32 (one ggml sub-block).
//
// Each K step dequantizes the 64 × 32 weight tile once into workgroup memory and reuses it for 32 tokens,
// so the packed weight is read n/32 times instead of n times. 12.7 KiB of workgroup memory keeps it under
// WebGPU's 16 KiB default. Out-of-range tokens, rows and K elements load as zero.

struct Params {
    n_rows: u32,     // weight rows in this part
    row_len: u32,
    row_bytes: u32,
    first_row: u32,
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    has_bias: u32,
    n_tok: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const BM: u32 = 32u; // tokens per tile
const BN: u32 = 64u; // weight rows per tile
const BK: u32 = 32u;
const LD: u32 = 33u; // padded leading dimension against bank conflicts

var<workgroup> xs: array<f32, 1056>; // BM * LD
var<workgroup> ws: array<f32, 2112>; // BN * LD

{{DEQUANT}}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row0 = wid.x * BN;
    let tok0 = wid.y * BM;
    let tx = lid3.x; // output rows tx + 16j
    let ty = lid3.y; // tokens 2ty, 2ty+1
    var acc: array<f32, 8>;
    for (var i = 0u; i < 8u; i++) {
        acc[i] = 0.0;
    }
    // Loader roles: X tile = 32 tokens × 8 groups of 4; W tile = 64 rows × 8 groups of 4 (two per thread).
    let xt = lid >> 3u;
    let kg = (lid & 7u) * 4u;
    for (var k0 = 0u; k0 < P.row_len; k0 += BK) {
        let e = k0 + kg;
        {
            let t = tok0 + xt;
            var v = vec4<f32>(0.0);
            if (t < P.n_tok && e < P.row_len) {
                let b = P.x_offset + t * P.x_stride + e;
                v = vec4<f32>(X[b], X[b + 1u], X[b + 2u], X[b + 3u]);
            }
            let o = xt * LD + kg;
            xs[o] = v.x; xs[o + 1u] = v.y; xs[o + 2u] = v.z; xs[o + 3u] = v.w;
        }
        for (var h = 0u; h < 2u; h++) {
            let r = xt + h * 32u;
            var v = vec4<f32>(0.0);
            if (row0 + r < P.n_rows && e < P.row_len) {
                v = dq4((row0 + r) * P.row_bytes, e);
            }
            let o = r * LD + kg;
            ws[o] = v.x; ws[o + 1u] = v.y; ws[o + 2u] = v.z; ws[o + 3u] = v.w;
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a0 = xs[(2u * ty) * LD + k];
            let a1 = xs[(2u * ty + 1u) * LD + k];
            for (var j = 0u; j < 4u; j++) {
                let b = ws[(tx + 16u * j) * LD + k];
                acc[j] += a0 * b;
                acc[4u + j] += a1 * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 2u; i++) {
        let t = tok0 + 2u * ty + i;
        if (t >= P.n_tok) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let r = row0 + tx + 16u * j;
            if (r < P.n_rows) {
                var v = acc[4u * i + j];
                if (P.has_bias != 0u) {
                    v += B[P.first_row + r];
                }
                Y[P.y_offset + t * P.y_stride + P.first_row + r] = v;
            }
        }
    }
}
