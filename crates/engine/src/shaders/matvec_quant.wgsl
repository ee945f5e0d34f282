// Decode-time y = W x for a few token vectors, straight from the packed GGUF blocks (no dequantized copy).
//
// A workgroup computes ROWS output rows of one token with LANES invocations per row. Each invocation walks
// the row in units (`dotu`, one load per weight word), the remainder (float rows whose length is not a
// multiple of the unit) 4 elements at a time, and the row's lanes are summed in workgroup memory.
// The host picks the shape per device: on GPUs several lanes per row keep the reads of a row together; on
// CPU drivers one lane per row needs no reduction at all, and reading x from a uniform buffer (identical
// addresses across lanes) turns each x load into one vector gather instead of a per-lane loop.
// A weight split into parts is dispatched once per part; `first_row` places this part's rows in the output.

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
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;

// Binding 2 and `xv4(e)`: x[e .. e + 4].
{{X_SOURCE}}

const ROWS: u32 = {{ROWS}}u;
const LANES: u32 = {{LANES}}u;
var<workgroup> red: array<f32, {{WG}}>;

{{DEQUANT}}

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let lane = lid % LANES;
    let row = (wid.x + wid.y * nwg.x) * ROWS + lid / LANES;
    // Rows past the end repeat the last row so that every invocation reaches the barriers.
    let r = min(row, P.n_rows - 1u);
    let tok = wid.z;
    let rb = r * P.row_bytes;
    let xb = P.x_offset + tok * P.x_stride;
    let units = P.row_len / UNIT;
    var acc = 0.0;
    for (var u = lane; u < units; u += LANES) {
        acc += dotu(rb, u, xb + u * UNIT);
    }
    for (var e = units * UNIT + lane * 4u; e < P.row_len; e += LANES * 4u) {
        acc += dot(dq4(rb, e), xv4(xb + e));
    }
    if (LANES > 1u) {
        red[lid] = acc;
        workgroupBarrier();
        for (var s = LANES / 2u; s > 0u; s >>= 1u) {
            if (lane < s) {
                red[lid] += red[lid + s];
            }
            workgroupBarrier();
        }
        acc = red[lid];
    }
    if (lane == 0u && row < P.n_rows) {
        var v = acc;
        if (P.has_bias != 0u) {
            v += B[P.first_row + row];
        }
        Y[P.y_offset + tok * P.y_stride + P.first_row + row] = v;
    }
}
