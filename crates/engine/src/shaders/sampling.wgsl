// Greedy argmax and top-N extraction on the GPU, so a decode step reads back one u32 (or N pairs).
//
// Ordering is (value descending, index ascending), like torch.argmax's first-maximum rule. NaN logits are
// never selected. `top_n` repeats a single-workgroup arg-max N times, each round restricted to entries ranked
// strictly after the previous pick, so it needs no scratch memory; N is small (sampling candidates).

struct Params {
    n: u32,
    offset: u32,
    k: u32,
    out_offset: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> L: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<u32>;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> bv: array<f32, WG>;
var<workgroup> bi: array<u32, WG>;

// a ranks before b
fn better(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if (ia == NONE) {
        return false;
    }
    if (ib == NONE) {
        return true;
    }
    return va > vb || (va == vb && ia < ib);
}

// Best entry ranked strictly after (pv, pi) (or overall when pi == NONE); every invocation gets it.
fn best_after(lid: u32, pv: f32, pi: u32) -> vec2<u32> {
    var v = 0.0;
    var idx = NONE;
    for (var i = lid; i < P.n; i += WG) {
        let x = L[P.offset + i];
        if (x == x && (pi == NONE || better(pv, pi, x, i)) && better(x, i, v, idx)) {
            v = x;
            idx = i;
        }
    }
    bv[lid] = v;
    bi[lid] = idx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && better(bv[lid + s], bi[lid + s], bv[lid], bi[lid])) {
            bv[lid] = bv[lid + s];
            bi[lid] = bi[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<u32>(bitcast<u32>(bv[0]), bi[0]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    let r = best_after(lid, 0.0, NONE);
    if (lid == 0u) {
        OUT[P.out_offset] = r.y;
    }
}

// OUT[out_offset + 2j] = index, OUT[out_offset + 2j + 1] = f32 bits of the value, for the k best entries
// (index NONE when fewer than k exist).
@compute @workgroup_size(256)
fn top_n(@builtin(local_invocation_index) lid: u32) {
    var pv = 0.0;
    var pi = NONE;
    for (var j = 0u; j < P.k; j++) {
        let r = best_after(lid, pv, pi);
        if (lid == 0u) {
            OUT[P.out_offset + 2u * j] = r.y;
            OUT[P.out_offset + 2u * j + 1u] = r.x;
        }
        // Once nothing is left, keeping the old threshold makes every later round report NONE too.
        if (r.y != NONE) {
            pv = bitcast<f32>(r.x);
            pi = r.y;
        }
    }
}
