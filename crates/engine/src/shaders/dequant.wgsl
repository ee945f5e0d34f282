// Packed GGUF block decoding, spliced into every kernel that reads a quantized weight.
//
// The including kernel declares `W: array<u32>` (the raw bytes of one part of a weight, uploaded as-is).
// Blocks are 2-byte aligned at best (18, 20, 22, 34, 210 bytes...), so bytes are extracted from the u32 words
// instead of reinterpreting them. `dq4(rb, e)` returns elements e..e+4 (e a multiple of 4) of the row whose
// first byte is `rb`; four consecutive elements always share one block and one scale, which keeps every
// variant branch-free per group.
//
// `dotu(rb, u)` is the row-streaming kernels' fast path: it decodes unit `u` of the row (UNIT consecutive
// elements: one legacy block, a pair of Q4_K/Q5_K sub-blocks sharing their quant bytes, a Q6_K half block)
// and hands each group of 4 weights at row element e to the kernel's `acc4(e, w)`, which multiplies them
// into the activations of every token it handles. It loads each weight word once:
// on CPU drivers (lavapipe) every storage load of a per-lane address is a scalar loop over the lanes, so the
// number of load instructions, not bytes, sets the speed. Blocks that are only 2-byte aligned are read as
// aligned words and re-joined with `join16`.

fn rd8(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// `b` must be even: a u16 then never straddles two words.
fn rd16(b: u32) -> u32 {
    return (W[b >> 2u] >> ((b & 2u) * 8u)) & 0xffffu;
}

// Unaligned little-endian u32.
fn rd32(b: u32) -> u32 {
    let s = (b & 3u) * 8u;
    let lo = W[b >> 2u];
    if (s == 0u) {
        return lo;
    }
    return (lo >> s) | (W[(b >> 2u) + 1u] << (32u - s));
}

fn f16at(b: u32) -> f32 {
    return unpack2x16float(rd16(b)).x;
}

// Four packed bytes as unsigned values.
fn u8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(f32(q & 0xffu), f32((q >> 8u) & 0xffu), f32((q >> 16u) & 0xffu), f32(q >> 24u));
}

// Four packed bytes as signed values.
fn i8x4(q: u32) -> vec4<f32> {
    return vec4<f32>(
        f32(bitcast<i32>(q << 24u) >> 24u),
        f32(bitcast<i32>(q << 16u) >> 24u),
        f32(bitcast<i32>(q << 8u) >> 24u),
        f32(bitcast<i32>(q) >> 24u),
    );
}

// Bit `bit` of `word`, for 4 consecutive positions, as 0/16 per byte lane (the 5th quant bit).
fn hi4(word: u32, bit: u32) -> u32 {
    let h = (word >> bit) & 0xfu;
    return ((h & 1u) << 4u) | ((h & 2u) << 11u) | ((h & 4u) << 18u) | ((h & 8u) << 25u);
}

fn f16lo(w: u32) -> f32 {
    return unpack2x16float(w).x;
}

fn f16hi(w: u32) -> f32 {
    return unpack2x16float(w).y;
}

// Word k of a byte stream that starts at byte S, from the words a = W[S/4 + k] and c = W[S/4 + k + 1]: with
// `split` (S is 2 mod 4) the 4 bytes that start in the middle of `a` and run into `c`, else `a` itself.
fn join16(a: u32, c: u32, split: bool) -> u32 {
    return select(a, (a >> 16u) | (c << 16u), split);
}

// Byte i (0..12) of the three words holding a K-quant's 12 scale bytes.
fn sbyte(s0: u32, s1: u32, s2: u32, i: u32) -> u32 {
    return (select(select(s0, s1, i >= 4u), s2, i >= 8u) >> ((i & 3u) * 8u)) & 0xffu;
}

// Scale and min of sub-block j from the scale words (ggml get_scale_min_k4, register form).
fn scale_min_w(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(sbyte(s0, s1, s2, j) & 63u), f32(sbyte(s0, s1, s2, j + 4u) & 63u));
    }
    let a = sbyte(s0, s1, s2, j + 4u);
    let sc = (a & 0xfu) | ((sbyte(s0, s1, s2, j - 4u) >> 6u) << 4u);
    let m = (a >> 4u) | ((sbyte(s0, s1, s2, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

// Q4_K/Q5_K super-block whose first word is `wi` (d and dmin, then the 12 scale bytes): scale and min of
// sub-block j, already multiplied by d and dmin. Shared by `dq4` and `dotu`.
fn kscale(wi: u32, j: u32) -> vec2<f32> {
    let dm = unpack2x16float(W[wi]);
    return dm * scale_min_w(W[wi + 1u], W[wi + 2u], W[wi + 3u], j);
}

// `kscale` of the sub-block pair g (sub-blocks 2g and 2g + 1) one `dotu` unit covers, each header word
// loaded once.
fn kpair_scales(wi: u32, g: u32) -> vec4<f32> {
    let dm = unpack2x16float(W[wi]);
    let s0 = W[wi + 1u];
    let s1 = W[wi + 2u];
    let s2 = W[wi + 3u];
    return vec4<f32>(dm * scale_min_w(s0, s1, s2, 2u * g), dm * scale_min_w(s0, s1, s2, 2u * g + 1u));
}

// Q6_K: signed scale byte i (0..8) of a half block's two scale words.
fn sc6(s0: u32, s1: u32, i: u32) -> f32 {
    return f32(bitcast<i32>(select(s0, s1, i >= 4u) << (24u - (i & 3u) * 8u)) >> 24u);
}

// Q6_K: half block h (0/1) of the block at byte b (even). Streams (first word index): low quants of elements
// 0..32 and 64..96 (a0), of 32..64 and 96..128 (b0), high bits (h0); its 8 scale bytes (s0, s1) and d;
// `split` when b is 2 mod 4 (words re-joined with `join16`). Shared by `dotu` and `dotr`.
struct Q6Half {
    a0: u32,
    b0: u32,
    h0: u32,
    s0: u32,
    s1: u32,
    d: f32,
    split: bool,
}

fn q6_half(b: u32, h: u32) -> Q6Half {
    let split = (b & 2u) != 0u;
    let a0 = (b + 64u * h) >> 2u;
    let c0 = (b + 192u + 8u * h) >> 2u;
    let dw = W[(b + 208u) >> 2u];
    return Q6Half(
        a0,
        a0 + 8u,
        (b + 128u + 32u * h) >> 2u,
        join16(W[c0], W[c0 + 1u], split),
        join16(W[c0 + 1u], W[c0 + 2u], split),
        select(f16lo(dw), f16hi(dw), split),
        split,
    );
}

// Q6_K: 4 signed values from 4 low-quant bytes `q` (their nibble at `qs`) and 4 high-bit bytes `hh` (their
// 2 bits at `hs`).
fn q6v(q: u32, qs: u32, hh: u32, hs: u32) -> vec4<f32> {
    return u8x4(((q >> qs) & 0x0f0f0f0fu) | (((hh >> hs) & 0x03030303u) << 4u)) - vec4<f32>(32.0);
}

//#dot F32
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + u * 32u;
    for (var k = 0u; k < 8u; k++) {
        let i = wi + 4u * k;
        let w = vec4<f32>(bitcast<f32>(W[i]), bitcast<f32>(W[i + 1u]), bitcast<f32>(W[i + 2u]), bitcast<f32>(W[i + 3u]));
        acc4(xe + 4u * k, w);
    }
}
//#type F32
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + e;
    return vec4<f32>(bitcast<f32>(W[i]), bitcast<f32>(W[i + 1u]), bitcast<f32>(W[i + 2u]), bitcast<f32>(W[i + 3u]));
}
//#dot F16
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + u * 16u;
    for (var k = 0u; k < 8u; k++) {
        let i = wi + 2u * k;
        acc4(xe + 4u * k, vec4<f32>(unpack2x16float(W[i]), unpack2x16float(W[i + 1u])));
    }
}
//#type F16
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + (e >> 1u);
    return vec4<f32>(unpack2x16float(W[i]), unpack2x16float(W[i + 1u]));
}
//#dot BF16
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + u * 16u;
    for (var k = 0u; k < 8u; k++) {
        let a = W[wi + 2u * k];
        let b = W[wi + 2u * k + 1u];
        let w = vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
        acc4(xe + 4u * k, w);
    }
}
//#type BF16
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + (e >> 1u);
    let a = W[i];
    let b = W[i + 1u];
    return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
}
//#dot Q8_0
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let b = rb + u * 34u;
    let split = (b & 2u) == 0u;
    let dw = W[b >> 2u];
    let d = select(f16hi(dw), f16lo(dw), split);
    let s = (b + 2u) >> 2u;
    var prev = W[s];
    for (var k = 0u; k < 8u; k++) {
        let next = W[s + 1u + k];
        acc4(xe + 4u * k, d * i8x4(join16(prev, next, split)));
        prev = next;
    }
}
//#type Q8_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 34u;
    return f16at(blk) * i8x4(rd32(blk + 2u + (e & 31u)));
}
//#dot Q4_0
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let b = rb + u * 18u;
    let split = (b & 2u) == 0u;
    let dw = W[b >> 2u];
    let d = select(f16hi(dw), f16lo(dw), split);
    let s = (b + 2u) >> 2u;
    var prev = W[s];
    for (var k = 0u; k < 4u; k++) {
        let next = W[s + 1u + k];
        let q = join16(prev, next, split);
        acc4(xe + 4u * k, d * (u8x4(q & 0x0f0f0f0fu) - vec4<f32>(8.0)));
        acc4(xe + 16u + 4u * k, d * (u8x4((q >> 4u) & 0x0f0f0f0fu) - vec4<f32>(8.0)));
        prev = next;
    }
}
//#type Q4_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 18u;
    let i = e & 31u;
    let q = (rd32(blk + 2u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    return f16at(blk) * (u8x4(q) - vec4<f32>(8.0));
}
//#dot Q4_1
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + u * 5u;
    let dm = unpack2x16float(W[wi]);
    for (var k = 0u; k < 4u; k++) {
        let q = W[wi + 1u + k];
        acc4(xe + 4u * k, dm.x * u8x4(q & 0x0f0f0f0fu) + vec4<f32>(dm.y));
        acc4(xe + 16u + 4u * k, dm.x * u8x4((q >> 4u) & 0x0f0f0f0fu) + vec4<f32>(dm.y));
    }
}
//#type Q4_1
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 20u;
    let i = e & 31u;
    let q = (rd32(blk + 4u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    return f16at(blk) * u8x4(q) + vec4<f32>(f16at(blk + 2u));
}
//#dot Q5_0
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let b = rb + u * 22u;
    let split = (b & 2u) == 0u;
    let dw = W[b >> 2u];
    let d = select(f16hi(dw), f16lo(dw), split);
    let s = (b + 2u) >> 2u;
    var prev = W[s];
    var next = W[s + 1u];
    let qh = join16(prev, next, split);
    prev = next;
    for (var k = 0u; k < 4u; k++) {
        next = W[s + 2u + k];
        let q = join16(prev, next, split);
        let lo = (q & 0x0f0f0f0fu) | hi4(qh, 4u * k);
        let hi = ((q >> 4u) & 0x0f0f0f0fu) | hi4(qh, 16u + 4u * k);
        acc4(xe + 4u * k, d * (u8x4(lo) - vec4<f32>(16.0)));
        acc4(xe + 16u + 4u * k, d * (u8x4(hi) - vec4<f32>(16.0)));
        prev = next;
    }
}
//#type Q5_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 22u;
    let i = e & 31u;
    let lo = (rd32(blk + 6u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    let q = lo | hi4(rd32(blk + 2u), i);
    return f16at(blk) * (u8x4(q) - vec4<f32>(16.0));
}
//#dot Q4_K
const UNIT: u32 = 64u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + (u >> 2u) * 36u;
    let g = u & 3u;
    let sc = kpair_scales(wi, g);
    let ma = vec4<f32>(sc.y);
    let mb = vec4<f32>(sc.w);
    for (var k = 0u; k < 8u; k++) {
        let q = W[wi + 4u + 8u * g + k];
        acc4(xe + 4u * k, sc.x * u8x4(q & 0x0f0f0f0fu) - ma);
        acc4(xe + 32u + 4u * k, sc.z * u8x4((q >> 4u) & 0x0f0f0f0fu) - mb);
    }
}
//#dotc Q4_K
// Cooperative rows (several lanes per row, GPUs): a unit is 16 elements, two quant words of one sub-block
// pair, so the 16 lanes of a super-block read its 32 quant words side by side (one 128-byte run per load
// instruction) instead of each lane walking 8 words 32 bytes apart from its neighbours. The H200 profile
// had the 64-element unit at ~430 GB/s (tests/bench/results/h200-2026-11-30-run2-profile.md).
const UNIT: u32 = 16u;
fn dotu(rb: u32, u: u32) {
    let sb = u >> 4u;
    let j = u & 15u;
    let g = j >> 2u;
    let k0 = (j & 3u) * 2u;
    let wi = (rb >> 2u) + sb * 36u;
    let sc = kpair_scales(wi, g);
    let ma = vec4<f32>(sc.y);
    let mb = vec4<f32>(sc.w);
    let xe = sb * 256u + g * 64u;
    for (var k = k0; k < k0 + 2u; k++) {
        let q = W[wi + 4u + 8u * g + k];
        acc4(xe + 4u * k, sc.x * u8x4(q & 0x0f0f0f0fu) - ma);
        acc4(xe + 32u + 4u * k, sc.z * u8x4((q >> 4u) & 0x0f0f0f0fu) - mb);
    }
}
//#dotv Q4_K
// Subgroup rows (GPUs with subgroups): a unit is 32 elements taken from one 16-byte load. A super-block is
// 144 bytes = 9 vec4s (d/dmin and the 12 scale bytes, then 8 of quants) and a Q4_K row is whole
// super-blocks, so every block starts 16-byte aligned and `W4` (binding 5, the same buffer) reads it
// directly: 8 lanes cover a super-block's 128 quant bytes side by side, and the header vec4 they share is
// one broadcast load. Vec4 j holds half h = j & 1 of sub-block pair g = j >> 1: its low nibbles are elements
// 64g + 16h .., its high nibbles 64g + 32 + 16h .. .
const UNIT: u32 = 32u;
fn dotu(rb: u32, u: u32) {
    let sb = u >> 3u;
    let j = u & 7u;
    let g = j >> 1u;
    let b4 = (rb >> 4u) + sb * 9u;
    let hdr = W4[b4];
    let dm = unpack2x16float(hdr.x);
    let lo = dm * scale_min_w(hdr.y, hdr.z, hdr.w, 2u * g);
    let hi = dm * scale_min_w(hdr.y, hdr.z, hdr.w, 2u * g + 1u);
    let q = W4[b4 + 1u + j];
    let xe = sb * 256u + g * 64u + (j & 1u) * 16u;
    let mlo = vec4<f32>(lo.y);
    let mhi = vec4<f32>(hi.y);
    for (var k = 0u; k < 4u; k++) {
        acc4(xe + 4u * k, lo.x * u8x4(q[k] & 0x0f0f0f0fu) - mlo);
        acc4(xe + 32u + 4u * k, hi.x * u8x4((q[k] >> 4u) & 0x0f0f0f0fu) - mhi);
    }
}
//#dotr Q4_K
// `dotv`'s unit for RSG rows at once (subgroup shapes `ROWSxLANESsN`): its 8 vec4s of x are read once for
// all of them, and each lane has RSG independent 16-byte weight loads in flight. On an H200 the one-row
// kernels read Q4_K at ~530 GB/s, an eighth of the streaming-read kernel: per 16 weight bytes a lane loads
// 128 bytes of x, so x, not the weights, fills the load path, and one weight load per trip leaves the
// memory system idle (tests/bench/results/h200-2026-11-30-run4-full.md). Rows past the end repeat the last
// row (their sums are dropped).
const RUNIT: u32 = 32u;
fn dotr(r0: u32, u: u32) {
    let sb = u >> 3u;
    let j = u & 7u;
    let g = j >> 1u;
    let xe = xbase[0] + sb * 256u + g * 64u + (j & 1u) * 16u;
    var xl: array<vec4<f32>, 4>;
    var xh: array<vec4<f32>, 4>;
    for (var k = 0u; k < 4u; k++) {
        xl[k] = xv4(xe + 4u * k);
        xh[k] = xv4(xe + 32u + 4u * k);
    }
    for (var s = 0u; s < RSG; s++) {
        let r = min(r0 + s, P.n_rows - 1u);
        let b4 = ((r * P.row_bytes) >> 4u) + sb * 9u;
        let hdr = W4[b4];
        let q = W4[b4 + 1u + j];
        let dm = unpack2x16float(hdr.x);
        let lo = dm * scale_min_w(hdr.y, hdr.z, hdr.w, 2u * g);
        let hi = dm * scale_min_w(hdr.y, hdr.z, hdr.w, 2u * g + 1u);
        let mlo = vec4<f32>(lo.y);
        let mhi = vec4<f32>(hi.y);
        var a = 0.0;
        for (var k = 0u; k < 4u; k++) {
            a += dot(lo.x * u8x4(q[k] & 0x0f0f0f0fu) - mlo, xl[k]);
            a += dot(hi.x * u8x4((q[k] >> 4u) & 0x0f0f0f0fu) - mhi, xh[k]);
        }
        accr[s] += a;
    }
}
//#type Q4_K
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 8u) * 144u;
    let w = e & 255u;
    let l = w & 63u;
    let q = (rd32(blk + 16u + (w >> 6u) * 32u + (l & 31u)) >> select(0u, 4u, l >= 32u)) & 0x0f0f0f0fu;
    let sm = kscale(blk >> 2u, w >> 5u);
    return sm.x * u8x4(q) - vec4<f32>(sm.y);
}
//#dot Q5_K
const UNIT: u32 = 64u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let wi = (rb >> 2u) + (u >> 2u) * 44u;
    let g = u & 3u;
    let sc = kpair_scales(wi, g);
    let ma = vec4<f32>(sc.y);
    let mb = vec4<f32>(sc.w);
    for (var k = 0u; k < 8u; k++) {
        let hb = W[wi + 4u + k];
        let q = W[wi + 12u + 8u * g + k];
        let lo = (q & 0x0f0f0f0fu) | (((hb >> (2u * g)) & 0x01010101u) << 4u);
        let hi = ((q >> 4u) & 0x0f0f0f0fu) | (((hb >> (2u * g + 1u)) & 0x01010101u) << 4u);
        acc4(xe + 4u * k, sc.x * u8x4(lo) - ma);
        acc4(xe + 32u + 4u * k, sc.z * u8x4(hi) - mb);
    }
}
//#type Q5_K
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 8u) * 176u;
    let w = e & 255u;
    let g = w >> 6u;
    let l = w & 63u;
    let lo = (rd32(blk + 48u + g * 32u + (l & 31u)) >> select(0u, 4u, l >= 32u)) & 0x0f0f0f0fu;
    let hb = rd32(blk + 16u + (l & 31u));
    // Bit 2g (first 32 of the group) or 2g+1 (second 32) of each qh byte; spread it to bit 4 of each lane.
    let bit = 2u * g + select(0u, 1u, l >= 32u);
    let h = ((hb >> bit) & 0x01010101u) << 4u;
    let sm = kscale(blk >> 2u, w >> 5u);
    return sm.x * u8x4(lo | h) - vec4<f32>(sm.y);
}
//#dot Q6_K
const UNIT: u32 = 128u;
fn dotu(rb: u32, u: u32) {
    let xe = u * UNIT;
    let q = q6_half(rb + (u >> 1u) * 210u, u & 1u);
    let d = q.d;
    var pa = W[q.a0];
    var pb = W[q.b0];
    var ph = W[q.h0];
    for (var k = 0u; k < 8u; k++) {
        let na = W[q.a0 + 1u + k];
        let nb = W[q.b0 + 1u + k];
        let nh = W[q.h0 + 1u + k];
        let qa = join16(pa, na, q.split);
        let qb = join16(pb, nb, q.split);
        let hh = join16(ph, nh, q.split);
        let hs = k >> 2u;
        acc4(xe + 4u * k, (d * sc6(q.s0, q.s1, hs)) * q6v(qa, 0u, hh, 0u));
        acc4(xe + 32u + 4u * k, (d * sc6(q.s0, q.s1, 2u + hs)) * q6v(qb, 0u, hh, 2u));
        acc4(xe + 64u + 4u * k, (d * sc6(q.s0, q.s1, 4u + hs)) * q6v(qa, 4u, hh, 4u));
        acc4(xe + 96u + 4u * k, (d * sc6(q.s0, q.s1, 6u + hs)) * q6v(qb, 4u, hh, 6u));
        pa = na;
        pb = nb;
        ph = nh;
    }
}
//#dotr Q6_K
// RSG rows at once (subgroup shapes `ROWSxLANESsN`), 16 elements per unit: word k (0..8) of one half block's
// three quant streams, as in `dotu`, so the 8 lanes of a half block read its words side by side instead of
// each lane walking a whole half block 105 bytes from its neighbours; x's 4 vec4s are read once for all RSG
// rows. Rows past the end repeat the last row (their sums are dropped).
const RUNIT: u32 = 16u;
fn dotr(r0: u32, u: u32) {
    let hb = u >> 3u;
    let k = u & 7u;
    let h = hb & 1u;
    let hs = k >> 2u;
    let xe = xbase[0] + hb * 128u + 4u * k;
    let x0 = xv4(xe);
    let x1 = xv4(xe + 32u);
    let x2 = xv4(xe + 64u);
    let x3 = xv4(xe + 96u);
    for (var s = 0u; s < RSG; s++) {
        let r = min(r0 + s, P.n_rows - 1u);
        let q = q6_half(r * P.row_bytes + (hb >> 1u) * 210u, h);
        let qa = join16(W[q.a0 + k], W[q.a0 + k + 1u], q.split);
        let qb = join16(W[q.b0 + k], W[q.b0 + k + 1u], q.split);
        let hh = join16(W[q.h0 + k], W[q.h0 + k + 1u], q.split);
        accr[s] += q.d
            * (sc6(q.s0, q.s1, hs) * dot(q6v(qa, 0u, hh, 0u), x0)
                + sc6(q.s0, q.s1, 2u + hs) * dot(q6v(qb, 0u, hh, 2u), x1)
                + sc6(q.s0, q.s1, 4u + hs) * dot(q6v(qa, 4u, hh, 4u), x2)
                + sc6(q.s0, q.s1, 6u + hs) * dot(q6v(qb, 4u, hh, 6u), x3));
    }
}
//#type Q6_K
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 8u) * 210u;
    let w = e & 255u;
    let h = w >> 7u;
    let qd = (w & 127u) >> 5u;
    let l = w & 31u;
    let lo = (rd32(blk + 64u * h + (qd & 1u) * 32u + l) >> ((qd >> 1u) * 4u)) & 0x0f0f0f0fu;
    let hi = (rd32(blk + 128u + 32u * h + l) >> (2u * qd)) & 0x03030303u;
    let sc = f32(bitcast<i32>(rd8(blk + 192u + (w >> 4u)) << 24u) >> 24u);
    return (f16at(blk + 208u) * sc) * (u8x4(lo | (hi << 4u)) - vec4<f32>(32.0));
}
//#end
