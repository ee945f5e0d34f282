// Packed GGUF block decoding, spliced into every kernel that reads a quantized weight.
//
// The including kernel declares `W: array<u32>` (the raw bytes of one part of a weight, uploaded as-is).
// Blocks are 2-byte aligned at best (18, 20, 22, 34, 210 bytes...), so bytes are extracted from the u32 words
// instead of reinterpreting them. `dq4(rb, e)` returns elements e..e+4 (e a multiple of 4) of the row whose
// first byte is `rb`; four consecutive elements always share one block and one scale, which keeps every
// variant branch-free per group.

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

// 6-bit scale and min `j` of a Q4_K/Q5_K block whose 12 scale bytes start at `s` (ggml get_scale_min_k4).
fn scale_min_k4(s: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(rd8(s + j) & 63u), f32(rd8(s + j + 4u) & 63u));
    }
    let a = rd8(s + j + 4u);
    let sc = (a & 0xfu) | ((rd8(s + j - 4u) >> 6u) << 4u);
    let m = (a >> 4u) | ((rd8(s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}

//#type F32
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + e;
    return vec4<f32>(bitcast<f32>(W[i]), bitcast<f32>(W[i + 1u]), bitcast<f32>(W[i + 2u]), bitcast<f32>(W[i + 3u]));
}
//#type F16
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + (e >> 1u);
    return vec4<f32>(unpack2x16float(W[i]), unpack2x16float(W[i + 1u]));
}
//#type BF16
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let i = (rb >> 2u) + (e >> 1u);
    let a = W[i];
    let b = W[i + 1u];
    return vec4<f32>(bitcast<f32>(a << 16u), bitcast<f32>(a & 0xffff0000u), bitcast<f32>(b << 16u), bitcast<f32>(b & 0xffff0000u));
}
//#type Q8_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 34u;
    return f16at(blk) * i8x4(rd32(blk + 2u + (e & 31u)));
}
//#type Q4_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 18u;
    let i = e & 31u;
    let q = (rd32(blk + 2u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    return f16at(blk) * (u8x4(q) - vec4<f32>(8.0));
}
//#type Q4_1
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 20u;
    let i = e & 31u;
    let q = (rd32(blk + 4u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    return f16at(blk) * u8x4(q) + vec4<f32>(f16at(blk + 2u));
}
//#type Q5_0
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 5u) * 22u;
    let i = e & 31u;
    let lo = (rd32(blk + 6u + (i & 15u)) >> select(0u, 4u, i >= 16u)) & 0x0f0f0f0fu;
    let q = lo | hi4(rd32(blk + 2u), i);
    return f16at(blk) * (u8x4(q) - vec4<f32>(16.0));
}
//#type Q4_K
fn dq4(rb: u32, e: u32) -> vec4<f32> {
    let blk = rb + (e >> 8u) * 144u;
    let w = e & 255u;
    let l = w & 63u;
    let q = (rd32(blk + 16u + (w >> 6u) * 32u + (l & 31u)) >> select(0u, 4u, l >= 32u)) & 0x0f0f0f0fu;
    let sm = scale_min_k4(blk + 4u, w >> 5u);
    let d = f16at(blk) * sm.x;
    let m = f16at(blk + 2u) * sm.y;
    return d * u8x4(q) - vec4<f32>(m);
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
    let sm = scale_min_k4(blk + 4u, w >> 5u);
    let d = f16at(blk) * sm.x;
    let m = f16at(blk + 2u) * sm.y;
    return d * u8x4(lo | h) - vec4<f32>(m);
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
