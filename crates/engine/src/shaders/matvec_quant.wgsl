// y[t] = W x[t] by streaming W's rows straight from the packed GGUF blocks (no dequantized copy): decode,
// and on CPU drivers every linear layer.
//
// A workgroup computes ROWS output rows for TOKENS tokens with LANES invocations per row. Each invocation
// walks the row in units (`dotu`, one load per weight word) and the remainder (float rows whose length is
// not a multiple of the unit) 4 elements at a time; every decoded weight group is applied to all TOKENS
// tokens before the next is read (`acc4`), so the weight is streamed once per TOKENS tokens. A row's lanes
// are summed in workgroup memory.
// The host picks the shape per device: on GPUs several lanes per row keep the reads of a row together; on
// CPU drivers one lane per row needs no reduction at all, and reading x from a uniform buffer (identical
// addresses across lanes) turns each x load into one vector gather instead of a per-lane loop.
// A weight split into parts is dispatched once per part; `first_row` places this part's rows in the output.
//
// Three entry points, in the sections at the end, share everything above them (`shaders::matvec` renders
// one): `workgroup` sums a row's lanes in workgroup memory; `subgroup` (adapters with subgroups) gives each
// row to one subgroup and sums it with `subgroupAdd`; `subgroup_rows` gives a subgroup RSG rows at once.

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
    n_tok: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> W: array<u32>;
@group(0) @binding(3) var<storage, read> B: array<f32>;
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
// Binding 5 (`W4`, the same buffer as vec4s) where the type's unit loads 16 bytes at a time.
{{W4}}

// Binding 2 and `xv4(e)`: x[e .. e + 4].
{{X_SOURCE}}

const ROWS: u32 = {{ROWS}}u;
const LANES: u32 = {{LANES}}u;
const TOKENS: u32 = {{TOKENS}}u;
// Rows a subgroup walks side by side (`subgroup_rows`; 1 elsewhere).
const RSG: u32 = {{RSG}}u;
var<private> accs: array<f32, TOKENS>;
var<private> xbase: array<u32, TOKENS>;

fn acc4(e: u32, w: vec4<f32>) {
    for (var t = 0u; t < TOKENS; t++) {
        accs[t] += dot(w, xv4(xbase[t] + e));
    }
}

{{DEQUANT}}

// Sets up `xbase` for the token slots from t0 and adds this lane's share of row r (lanes `lane`,
// `lane + lanes`, ... of its units) into `accs`.
fn row_partial(r: u32, t0: u32, lane: u32, lanes: u32) {
    for (var t = 0u; t < TOKENS; t++) {
        // Token slots past the end repeat the last token (results dropped).
        xbase[t] = P.x_offset + min(t0 + t, P.n_tok - 1u) * P.x_stride;
        accs[t] = 0.0;
    }
    let rb = r * P.row_bytes;
    let units = P.row_len / UNIT;
    // (Unrolling this loop 4× to keep more loads in flight changed nothing on an H200: 4.09 against 4.07 ms
    // of Q4_K matvecs per token, tests/bench/results/h200-2026-11-30-run4-full.md.)
    for (var u = lane; u < units; u += lanes) {
        dotu(rb, u);
    }
    for (var e = units * UNIT + lane * 4u; e < P.row_len; e += lanes * 4u) {
        acc4(e, dq4(rb, e));
    }
}

fn store(row: u32, t: u32, v: f32) {
    var y = v;
    if (P.has_bias != 0u) {
        y += B[P.first_row + row];
    }
    Y[P.y_offset + t * P.y_stride + P.first_row + row] = y;
}

//#main workgroup
var<workgroup> red: array<f32, {{WG}}>;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let lane = lid % LANES;
    let row = (wid.x + wid.y * nwg.x) * ROWS + lid / LANES;
    // Rows past the end repeat the last row so that every invocation reaches the barriers.
    let t0 = wid.z * TOKENS;
    row_partial(min(row, P.n_rows - 1u), t0, lane, LANES);
    for (var t = 0u; t < TOKENS; t++) {
        var v = accs[t];
        if (LANES > 1u) {
            red[lid] = v;
            workgroupBarrier();
            for (var s = LANES / 2u; s > 0u; s >>= 1u) {
                if (lane < s) {
                    red[lid] += red[lid + s];
                }
                workgroupBarrier();
            }
            v = red[lid];
            workgroupBarrier();
        }
        if (lane == 0u && row < P.n_rows && t0 + t < P.n_tok) {
            store(row, t0 + t, v);
        }
    }
}
//#main subgroup
// Rows are dealt to subgroups by `subgroup_id`, so the sums never depend on how the driver groups
// invocations or on the subgroup size it picks (4 on SwiftShader, 8 on lavapipe, 32 on NVIDIA, 32 or 64 on
// AMD); a subgroup skips the rest of its rows together, so `subgroupAdd` always sees the whole subgroup.
@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * ROWS;
    let t0 = wid.z * TOKENS;
    for (var i = sg; i < ROWS; i += nsg) {
        let row = first + i;
        if (row >= P.n_rows) {
            break;
        }
        row_partial(row, t0, lane, lanes);
        for (var t = 0u; t < TOKENS; t++) {
            let v = subgroupAdd(accs[t]);
            if (lane == 0u && t0 + t < P.n_tok) {
                store(row, t0 + t, v);
            }
        }
    }
}
//#main subgroup_rows
// A subgroup takes RSG consecutive rows at once (`dotr`); as in `subgroup`, rows are dealt by `subgroup_id`
// and a subgroup leaves its loop together. Cooperative shapes handle one token per workgroup (wid.z). (The
// entry points repeat their built-in parameter lists: WGSL has no way to share them.)
var<private> accr: array<f32, RSG>;

@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) lanes: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let first = (wid.x + wid.y * nwg.x) * ROWS;
    let t = wid.z;
    xbase[0] = P.x_offset + min(t, P.n_tok - 1u) * P.x_stride;
    let units = P.row_len / RUNIT;
    for (var i = sg * RSG; i < ROWS; i += nsg * RSG) {
        let row = first + i;
        if (row >= P.n_rows) {
            break;
        }
        for (var s = 0u; s < RSG; s++) {
            accr[s] = 0.0;
        }
        for (var u = lane; u < units; u += lanes) {
            dotr(row, u);
        }
        // Rows that are not whole units (none of today's `dotr` types: their blocks are whole units).
        for (var s = 0u; s < RSG; s++) {
            let rb = min(row + s, P.n_rows - 1u) * P.row_bytes;
            for (var e = units * RUNIT + lane * 4u; e < P.row_len; e += lanes * 4u) {
                accr[s] += dot(dq4(rb, e), xv4(xbase[0] + e));
            }
        }
        for (var s = 0u; s < RSG; s++) {
            let v = subgroupAdd(accr[s]);
            if (lane == 0u && row + s < P.n_rows && t < P.n_tok) {
                store(row + s, t, v);
            }
        }
    }
}
//#end
