//! CPU quantization and dequantization for the ggml block formats MedDr ships.
//!
//! The quantizers reproduce ggml's reference (`quantize_row_*_ref` in `ggml-quants.c`, which is what
//! `llama-quantize` runs when no importance matrix is given) bit for bit: same f32 operations in the same
//! order, the same `nearest_int` magic-number rounding, the same scale search constants. The dequantizers
//! reproduce `dequantize_row_*`. Files produced here are therefore byte-identical to llama.cpp's.
//!
//! Deliberate differences from ggml, all on inputs where ggml would silently write garbage:
//! * NaN/±Inf input is rejected ([`QuantError::NonFinite`]).
//! * F16/BF16 values that round to infinity are rejected ([`QuantError::OutOfRange`]).
//! * A block whose f16 scale/min would round to infinity is rejected ([`QuantError::ScaleOverflow`]).
//! * k-quant blocks with `|x| > `[`KQUANT_MAX_ABS`] are rejected ([`QuantError::OutOfRange`]): beyond it
//!   ggml's f32 intermediate sums may overflow and its output is meaningless; no such block has a
//!   representable k-quant encoding anyway.
//!
//! "ggml's reference" means the C code evaluated with IEEE f32 semantics and no fused multiply-add,
//! which is also what gguf-py computes. A llama.cpp built with `-march=native` (GCC contracts `a*b+c`
//! into FMA by default) produces k-quant bytes that differ in ~1% of blocks from its own portable
//! build; those bytes are not reproducible across builds, so the unfused result is the one to match.
//! Float→int8 conversions of NaN/∞ (only reachable for blocks with amax below ~1e-37, whose stored
//! scale is 0) follow x86-64 (`cvttss2si`, giving 0).
//!
//! All functions are pure and allocation-free per block, so callers can quantize rows in parallel.
//! Byte layouts are documented on [`QuantType`]; everything is little-endian.

mod bound;
mod float;
mod kquants;
mod legacy;

pub use bound::max_abs_error_bound;

/// Elements per k-quant super-block (`QK_K`).
pub const QK_K: usize = 256;

/// Largest input magnitude accepted for Q4_K/Q5_K/Q6_K blocks (see crate docs).
pub const KQUANT_MAX_ABS: f32 = 1e10;

/// The block formats this crate supports.
///
/// Layouts (offsets in bytes, `f16` = IEEE half, all little-endian):
///
/// | type | block | bytes | layout |
/// |------|-------|-------|--------|
/// | F32  | 1   | 4   | `f32` |
/// | F16  | 1   | 2   | `f16` (round-to-nearest-even) |
/// | BF16 | 1   | 2   | upper 16 bits of the f32, rounded to nearest even |
/// | Q8_0 | 32  | 34  | `d: f16` @0, `qs: [i8; 32]` @2; `x = d·q` |
/// | Q4_0 | 32  | 18  | `d: f16` @0, `qs: [u8; 16]` @2; element `j<16` is the low nibble of `qs[j]`, element `j+16` the high nibble; `x = d·(q-8)` |
/// | Q4_1 | 32  | 20  | `d: f16` @0, `m: f16` @2, `qs: [u8; 16]` @4 (nibbles as Q4_0); `x = d·q + m` |
/// | Q5_0 | 32  | 22  | `d: f16` @0, `qh: u32` @2 (bit `j` = 5th bit of element `j`), `qs: [u8; 16]` @6 (low nibbles as Q4_0); `x = d·(q-16)` |
/// | Q4_K | 256 | 144 | `d: f16` @0, `dmin: f16` @2, `scales: [u8; 12]` @4 (eight 6-bit scales and eight 6-bit mins, packed as in `get_scale_min_k4`), `qs: [u8; 128]` @16: for each 64-element group `g`, `qs[32g+l]` holds element `64g+l` (low nibble) and `64g+32+l` (high nibble); sub-block `j` of 32 gives `x = d·sc_j·q − dmin·m_j` |
/// | Q5_K | 256 | 176 | as Q4_K, plus `qh: [u8; 32]` @16 (bit `2g` of `qh[l]` is the 5th bit of element `64g+l`, bit `2g+1` that of `64g+32+l`), `qs: [u8; 128]` @48 |
/// | Q6_K | 256 | 210 | `ql: [u8; 128]` @0, `qh: [u8; 64]` @128, `scales: [i8; 16]` @192, `d: f16` @208; for each half `h` of 128 elements and `l<32`: low nibbles of `ql[64h+l]`/`ql[64h+32+l]` hold elements `128h+l`/`128h+32+l`, their high nibbles `128h+64+l`/`128h+96+l`; `qh[32h+l]` bits 0-1, 2-3, 4-5, 6-7 are the upper two bits of those four elements in the order `l, 32+l, 64+l, 96+l`; sub-block `j` of 16 gives `x = d·scales_j·(q−32)` |
// ggml's spelling (Q4_K) keeps names greppable against llama.cpp.
pub use meddr_gguf::GgmlType;

#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl QuantType {
    /// Every supported type, in ggml id order.
    pub const ALL: [QuantType; 10] = [
        QuantType::F32,
        QuantType::F16,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q5_K,
        QuantType::Q6_K,
        QuantType::BF16,
    ];

    /// The GGUF type this format is; sizes, ids and names come from that one table.
    pub const fn ggml(self) -> GgmlType {
        match self {
            QuantType::F32 => GgmlType::F32,
            QuantType::F16 => GgmlType::F16,
            QuantType::BF16 => GgmlType::BF16,
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q4_0 => GgmlType::Q4_0,
            QuantType::Q4_1 => GgmlType::Q4_1,
            QuantType::Q5_0 => GgmlType::Q5_0,
            QuantType::Q4_K => GgmlType::Q4_K,
            QuantType::Q5_K => GgmlType::Q5_K,
            QuantType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// Inverse of [`QuantType::ggml`]; `None` for formats this crate does not support.
    pub fn from_ggml(t: GgmlType) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|q| q.ggml() == t)
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.ggml().block_size() as usize
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.ggml().type_size() as usize
    }

    /// ggml's type name (`ggml_type_name`).
    pub fn name(self) -> &'static str {
        self.ggml().name()
    }

    /// The `ggml_type` enum value stored in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        self.ggml().id()
    }

    /// Inverse of [`QuantType::ggml_id`]; `None` for ids this crate does not support.
    pub fn from_ggml_id(id: u32) -> Option<QuantType> {
        GgmlType::from_id(id).ok().and_then(QuantType::from_ggml)
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a (de)quantization request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    #[error("element count {len} is not a multiple of the {ty} block size {block_size}")]
    NotBlockMultiple {
        ty: QuantType,
        len: usize,
        block_size: usize,
    },
    #[error("input element {index} is not finite ({value})")]
    NonFinite { index: usize, value: f32 },
    #[error("input element {index} = {value:e} is out of range for {ty}")]
    OutOfRange {
        ty: QuantType,
        index: usize,
        value: f32,
    },
    #[error("{ty} block {block} needs a scale of {scale:e}, which overflows f16")]
    ScaleOverflow {
        ty: QuantType,
        block: usize,
        scale: f32,
    },
    #[error("{ty} data for {n_elems} elements must be {expected} bytes, got {len}")]
    SizeMismatch {
        ty: QuantType,
        n_elems: usize,
        expected: usize,
        len: usize,
    },
    #[error("{ty} size of {n_elems} elements overflows usize")]
    SizeOverflow { ty: QuantType, n_elems: usize },
}

/// Bytes needed to store `n_elems` elements of `ty`.
pub fn quantized_size(ty: QuantType, n_elems: usize) -> Result<usize, QuantError> {
    let block_size = ty.block_size();
    if n_elems % block_size != 0 {
        return Err(QuantError::NotBlockMultiple {
            ty,
            len: n_elems,
            block_size,
        });
    }
    (n_elems / block_size)
        .checked_mul(ty.type_size())
        .ok_or(QuantError::SizeOverflow { ty, n_elems })
}

/// Quantizes `src` and appends the encoded blocks to `dst`.
///
/// On error `dst` is left as it was.
pub fn quantize(ty: QuantType, src: &[f32], dst: &mut Vec<u8>) -> Result<(), QuantError> {
    let n_bytes = quantized_size(ty, src.len())?;
    let start = dst.len();
    let end = start.checked_add(n_bytes).ok_or(QuantError::SizeOverflow {
        ty,
        n_elems: src.len(),
    })?;
    dst.resize(end, 0);
    let res = quantize_into(ty, src, &mut dst[start..]);
    if res.is_err() {
        dst.truncate(start);
    }
    res
}

/// Quantizes `src` into `dst`, which must be exactly [`quantized_size`] bytes (useful for writing
/// straight into a pre-sized or memory-mapped output from several threads).
pub fn quantize_into(ty: QuantType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let expected = quantized_size(ty, src.len())?;
    if dst.len() != expected {
        return Err(QuantError::SizeMismatch {
            ty,
            n_elems: src.len(),
            expected,
            len: dst.len(),
        });
    }
    match ty {
        QuantType::F32 => float::quantize_f32(src, dst),
        QuantType::F16 => float::quantize_f16(src, dst),
        QuantType::BF16 => float::quantize_bf16(src, dst),
        QuantType::Q8_0 => blocks::<32, 34>(ty, src, dst, legacy::quantize_q8_0),
        QuantType::Q4_0 => blocks::<32, 18>(ty, src, dst, legacy::quantize_q4_0),
        QuantType::Q4_1 => blocks::<32, 20>(ty, src, dst, legacy::quantize_q4_1),
        QuantType::Q5_0 => blocks::<32, 22>(ty, src, dst, legacy::quantize_q5_0),
        QuantType::Q4_K => kblocks::<144>(ty, src, dst, kquants::quantize_q4_k),
        QuantType::Q5_K => kblocks::<176>(ty, src, dst, kquants::quantize_q5_k),
        QuantType::Q6_K => kblocks::<210>(ty, src, dst, kquants::quantize_q6_k),
    }
}

/// Decodes `src` (exactly `quantized_size(ty, dst.len())` bytes) into `dst`.
///
/// Any byte pattern is accepted (non-finite scales decode to non-finite values, as in ggml).
pub fn dequantize(ty: QuantType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let expected = quantized_size(ty, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::SizeMismatch {
            ty,
            n_elems: dst.len(),
            expected,
            len: src.len(),
        });
    }
    match ty {
        QuantType::F32 => float::dequantize_f32(src, dst),
        QuantType::F16 => float::dequantize_f16(src, dst),
        QuantType::BF16 => float::dequantize_bf16(src, dst),
        QuantType::Q8_0 => deblocks::<32, 34>(src, dst, legacy::dequantize_q8_0),
        QuantType::Q4_0 => deblocks::<32, 18>(src, dst, legacy::dequantize_q4_0),
        QuantType::Q4_1 => deblocks::<32, 20>(src, dst, legacy::dequantize_q4_1),
        QuantType::Q5_0 => deblocks::<32, 22>(src, dst, legacy::dequantize_q5_0),
        QuantType::Q4_K => deblocks::<256, 144>(src, dst, kquants::dequantize_q4_k),
        QuantType::Q5_K => deblocks::<256, 176>(src, dst, kquants::dequantize_q5_k),
        QuantType::Q6_K => deblocks::<256, 210>(src, dst, kquants::dequantize_q6_k),
    }
    Ok(())
}

/// Outcome of encoding one block: `Err(scale)` when an f16 scale would be infinite.
pub(crate) type BlockResult = Result<(), f32>;

/// Index and value of the first non-finite element, if any.
#[inline]
fn find_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    // Branch-free pass first so the common all-finite case vectorises.
    let any_bad = x.iter().fold(false, |acc, v| {
        acc | (v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
    });
    if !any_bad {
        return None;
    }
    x.iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(i, v)| (i, *v))
}

fn blocks<const B: usize, const T: usize>(
    ty: QuantType,
    src: &[f32],
    dst: &mut [u8],
    f: fn(&[f32; B], &mut [u8; T]) -> BlockResult,
) -> Result<(), QuantError> {
    for (bi, (x, y)) in src.chunks_exact(B).zip(dst.chunks_exact_mut(T)).enumerate() {
        if let Some((i, value)) = find_non_finite(x) {
            return Err(QuantError::NonFinite {
                index: bi * B + i,
                value,
            });
        }
        let x: &[f32; B] = x.try_into().expect("chunks_exact yields B elements");
        let y: &mut [u8; T] = y.try_into().expect("chunks_exact_mut yields T bytes");
        f(x, y).map_err(|scale| QuantError::ScaleOverflow {
            ty,
            block: bi,
            scale,
        })?;
    }
    Ok(())
}

fn kblocks<const T: usize>(
    ty: QuantType,
    src: &[f32],
    dst: &mut [u8],
    f: fn(&[f32; QK_K], &mut [u8; T]) -> BlockResult,
) -> Result<(), QuantError> {
    for (bi, x) in src.chunks_exact(QK_K).enumerate() {
        if let Some((i, value)) = find_non_finite(x) {
            return Err(QuantError::NonFinite {
                index: bi * QK_K + i,
                value,
            });
        }
        if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| v.abs() > KQUANT_MAX_ABS) {
            return Err(QuantError::OutOfRange {
                ty,
                index: bi * QK_K + i,
                value: *v,
            });
        }
    }
    blocks::<QK_K, T>(ty, src, dst, f)
}

fn deblocks<const B: usize, const T: usize>(
    src: &[u8],
    dst: &mut [f32],
    f: fn(&[u8; T], &mut [f32; B]),
) {
    for (x, y) in src.chunks_exact(T).zip(dst.chunks_exact_mut(B)) {
        let x: &[u8; T] = x.try_into().expect("chunks_exact yields T bytes");
        let y: &mut [f32; B] = y.try_into().expect("chunks_exact_mut yields B elements");
        f(x, y);
    }
}

/// f32 → IEEE half bits, round-to-nearest-even (ggml's `GGML_FP32_TO_FP16`).
#[inline(always)]
pub(crate) fn fp16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// IEEE half bits → f32 (exact).
#[inline(always)]
pub(crate) fn fp32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Rounds to nearest (ties to even) with ggml's magic-number trick; only meaningful for
/// |x| ≤ 2^22, but reproduces ggml's bits for any input.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let v = x + 12_582_912.0f32;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Stores an f16 scale, reporting the f32 value if it overflows.
#[inline(always)]
pub(crate) fn put_f16(dst: &mut [u8], x: f32) -> BlockResult {
    let h = fp16(x);
    if h & 0x7c00 == 0x7c00 {
        return Err(x);
    }
    dst[..2].copy_from_slice(&h.to_le_bytes());
    Ok(())
}

#[inline(always)]
pub(crate) fn get_f16(src: &[u8], at: usize) -> f32 {
    fp32(u16::from_le_bytes([src[at], src[at + 1]]))
}

#[cfg(test)]
mod tests {
    use super::nearest_int;

    #[test]
    fn nearest_int_is_ties_to_even_in_range() {
        let mut s = 0x1234_5678u32;
        for i in 0..200_000u32 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = if i % 2 == 0 {
                (s as f32 / u32::MAX as f32 - 0.5) * 8_000_000.0
            } else {
                // Exact halves.
                ((s >> 9) as i32 - (1 << 22)) as f32 * 0.5
            };
            if x.abs() <= 4_194_303.0 {
                assert_eq!(nearest_int(x), x.round_ties_even() as i32, "x = {x}");
            }
        }
        assert_eq!(
            (nearest_int(0.5), nearest_int(1.5), nearest_int(-2.5)),
            (0, 2, -2)
        );
    }
}
