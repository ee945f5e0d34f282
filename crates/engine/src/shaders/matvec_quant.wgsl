// Decode-time y = W x for a few token vectors: one workgroup per (output row, token).
//
// Memory-bound by the weight read, so each invocation streams 4 packed elements at a time straight from the
// GGUF blocks (no dequantized copy anywhere) and the row is reduced in workgroup memory. A weight split into
// parts is dispatched once per part; `first_row` places this part's rows in the full output.

struct Params {
    n_rows: u32,     // rows in this part
    row_len: u32,    // elements per row (= x width)
    row_bytes: u32,  // packed bytes per row
    first_row: u32,  // index of this part's first row in the whole weight
    x_offset: u32,
    x_stride: u32,
    y_offset: u32,
    y_stride: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

{{DEQUANT}}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= P.n_rows) {
        return;
    }
    let tok = wid.z;
    let rb = row * P.row_bytes;
    let xb = P.x_offset + tok * P.x_stride;
    var acc = 0.0;
    for (var e = lid * 4u; e < P.row_len; e += WG * 4u) {
        let w = dq4(rb, e);
        let x = vec4<f32>(X[xb + e], X[xb + e + 1u], X[xb + e + 2u], X[xb + e + 3u]);
        acc += dot(w, x);
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var v = red[0];
        if (P.has_bias != 0u) {
            v += B[P.first_row + row];
        }
        Y[P.y_offset + tok * P.y_stride + P.first_row + row] = v;
    }
}
