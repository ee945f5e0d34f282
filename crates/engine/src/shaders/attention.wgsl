{{ENABLE_F16}}
// Scaled dot-product attention with grouped KV heads, one workgroup per (query token, head).
//
// Keys are visited in tiles of 64 with an online (running max / running sum) softmax, so memory stays
// O(head_dim) per workgroup for any sequence length: the ViT's 1025 tokens and a 4k-token KV cache use the
// same kernel. Causal mode: query t sits at absolute position pos_start + t and sees keys 0 ..= pos_start + t.
// K/V element type is spliced in (f32 activations, or the f16 KV cache when the device has shader-f16).
//
// Split keys (flash-decoding): with few (query, head) pairs — a decode step has one query per head, 56 for
// Yi-34B, on GPUs with 100+ cores — the keys are cut into `n_split` chunks of `chunk` keys, each its own
// workgroup writing an unnormalised partial (running max m, sum l, Σ p·v) to S; `combine` then merges the
// partials of each (query, head). One workgroup walking 768 keys alone took 0.53 ms per layer on an H200
// (36 % of a decode step: tests/bench/results/h200-2026-11-30-run2-profile.md).
// Keys are read as vec4 when the host proves the rows 4-aligned (`kdot`), else element by element.
//
// `main_lane` (CPU drivers): one invocation per (query, head) pair — or, with few pairs (decode), per pair and
// key chunk, merged by `combine` — walks its keys alone, with no workgroup memory and no barriers. On lavapipe and SwiftShader a barrier is a switch
// between the coroutines that emulate a workgroup's invocations, and `main` needs two reductions of six
// barriers per 64 keys: it spent 4.9 of the dev ViT's 5.4 s there.

struct Params {
    n_q: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    q_offset: u32,
    q_stride: u32,
    k_offset: u32,
    k_stride: u32,
    v_offset: u32,
    v_stride: u32,
    o_offset: u32,
    o_stride: u32,
    n_kv: u32,
    causal: u32,
    pos_start: u32,
    scale: f32,
    n_split: u32,   // key chunks per (query, head); 1 = no split, O written directly
    chunk: u32,     // keys per chunk
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
// Bindings 2 (K) and 3 (V) with `kload(i)`/`kload4(i)` and `vload(i)`/`vload4(i)` (element i, or elements
// i .. i + 4 with i 4-aligned) and the flags K4/V4 (stored as vec4): see `kv_binding` in ops.rs.
{{K_DECL}}
{{V_DECL}}
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
// Partials of split jobs: per job m, l, then head_dim sums (stride head_dim + 2).
@group(0) @binding(5) var<storage, read_write> S: array<f32>;

const WG: u32 = 64u;
const MAX_HD: u32 = 256u;
const NEG: f32 = -3.0e38; // "−∞" that stays finite so exp(NEG − m) is exactly 0

var<workgroup> qs: array<f32, MAX_HD>;

// q·k for the key row starting at element kb, q from workgroup memory (`main`).
fn kdot(kb: u32, hd: u32) -> f32 {
    var s = 0.0;
    if (K4) {
        for (var d = 0u; d < hd; d += 4u) {
            s += dot(vec4<f32>(qs[d], qs[d + 1u], qs[d + 2u], qs[d + 3u]), kload4(kb + d));
        }
    } else {
        for (var d = 0u; d < hd; d++) {
            s += qs[d] * kload(kb + d);
        }
    }
    return s;
}

// The same with the invocation's own q (`main_lane`).
fn kdot_lane(kb: u32, hd: u32, q: ptr<function, array<f32, MAX_HD>>) -> f32 {
    var s = 0.0;
    if (K4) {
        for (var d = 0u; d < hd; d += 4u) {
            s += dot(vec4<f32>((*q)[d], (*q)[d + 1u], (*q)[d + 2u], (*q)[d + 3u]), kload4(kb + d));
        }
    } else {
        for (var d = 0u; d < hd; d++) {
            s += (*q)[d] * kload(kb + d);
        }
    }
    return s;
}
var<workgroup> ps: array<f32, WG>;
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

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let job = wid.x + wid.y * nwg.x;
    if (job >= P.n_q * P.n_heads * P.n_split) {
        return;
    }
    let c = job % P.n_split;
    let th = job / P.n_split;
    let t = th / P.n_heads;
    let h = th % P.n_heads;
    let kvh = h / (P.n_heads / P.n_kv_heads);
    let hd = P.head_dim;
    var visible = P.n_kv;
    if (P.causal != 0u) {
        visible = min(P.n_kv, P.pos_start + t + 1u);
    }
    let qb = P.q_offset + t * P.q_stride + h * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = Q[qb + d];
    }
    workgroupBarrier();

    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0); // dims lid + 64i
    var m = NEG;
    var l = 0.0;
    let kh = kvh * hd;
    let first = c * P.chunk;
    let end = min(visible, first + P.chunk);
    for (var j0 = first; j0 < end; j0 += WG) {
        let j = j0 + lid;
        var s = NEG;
        if (j < end) {
            s = kdot(P.k_offset + j * P.k_stride + kh, hd) * P.scale;
        }
        let m_new = max(m, wg_reduce(lid, s, true));
        let p = exp(s - m_new);
        ps[lid] = p;
        let alpha = exp(m - m_new);
        l = l * alpha + wg_reduce(lid, p, false);
        m = m_new;
        let n_here = min(WG, end - j0);
        for (var i = 0u; i < 4u; i++) {
            let d = lid + i * WG;
            if (d < hd) {
                var a = acc[i] * alpha;
                for (var jj = 0u; jj < n_here; jj++) {
                    a += ps[jj] * vload(P.v_offset + (j0 + jj) * P.v_stride + kh + d);
                }
                acc[i] = a;
            }
        }
        workgroupBarrier();
    }
    if (P.n_split > 1u) {
        let sb = job * (hd + 2u);
        if (lid == 0u) {
            S[sb] = m;
            S[sb + 1u] = l;
        }
        for (var i = 0u; i < 4u; i++) {
            let d = lid + i * WG;
            if (d < hd) {
                S[sb + 2u + d] = acc[i];
            }
        }
        return;
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = P.o_offset + t * P.o_stride + h * hd;
    for (var i = 0u; i < 4u; i++) {
        let d = lid + i * WG;
        if (d < hd) {
            O[ob + d] = acc[i] * inv;
        }
    }
}

// Merges the n_split partials of each (query, head): o = Σ_c e^(m_c − M) acc_c / Σ_c e^(m_c − M) l_c.
// A chunk past the visible keys has m = NEG and l = 0 and weighs nothing.
@compute @workgroup_size(64)
fn combine(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let th = wid.x + wid.y * nwg.x;
    if (th >= P.n_q * P.n_heads) {
        return;
    }
    let t = th / P.n_heads;
    let h = th % P.n_heads;
    let hd = P.head_dim;
    let stride = hd + 2u;
    let base = th * P.n_split * stride;
    var mx = NEG;
    for (var c = 0u; c < P.n_split; c++) {
        mx = max(mx, S[base + c * stride]);
    }
    var l = 0.0;
    for (var c = 0u; c < P.n_split; c++) {
        l += exp(S[base + c * stride] - mx) * S[base + c * stride + 1u];
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = P.o_offset + t * P.o_stride + h * hd;
    for (var d = lid; d < hd; d += 64u) {
        var a = 0.0;
        for (var c = 0u; c < P.n_split; c++) {
            a += exp(S[base + c * stride] - mx) * S[base + c * stride + 2u + d];
        }
        O[ob + d] = a * inv;
    }
}

@compute @workgroup_size(64)
fn main_lane(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let job = (wid.x + wid.y * nwg.x) * WG + lid;
    if (job >= P.n_q * P.n_heads * P.n_split) {
        return;
    }
    let c = job % P.n_split;
    let th = job / P.n_split;
    let t = th / P.n_heads;
    let h = th % P.n_heads;
    let kh = (h / (P.n_heads / P.n_kv_heads)) * P.head_dim;
    let hd = P.head_dim;
    var visible = P.n_kv;
    if (P.causal != 0u) {
        visible = min(P.n_kv, P.pos_start + t + 1u);
    }
    let qb = P.q_offset + t * P.q_stride + h * hd;
    var q: array<f32, MAX_HD>;
    var acc: array<f32, MAX_HD>;
    for (var d = 0u; d < hd; d++) {
        q[d] = Q[qb + d];
        acc[d] = 0.0;
    }
    var m = NEG;
    var l = 0.0;
    let end = min(visible, c * P.chunk + P.chunk);
    for (var j = c * P.chunk; j < end; j++) {
        let s = kdot_lane(P.k_offset + j * P.k_stride + kh, hd, &q) * P.scale;
        let m_new = max(m, s);
        let alpha = exp(m - m_new);
        let p = exp(s - m_new);
        l = l * alpha + p;
        let vb = P.v_offset + j * P.v_stride + kh;
        if (V4) {
            for (var d = 0u; d < hd; d += 4u) {
                let v = vload4(vb + d);
                acc[d] = acc[d] * alpha + p * v.x;
                acc[d + 1u] = acc[d + 1u] * alpha + p * v.y;
                acc[d + 2u] = acc[d + 2u] * alpha + p * v.z;
                acc[d + 3u] = acc[d + 3u] * alpha + p * v.w;
            }
        } else {
            for (var d = 0u; d < hd; d++) {
                acc[d] = acc[d] * alpha + p * vload(vb + d);
            }
        }
        m = m_new;
    }
    if (P.n_split > 1u) {
        let sb = job * (hd + 2u);
        S[sb] = m;
        S[sb + 1u] = l;
        for (var d = 0u; d < hd; d++) {
            S[sb + 2u + d] = acc[d];
        }
        return;
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let ob = P.o_offset + t * P.o_stride + h * hd;
    for (var d = 0u; d < hd; d++) {
        O[ob + d] = acc[d] * inv;
    }
}
