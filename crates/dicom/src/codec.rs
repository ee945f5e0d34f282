//! One frame's samples: uncompressed (either byte order, 1–32 bits, both planar configurations,
//! YBR_FULL_422 expanded), RLE Lossless (own decoder), JPEG (jpeg-decoder), JPEG 2000 (openjp2).

use std::borrow::Cow;

use dicom_core::value::{DicomValueType, PrimitiveValue, Value};
use dicom_dictionary_std::tags;

use crate::parse::{ImageInfo, Parsed, Photometric};
use crate::syntax::{Codec, Syntax};
use crate::{DicomError, JpegFrameDecoder};

/// One decoded frame: `rows × columns × samples` stored values (raw bit patterns, not yet masked to Bits
/// Stored), interleaved, and the photometric interpretation they are now in.
pub(crate) struct Frame {
    pub samples: Vec<u32>,
    pub photometric: Photometric,
}

fn corrupt(detail: impl Into<String>) -> DicomError {
    DicomError::Corrupt {
        detail: detail.into(),
    }
}

pub(crate) fn decode_frame(
    p: &Parsed,
    info: &ImageInfo,
    frame: u32,
    jpeg: Option<JpegFrameDecoder>,
) -> Result<Frame, DicomError> {
    let elem = p.obj.get(tags::PIXEL_DATA).ok_or(DicomError::NoPixelData {
        detail: "there is no Pixel Data (7FE0,0010) element".into(),
    })?;
    match (elem.value(), p.syntax) {
        (Value::Primitive(v), Syntax::Native { little_endian, .. }) => {
            let bytes = native_bytes(v, little_endian, info.bits_allocated)?;
            unpack(&bytes, info, info.frames, frame, little_endian)
        }
        (Value::Primitive(v), Syntax::Deflated) => {
            let bytes = native_bytes(v, true, info.bits_allocated)?;
            unpack(&bytes, info, info.frames, frame, true)
        }
        (Value::PixelSequence(seq), Syntax::Encapsulated(codec)) => {
            let data = frame_data(
                seq.fragments(),
                seq.offset_table(),
                info.frames,
                frame,
                codec,
            )?;
            match codec {
                Codec::Uncompressed => unpack(&data, info, 1, 0, true),
                Codec::Rle => decode_rle(&data, info),
                Codec::Jpeg => decode_jpeg(&data, info, p, jpeg),
                Codec::Jpeg2000 => decode_j2k(&data, info, p),
            }
        }
        (Value::PixelSequence(_), _) => Err(corrupt(format!(
            "the pixel data is encapsulated (fragments) but the transfer syntax is {} ({})",
            p.ts_name, p.ts_uid
        ))),
        (Value::Primitive(_), _) => Err(corrupt(format!(
            "the pixel data is not encapsulated but the transfer syntax {} ({}) needs fragments",
            p.ts_name, p.ts_uid
        ))),
        (Value::Sequence(_), _) => Err(corrupt("Pixel Data (7FE0,0010) is a sequence")),
    }
}

/// `values` as bytes, each value little or big endian.
fn in_order<T: Copy, const N: usize>(
    values: &[T],
    little_endian: bool,
    le: fn(T) -> [u8; N],
    be: fn(T) -> [u8; N],
) -> Vec<u8> {
    let bytes = if little_endian { le } else { be };
    values.iter().flat_map(|&x| bytes(x)).collect()
}

/// The pixel data's bytes in file order. dicom-rs reads OW data as 16-bit words in the data set's byte
/// order; writing them back in that order restores the file's bytes. Big-endian 1- and 8-bit data in OW is
/// the exception (PS3.5 8.1.1: its samples are packed into little-endian-ordered words, as pydicom reads
/// it), so its words are written little endian.
fn native_bytes(
    v: &PrimitiveValue,
    little_endian: bool,
    bits: u16,
) -> Result<Cow<'_, [u8]>, DicomError> {
    let words_le = little_endian || bits <= 8;
    let out = match v {
        PrimitiveValue::U8(b) => Cow::Borrowed(&b[..]),
        PrimitiveValue::U16(w) => {
            Cow::Owned(in_order(w, words_le, u16::to_le_bytes, u16::to_be_bytes))
        }
        PrimitiveValue::I16(w) => {
            Cow::Owned(in_order(w, words_le, i16::to_le_bytes, i16::to_be_bytes))
        }
        PrimitiveValue::U32(w) => Cow::Owned(in_order(
            w,
            little_endian,
            u32::to_le_bytes,
            u32::to_be_bytes,
        )),
        PrimitiveValue::I32(w) => Cow::Owned(in_order(
            w,
            little_endian,
            i32::to_le_bytes,
            i32::to_be_bytes,
        )),
        PrimitiveValue::Empty => {
            return Err(DicomError::NoPixelData {
                detail: "Pixel Data (7FE0,0010) is empty".into(),
            })
        }
        other => {
            return Err(corrupt(format!(
                "Pixel Data (7FE0,0010) holds {:?} values, not bytes or words",
                other.value_type()
            )))
        }
    };
    Ok(out)
}

/// Samples stored per pixel: YBR_FULL_422 keeps two luma and one pair of chroma samples per two pixels.
fn stored_per_pixel(info: &ImageInfo) -> (u64, u64) {
    if info.photometric == Photometric::YbrFull422 {
        (2, 1)
    } else {
        (info.samples as u64, 1)
    }
}

/// Frame `frame` of `frames` uncompressed frames in `bytes`.
fn unpack(
    bytes: &[u8],
    info: &ImageInfo,
    frames: u32,
    frame: u32,
    little_endian: bool,
) -> Result<Frame, DicomError> {
    let px = info.rows as u64 * info.columns as u64;
    let (num, den) = stored_per_pixel(info);
    if info.photometric == Photometric::YbrFull422 && !px.is_multiple_of(2) {
        return Err(corrupt(format!(
            "YBR_FULL_422 needs an even number of pixels per frame, {} × {} is odd",
            info.rows, info.columns
        )));
    }
    let frame_samples = px * num / den;
    let bits = info.bits_allocated as u64;
    let frame_bits = frame_samples * bits;
    let needed = (frames as u64 * frame_bits).div_ceil(8);
    if (bytes.len() as u64) < needed {
        return Err(DicomError::PixelDataTooShort {
            needed,
            actual: bytes.len() as u64,
            detail: format!(
                "{frames} frame{} of {} × {} pixels, {} sample{} of {} bits each",
                if frames == 1 { "" } else { "s" },
                info.rows,
                info.columns,
                if info.photometric == Photometric::YbrFull422 {
                    "2".to_string()
                } else {
                    info.samples.to_string()
                },
                if num / den == 1 && info.photometric != Photometric::YbrFull422 {
                    ""
                } else {
                    "s"
                },
                bits
            ),
        });
    }
    let n = frame_samples as usize;
    let start_bit = frame as u64 * frame_bits;
    let raw: Vec<u32> = match info.bits_allocated {
        1 => (0..n as u64)
            .map(|i| {
                let b = start_bit + i;
                u32::from((bytes[(b / 8) as usize] >> (b % 8)) & 1)
            })
            .collect(),
        8 => bytes[(start_bit / 8) as usize..][..n]
            .iter()
            .map(|&b| u32::from(b))
            .collect(),
        16 => bytes[(start_bit / 8) as usize..][..2 * n]
            .chunks_exact(2)
            .map(|c| {
                let a = [c[0], c[1]];
                u32::from(if little_endian {
                    u16::from_le_bytes(a)
                } else {
                    u16::from_be_bytes(a)
                })
            })
            .collect(),
        _ => bytes[(start_bit / 8) as usize..][..4 * n]
            .chunks_exact(4)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3]];
                if little_endian {
                    u32::from_le_bytes(a)
                } else {
                    u32::from_be_bytes(a)
                }
            })
            .collect(),
    };
    if info.photometric == Photometric::YbrFull422 {
        // Y1 Y2 Cb Cr → Y1 Cb Cr Y2 Cb Cr (PS3.3 C.7.6.3.1.2).
        let samples = raw
            .chunks_exact(4)
            .flat_map(|q| [q[0], q[2], q[3], q[1], q[2], q[3]])
            .collect();
        return Ok(Frame {
            samples,
            photometric: Photometric::YbrFull,
        });
    }
    let samples = if info.samples == 3 && info.planar {
        let px = px as usize;
        (0..px)
            .flat_map(|i| [raw[i], raw[px + i], raw[2 * px + i]])
            .collect()
    } else {
        raw
    };
    Ok(Frame {
        samples,
        photometric: info.photometric,
    })
}

/// The bytes of frame `frame` from the fragments of encapsulated pixel data: the whole of one fragment per
/// frame when the counts agree, all fragments for a single frame, else the Basic Offset Table, else
/// (JPEG / JPEG 2000) the fragments that start a codestream.
fn frame_data<'a>(
    fragments: &'a [Vec<u8>],
    offsets: &[u32],
    frames: u32,
    frame: u32,
    codec: Codec,
) -> Result<Cow<'a, [u8]>, DicomError> {
    let f = frame as usize;
    if fragments.is_empty() {
        return Err(DicomError::NoPixelData {
            detail: "the encapsulated pixel data has no fragments".into(),
        });
    }
    if frames == 1 {
        return Ok(if fragments.len() == 1 {
            Cow::Borrowed(&fragments[0][..])
        } else {
            Cow::Owned(fragments.concat())
        });
    }
    if fragments.len() == frames as usize {
        return Ok(Cow::Borrowed(&fragments[f][..]));
    }
    if fragments.len() < frames as usize {
        return Err(corrupt(format!(
            "{} fragments of encapsulated pixel data cannot hold {frames} frames",
            fragments.len()
        )));
    }
    if offsets.len() == frames as usize {
        let start = offsets[f] as u64;
        let end = offsets.get(f + 1).map_or(u64::MAX, |&o| o as u64);
        let mut pos = 0u64;
        let mut out = Vec::new();
        for frag in fragments {
            if pos >= start && pos < end {
                out.extend_from_slice(frag);
            }
            pos += frag.len() as u64 + 8;
        }
        if out.is_empty() {
            return Err(corrupt(format!(
                "the Basic Offset Table's entry for frame {frame} points at no fragment"
            )));
        }
        return Ok(Cow::Owned(out));
    }
    let starts_codestream = |d: &[u8]| match codec {
        Codec::Jpeg => d.starts_with(&[0xFF, 0xD8]),
        Codec::Jpeg2000 => {
            d.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) || d.starts_with(b"\0\0\0\x0cjP  ")
        }
        _ => false,
    };
    let mut current: Option<usize> = None;
    let mut out = Vec::new();
    for frag in fragments {
        if starts_codestream(frag) {
            current = Some(current.map_or(0, |c| c + 1));
        }
        if current == Some(f) {
            out.extend_from_slice(frag);
        }
    }
    if out.is_empty() {
        return Err(corrupt(format!(
            "cannot tell which of the {} fragments hold frame {frame} (no usable Basic Offset Table)",
            fragments.len()
        )));
    }
    Ok(Cow::Owned(out))
}

/// RLE Lossless (PS3.5 Annex G): a 64-byte header of segment offsets, one PackBits segment per byte of each
/// sample, most significant byte first.
fn decode_rle(data: &[u8], info: &ImageInfo) -> Result<Frame, DicomError> {
    if info.bits_allocated == 1 {
        return Err(DicomError::Unsupported {
            detail: "RLE Lossless with Bits Allocated 1".into(),
        });
    }
    let px = info.rows as usize * info.columns as usize;
    let spp = info.samples as usize;
    let bps = info.bits_allocated as usize / 8;
    if data.len() < 64 {
        return Err(DicomError::Truncated {
            detail: format!("the RLE header is {} bytes, not 64", data.len()),
        });
    }
    let word = |i: usize| {
        u32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ]) as usize
    };
    let nseg = word(0);
    if nseg != spp * bps {
        return Err(corrupt(format!(
            "the RLE frame has {nseg} segments, {spp} sample{} of {} bits need {}",
            if spp == 1 { "" } else { "s" },
            info.bits_allocated,
            spp * bps
        )));
    }
    let offsets: Vec<usize> = (1..=nseg).map(word).collect();
    for (i, &o) in offsets.iter().enumerate() {
        let prev = if i == 0 { 64 } else { offsets[i - 1] };
        if o < prev || o > data.len() || (i == 0 && o != 64) {
            return Err(corrupt(format!(
                "RLE segment {i} starts at {o}, outside its frame of {} bytes",
                data.len()
            )));
        }
    }
    let mut samples = vec![0u32; px * spp];
    let mut buf = vec![0u8; px];
    for (seg, &start) in offsets.iter().enumerate() {
        let end = offsets.get(seg + 1).copied().unwrap_or(data.len());
        let got = packbits(&data[start..end], &mut buf);
        if got < px {
            return Err(DicomError::Truncated {
                detail: format!("RLE segment {seg} decodes to {got} bytes, the frame needs {px}"),
            });
        }
        let (s, byte) = (seg / bps, seg % bps);
        let shift = 8 * (bps - 1 - byte);
        for (i, &b) in buf.iter().enumerate() {
            samples[i * spp + s] |= u32::from(b) << shift;
        }
    }
    let photometric = match info.photometric {
        Photometric::YbrFull422 => Photometric::YbrFull,
        p => p,
    };
    Ok(Frame {
        samples,
        photometric,
    })
}

/// PackBits into `out`; returns how many bytes were written (stops when `out` is full).
fn packbits(src: &[u8], out: &mut [u8]) -> usize {
    let (mut i, mut o) = (0usize, 0usize);
    while i < src.len() && o < out.len() {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let k = (n as usize + 1).min(src.len() - i).min(out.len() - o);
            out[o..o + k].copy_from_slice(&src[i..i + k]);
            i += n as usize + 1;
            o += k;
        } else if n != -128 {
            let Some(&b) = src.get(i) else { break };
            i += 1;
            let k = (1 - n as isize) as usize;
            let k = k.min(out.len() - o);
            out[o..o + k].fill(b);
            o += k;
        }
    }
    o
}

/// What a JPEG codestream says about itself before its scan.
#[derive(Default, Debug)]
struct JpegHeader {
    jfif: bool,
    adobe: Option<u8>,
    ids: Vec<u8>,
    precision: u8,
    width: u16,
    height: u16,
    lossless: bool,
    sof: bool,
}

fn scan_jpeg(d: &[u8]) -> JpegHeader {
    let mut h = JpegHeader::default();
    if !d.starts_with(&[0xFF, 0xD8]) {
        return h;
    }
    let mut pos = 2usize;
    while pos + 4 <= d.len() {
        if d[pos] != 0xFF {
            break;
        }
        let m = d[pos + 1];
        if m == 0xFF {
            pos += 1;
            continue;
        }
        if m == 0xD8 || m == 0x01 || (0xD0..=0xD7).contains(&m) {
            pos += 2;
            continue;
        }
        if m == 0xDA || m == 0xD9 {
            break;
        }
        let len = u16::from_be_bytes([d[pos + 2], d[pos + 3]]) as usize;
        let Some(seg) = d.get(pos + 4..pos + 2 + len.max(2)) else {
            break;
        };
        match m {
            0xE0 if seg.starts_with(b"JFIF\0") => h.jfif = true,
            0xEE if seg.starts_with(b"Adobe") && seg.len() >= 12 => h.adobe = Some(seg[11]),
            0xC0..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC && seg.len() >= 6 && !h.sof => {
                h.sof = true;
                h.precision = seg[0];
                h.height = u16::from_be_bytes([seg[1], seg[2]]);
                h.width = u16::from_be_bytes([seg[3], seg[4]]);
                let nc = seg[5] as usize;
                h.ids = (0..nc)
                    .filter_map(|i| seg.get(6 + 3 * i).copied())
                    .collect();
                h.lossless = matches!(m, 0xC3 | 0xC7 | 0xCB | 0xCF);
            }
            _ => {}
        }
        pos += 2 + len;
    }
    h
}

fn decode_jpeg(
    data: &[u8],
    info: &ImageInfo,
    p: &Parsed,
    hook: Option<JpegFrameDecoder>,
) -> Result<Frame, DicomError> {
    let h = scan_jpeg(data);
    if !h.sof {
        return Err(corrupt("the JPEG frame has no SOI / SOF header"));
    }
    if h.precision > 8 && !h.lossless {
        return Err(DicomError::UnsupportedTransferSyntax {
            name: format!("{} with {}-bit samples", p.ts_name, h.precision),
            uid: p.ts_uid.clone(),
            reason: "jpeg-decoder, the pure-Rust JPEG decoder used here, decodes lossy JPEG of 8-bit precision only"
                .into(),
        });
    }
    if (h.width as u32, h.height as u32) != (info.columns, info.rows)
        || h.ids.len() != info.samples as usize
    {
        return Err(corrupt(format!(
            "the JPEG frame is {} × {} with {} component{}, the data set says {} × {} with {} sample{}",
            h.width,
            h.height,
            h.ids.len(),
            if h.ids.len() == 1 { "" } else { "s" },
            info.columns,
            info.rows,
            info.samples,
            if info.samples == 1 { "" } else { "s" }
        )));
    }
    let wide = h.precision > 8;
    if wide && info.bits_allocated < 16 {
        return Err(corrupt(format!(
            "the JPEG frame has {}-bit samples, Bits Allocated is {}",
            h.precision, info.bits_allocated
        )));
    }
    // Colour: decode the components as stored and decide here, as pydicom does with libjpeg: an Adobe
    // marker's transform flag (JFIF first) rules; otherwise component ids 'R','G','B' mean RGB, and else the
    // photometric interpretation (a JFIF marker making it YBR) tells whether the samples are YCbCr.
    let ycbcr = info.samples == 3
        && !h.lossless
        && match h.adobe {
            Some(t) => h.jfif || t != 0,
            None => {
                let rgb_ids = h.ids == [b'R', b'G', b'B'] || h.ids == [b'r', b'g', b'b'];
                !rgb_ids
                    && (h.jfif
                        || matches!(
                            info.photometric,
                            Photometric::YbrFull | Photometric::YbrFull422
                        ))
            }
        };
    let photometric = match info.photometric {
        Photometric::Monochrome1 | Photometric::Monochrome2 | Photometric::Palette => {
            info.photometric
        }
        _ if ycbcr => Photometric::YbrFull,
        _ => Photometric::Rgb,
    };
    let px = info.rows as usize * info.columns as usize;
    let mut hook_error = None;
    if let (Some(decode), false) = (hook, h.lossless) {
        // With an Adobe marker Pillow lets libjpeg convert to RGB; otherwise it takes the stored components.
        let libjpeg_rgb = ycbcr && h.adobe.is_some();
        match decode(data, !libjpeg_rgb) {
            Ok(f)
                if (f.width, f.height, f.components)
                    == (info.columns, info.rows, info.samples as usize)
                    && f.data.len() == px * f.components =>
            {
                return Ok(Frame {
                    samples: f.data.iter().map(|&b| u32::from(b)).collect(),
                    photometric: if libjpeg_rgb {
                        Photometric::Rgb
                    } else {
                        photometric
                    },
                });
            }
            Ok(f) => {
                hook_error = Some(format!(
                    "the JPEG frame decodes to {} × {} with {} components",
                    f.width, f.height, f.components
                ))
            }
            Err(e) => hook_error = Some(e),
        }
    }
    let mut dec = jpeg_decoder::Decoder::new(data);
    if info.samples == 3 {
        // `RGB` interleaves the components without colour arithmetic (`None` is broken for 3 components in
        // jpeg-decoder 0.3: it panics writing planes one after another).
        dec.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    }
    let bytes_per = if wide { 2 } else { 1 };
    let want = px * info.samples as usize * bytes_per;
    dec.set_max_decoding_buffer_size(want.saturating_mul(2).max(1 << 16));
    // When the caller's decoder failed too, its error is the one reported.
    let out = dec.decode().map_err(|e| match (e, hook_error) {
        (_, Some(first)) => DicomError::Decode {
            codec: "JPEG",
            detail: first,
        },
        (jpeg_decoder::Error::Unsupported(u), None) => DicomError::UnsupportedTransferSyntax {
            name: p.ts_name.to_string(),
            uid: p.ts_uid.clone(),
            reason: format!("jpeg-decoder does not support {u:?} in this JPEG frame"),
        },
        (other, None) => DicomError::Decode {
            codec: "JPEG",
            detail: other.to_string(),
        },
    })?;
    if out.len() != want {
        return Err(corrupt(format!(
            "the JPEG frame decodes to {} bytes, {} × {} × {} samples need {want}",
            out.len(),
            info.columns,
            info.rows,
            info.samples
        )));
    }
    let samples: Vec<u32> = if wide {
        out.chunks_exact(2)
            .map(|c| u32::from(u16::from_ne_bytes([c[0], c[1]])))
            .collect()
    } else {
        out.iter().map(|&b| u32::from(b)).collect()
    };
    Ok(Frame {
        samples,
        photometric,
    })
}

/// A JPEG 2000 component's (precision, signed, subsampling x, subsampling y) in its SIZ marker.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
type J2kComponent = (u8, bool, u8, u8);

/// The image size and components in a JPEG 2000 codestream's SIZ marker (found in a raw codestream or
/// inside a JP2 file).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn j2k_siz(d: &[u8]) -> Option<(u32, u32, Vec<J2kComponent>)> {
    let at = d
        .windows(4)
        .take(1 << 16)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?
        + 4;
    let s = d.get(at..)?;
    let be32 =
        |i: usize| -> Option<u32> { Some(u32::from_be_bytes(s.get(i..i + 4)?.try_into().ok()?)) };
    let (xsiz, ysiz, xo, yo) = (be32(4)?, be32(8)?, be32(12)?, be32(16)?);
    let nc = u16::from_be_bytes(s.get(36..38)?.try_into().ok()?) as usize;
    let comps = (0..nc)
        .map(|i| {
            let c = s.get(38 + 3 * i..41 + 3 * i)?;
            Some(((c[0] & 0x7F) + 1, c[0] & 0x80 != 0, c[1], c[2]))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((xsiz.checked_sub(xo)?, ysiz.checked_sub(yo)?, comps))
}

#[cfg(target_arch = "wasm32")]
fn decode_j2k(_: &[u8], _: &ImageInfo, p: &Parsed) -> Result<Frame, DicomError> {
    Err(DicomError::UnsupportedTransferSyntax {
        name: p.ts_name.to_string(),
        uid: p.ts_uid.clone(),
        reason: "the browser build has no JPEG 2000 decoder (openjp2 needs the C allocator); use `meddr run`".into(),
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn decode_j2k(data: &[u8], info: &ImageInfo, _: &Parsed) -> Result<Frame, DicomError> {
    let (w, h, comps) =
        j2k_siz(data).ok_or_else(|| corrupt("the JPEG 2000 frame has no readable SIZ marker"))?;
    if (w, h) != (info.columns, info.rows) || comps.len() != info.samples as usize {
        return Err(corrupt(format!(
            "the JPEG 2000 frame is {w} × {h} with {} component{}, the data set says {} × {} with {} sample{}",
            comps.len(),
            if comps.len() == 1 { "" } else { "s" },
            info.columns,
            info.rows,
            info.samples,
            if info.samples == 1 { "" } else { "s" }
        )));
    }
    if let Some(&(prec, _, dx, dy)) = comps
        .iter()
        .find(|c| c.0 as u16 > info.bits_allocated || c.2 != 1 || c.3 != 1)
    {
        return Err(DicomError::Unsupported {
            detail: format!(
                "a JPEG 2000 component of {prec} bits subsampled {dx} × {dy} (Bits Allocated {}; subsampled \
                 components are not rendered)",
                info.bits_allocated
            ),
        });
    }
    let img = jpeg2k::Image::from_bytes(data).map_err(|e| DicomError::Decode {
        codec: "JPEG 2000",
        detail: e.to_string(),
    })?;
    let px = info.rows as usize * info.columns as usize;
    let spp = info.samples as usize;
    let components = img.components();
    if components.len() != spp
        || components
            .iter()
            .any(|c| (c.width(), c.height()) != (info.columns, info.rows) || c.data().len() != px)
    {
        return Err(corrupt(
            "the decoded JPEG 2000 components disagree with the codestream's SIZ marker",
        ));
    }
    let mut samples = vec![0u32; px * spp];
    for (s, c) in components.iter().enumerate() {
        for (i, &v) in c.data().iter().enumerate() {
            samples[i * spp + s] = v as u32;
        }
    }
    let photometric = match info.photometric {
        Photometric::YbrJ2k => Photometric::Rgb,
        Photometric::YbrFull422 => Photometric::YbrFull,
        p => p,
    };
    Ok(Frame {
        samples,
        photometric,
    })
}
