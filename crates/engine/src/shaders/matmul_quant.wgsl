// Prefill / ViT Y[n, out] = X[n, in] · Wᵀ (+ b), tiled: 64 tokens × 64 output rows per workgroup, K in steps
// of 32 (one ggml sub-block), 4 × 4 outputs per invocation.
//
// Each K step dequantizes the 64 × 32 weight tile once into workgroup memory and reuses it for 64 tokens.
// Both tiles are stored K-major (`[k][token]`, `[k][row]`), so an invocation's four tokens and four rows are
// one vec4 load each: 2 workgroup loads per 16 multiply-adds (the first version, 2 × 4 outputs from scalar
// loads, needed 6 per 8 and ran at 1.3 TFLOP/s on an H200: tests/bench/results/h200-2026-11-30-run2-profile.md).
// The loaders give consecutive invocations consecutive tokens/rows, so each scalar store to the K-major tiles
// hits 32 different banks. 16 KiB of workgroup memory: WebGPU's default limit exactly.
// Out-of-range tokens, rows and K elements load as zero.

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

const BM: u32 = 64u; // tokens per tile
const BN: u32 = 64u; // weight rows per tile
const BK: u32 = 32u;

var<workgroup> xs: array<vec4<f32>, 512>; // [BK][BM / 4]
var<workgroup> ws: array<vec4<f32>, 512>; // [BK][BN / 4]

{{DEQUANT}}

fn put(tile: u32, k: u32, i: u32, v: f32) {
    // Scalar i of the vec4 at [k][i / 4]; `tile` 0 = xs, 1 = ws.
    let o = k * 16u + (i >> 2u);
    let c = i & 3u;
    if (tile == 0u) {
        xs[o][c] = v;
    } else {
        ws[o][c] = v;
    }
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row0 = wid.x * BN;
    let tok0 = wid.y * BM;
    let tx = lid & 15u; // rows 4tx .. 4tx + 3
    let ty = lid >> 4u; // tokens 4ty .. 4ty + 3
    var acc0 = vec4<f32>(0.0); // token 4ty + 0, four rows
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    // Loader roles: X tile = 64 tokens × 8 groups of 4 (two groups per invocation, tokens lid % 32 and
    // lid % 32 + 32); W tile = 64 rows × 8 groups (rows lid % 64, groups lid / 64 and lid / 64 + 4).
    let xt = lid & 31u;
    let xg = lid >> 5u; // 0..8
    let wr = lid & 63u;
    let wg = lid >> 6u; // 0..4
    for (var k0 = 0u; k0 < P.row_len; k0 += BK) {
        for (var h = 0u; h < 2u; h++) {
            let tl = xt + 32u * h;
            let t = tok0 + tl;
            let e = k0 + 4u * xg;
            var v = vec4<f32>(0.0);
            if (t < P.n_tok && e < P.row_len) {
                let b = P.x_offset + t * P.x_stride + e;
                v = vec4<f32>(X[b], X[b + 1u], X[b + 2u], X[b + 3u]);
            }
            let k = 4u * xg;
            put(0u, k, tl, v.x);
            put(0u, k + 1u, tl, v.y);
            put(0u, k + 2u, tl, v.z);
            put(0u, k + 3u, tl, v.w);
        }
        for (var h = 0u; h < 2u; h++) {
            let g = wg + 4u * h;
            let e = k0 + 4u * g;
            var v = vec4<f32>(0.0);
            if (row0 + wr < P.n_rows && e < P.row_len) {
                v = dq4((row0 + wr) * P.row_bytes, e);
            }
            let k = 4u * g;
            put(1u, k, wr, v.x);
            put(1u, k + 1u, wr, v.y);
            put(1u, k + 2u, wr, v.z);
            put(1u, k + 3u, wr, v.w);
        }
        workgroupBarrier();
        for (var k = 0u; k < BK; k++) {
            let a = xs[k * 16u + ty];
            let w = ws[k * 16u + tx];
            acc0 += a.x * w;
            acc1 += a.y * w;
            acc2 += a.z * w;
            acc3 += a.w * w;
        }
        workgroupBarrier();
    }
    let r = row0 + 4u * tx;
    var bias = vec4<f32>(0.0);
    if (P.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (r + j < P.n_rows) {
                bias[j] = B[P.first_row + r + j];
            }
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let t = tok0 + 4u * ty + i;
        if (t >= P.n_tok) {
            break;
        }
        var v = acc0;
        if (i == 1u) {
            v = acc1;
        } else if (i == 2u) {
            v = acc2;
        } else if (i == 3u) {
            v = acc3;
        }
        v += bias;
        let o = P.y_offset + t * P.y_stride + P.first_row + r;
        for (var j = 0u; j < 4u; j++) {
            if (r + j < P.n_rows) {
                Y[o + j] = v[j];
            }
        }
    }
}
