//! Samples to RGB8: modality values and the linear VOI window for greyscale, palette lookup, YBR → RGB,
//! and wide colour samples scaled to 8 bits (rules in the crate docs).

use dicom_core::header::HasLength;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::codec::Frame;
use crate::parse::{shown, ImageInfo, Parsed, Photometric};
use crate::{DicomError, DicomOptions};

/// Refuses a window the standard's function cannot take: a width below 1 or a value that is not finite.
pub(crate) fn check_window(
    center: f64,
    width: f64,
    source: &'static str,
) -> Result<(), DicomError> {
    if center.is_finite() && width.is_finite() && width >= 1.0 {
        Ok(())
    } else {
        Err(DicomError::BadWindow {
            center: center.to_string(),
            width: width.to_string(),
            origin: source,
        })
    }
}

/// PS3.3 C.11.2.1.2.1, linear, to 8 bits: clamped, rounded half up.
#[inline]
pub(crate) fn voi_linear(x: f64, c: f64, w: f64) -> u8 {
    if w == 1.0 {
        return if x <= c - 0.5 { 0 } else { 255 };
    }
    let y = ((x - (c - 0.5)) / (w - 1.0) + 0.5) * 255.0;
    (y.clamp(0.0, 255.0) + 0.5).floor() as u8
}

/// `v` (a stored sample's bit pattern) as the integer its low `bits` bits hold.
#[inline]
fn stored_value(v: u32, bits: u16, signed: bool) -> i64 {
    if bits >= 32 {
        return if signed { v as i32 as i64 } else { v as i64 };
    }
    let v = v & ((1u32 << bits) - 1);
    if signed && (v >> (bits - 1)) & 1 == 1 {
        v as i64 - (1i64 << bits)
    } else {
        v as i64
    }
}

/// A wide unsigned sample scaled to 8 bits over `0..=2^bits − 1`, rounded half up.
#[inline]
fn to_8bit(v: u64, bits: u32) -> u8 {
    let m = (1u64 << bits) - 1;
    ((v * 510 + m) / (2 * m)) as u8
}

fn floats(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<Vec<f64>>, DicomError> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.is_empty() {
        return Ok(None);
    }
    match e.to_multi_float64() {
        Ok(v) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => Ok(Some(v)),
        _ => Err(DicomError::BadAttribute {
            name,
            value: shown(obj, tag),
        }),
    }
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

/// A lookup table's entries as little-endian bytes (16-bit words as dicom-rs read them; raw bytes as is).
fn lut_bytes(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<u8>> {
    match obj.get(tag)?.value() {
        Value::Primitive(PrimitiveValue::U8(b)) => Some(b.to_vec()),
        Value::Primitive(PrimitiveValue::U16(w)) => {
            Some(w.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        Value::Primitive(PrimitiveValue::I16(w)) => {
            Some(w.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        _ => None,
    }
}

/// A LUT descriptor: (entries, first mapped value, bits per entry).
fn descriptor(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
    signed: bool,
) -> Result<(usize, i64, u32), DicomError> {
    let bad = || DicomError::BadAttribute {
        name,
        value: shown(obj, tag),
    };
    let v: Vec<i64> = obj
        .get(tag)
        .ok_or(DicomError::MissingAttribute { name })?
        .to_multi_int::<i64>()
        .map_err(|_| bad())?;
    if v.len() != 3 {
        return Err(bad());
    }
    let n = match v[0] {
        0 => 65536,
        n if (1..=65535).contains(&n) => n as usize,
        // Read as SS: the entry count is unsigned.
        n if (-32768..0).contains(&n) => (n + 65536) as usize,
        _ => return Err(bad()),
    };
    // The first mapped value is read as the pixel data's signedness says (US or SS in the file).
    let first = match (signed, v[1]) {
        (true, f) if f > 32767 => f - 65536,
        (false, f) if f < 0 => f + 65536,
        (_, f) => f,
    };
    Ok((n, first, v[2].clamp(0, 64) as u32))
}

/// The table of a lookup: entries of 8 or 16 bits as the data's length says (as pydicom reads them).
fn lut_entries(bytes: &[u8], n: usize, what: &str) -> Result<(Vec<u32>, u32), DicomError> {
    if bytes.len() == n {
        Ok((bytes.iter().map(|&b| u32::from(b)).collect(), 8))
    } else if bytes.len() == 2 * n {
        Ok((
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            16,
        ))
    } else {
        Err(DicomError::Corrupt {
            detail: format!(
                "{what} holds {} bytes, not {n} entries of 8 or 16 bits",
                bytes.len()
            ),
        })
    }
}

#[inline]
fn lut_index(v: i64, first: i64, n: usize) -> usize {
    (v - first).clamp(0, n as i64 - 1) as usize
}

pub(crate) fn render(
    p: &Parsed,
    info: &ImageInfo,
    frame: &Frame,
    opts: &DicomOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<u8>, DicomError> {
    match frame.photometric {
        Photometric::Monochrome1 | Photometric::Monochrome2 => grey(p, info, frame, opts, notes),
        _ => {
            if opts.window.is_some() {
                notes.push("--window is ignored: the image is colour".into());
            }
            match frame.photometric {
                Photometric::Palette => palette(p, info, frame, notes),
                _ => colour(info, frame, notes),
            }
        }
    }
}

fn grey(
    p: &Parsed,
    info: &ImageInfo,
    frame: &Frame,
    opts: &DicomOptions,
    notes: &mut Vec<String>,
) -> Result<Vec<u8>, DicomError> {
    let obj = &p.obj;
    let (bits, signed) = (info.bits_stored, info.signed);
    let stored = frame.samples.iter().map(|&v| stored_value(v, bits, signed));
    // Modality values: a Modality LUT Sequence if present, else the rescale.
    let modality: Vec<f64> = match obj
        .get(tags::MODALITY_LUT_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|i| i.first())
    {
        Some(item) => {
            let (n, first, _) = descriptor(
                item,
                tags::LUT_DESCRIPTOR,
                "LUT Descriptor (0028,3002)",
                signed,
            )?;
            let data = lut_bytes(item, tags::LUT_DATA).ok_or(DicomError::MissingAttribute {
                name: "LUT Data (0028,3006)",
            })?;
            let (lut, _) = lut_entries(&data, n, "the Modality LUT's LUT Data (0028,3006)")?;
            notes.push("modality values from the file's Modality LUT Sequence".into());
            stored.map(|v| lut[lut_index(v, first, n)] as f64).collect()
        }
        None => {
            let slope = floats(obj, tags::RESCALE_SLOPE, "Rescale Slope (0028,1053)")?
                .map_or(1.0, |v| v[0]);
            let intercept = floats(
                obj,
                tags::RESCALE_INTERCEPT,
                "Rescale Intercept (0028,1052)",
            )?
            .map_or(0.0, |v| v[0]);
            stored.map(|v| v as f64 * slope + intercept).collect()
        }
    };
    let (c, w) = match opts.window {
        Some((c, w)) => {
            check_window(c, w, "from --window")?;
            notes.push(format!("window C={c} W={w} from --window"));
            (c, w)
        }
        None => {
            let centers = floats(obj, tags::WINDOW_CENTER, "Window Center (0028,1050)")?;
            let widths = floats(obj, tags::WINDOW_WIDTH, "Window Width (0028,1051)")?;
            match (centers, widths) {
                (Some(cs), Some(ws)) => {
                    let (c, w) = (cs[0], ws[0]);
                    check_window(c, w, "in the file")?;
                    let more = if cs.len() > 1 || ws.len() > 1 {
                        format!(
                            " (the first of {}; choose another with --window)",
                            cs.len().max(ws.len())
                        )
                    } else {
                        String::new()
                    };
                    notes.push(format!("window C={c} W={w} from the file{more}"));
                    (c, w)
                }
                _ => {
                    let (lo, hi) = modality
                        .iter()
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                            (lo.min(x), hi.max(x))
                        });
                    let (c, w) = ((lo + hi) / 2.0, hi - lo + 1.0);
                    notes.push(format!(
                        "no window in the file: C={c} W={w} from the frame's range {lo}…{hi}; choose one with --window"
                    ));
                    (c, w)
                }
            }
        }
    };
    if obj.get(tags::VOILUT_SEQUENCE).is_some() {
        notes.push("the file's VOI LUT Sequence is not applied (the linear window is)".into());
    }
    if let Some(f) = text(obj, tags::VOILUT_FUNCTION).filter(|f| f != "LINEAR") {
        notes.push(format!(
            "the file's VOI LUT Function {f} is not applied (the linear one is)"
        ));
    }
    let invert = frame.photometric == Photometric::Monochrome1;
    if invert {
        notes.push("MONOCHROME1: inverted after windowing".into());
    }
    Ok(modality
        .iter()
        .flat_map(|&x| {
            let y = voi_linear(x, c, w);
            let y = if invert { 255 - y } else { y };
            [y, y, y]
        })
        .collect())
}

fn palette(
    p: &Parsed,
    info: &ImageInfo,
    frame: &Frame,
    notes: &mut Vec<String>,
) -> Result<Vec<u8>, DicomError> {
    let obj = &p.obj;
    let chans = [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "Red Palette Color Lookup Table Descriptor (0028,1101)",
            "Red Palette Color Lookup Table Data (0028,1201)",
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "Green Palette Color Lookup Table Descriptor (0028,1102)",
            "Green Palette Color Lookup Table Data (0028,1202)",
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "Blue Palette Color Lookup Table Descriptor (0028,1103)",
            "Blue Palette Color Lookup Table Data (0028,1203)",
        ),
    ];
    let mut luts = Vec::new();
    for (dtag, ltag, dname, lname) in chans {
        let (n, first, _) = descriptor(obj, dtag, dname, false)?;
        let Some(bytes) = lut_bytes(obj, ltag) else {
            if obj
                .get(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA)
                .is_some()
            {
                return Err(DicomError::Unsupported {
                    detail: "a segmented palette (Segmented Red/Green/Blue Palette Color Lookup Table Data)".into(),
                });
            }
            return Err(DicomError::MissingAttribute { name: lname });
        };
        let (entries, depth) = lut_entries(&bytes, n, lname)?;
        luts.push((entries, depth, first, n));
    }
    let wide = luts.iter().any(|l| l.1 == 16);
    if wide {
        notes.push("16-bit palette entries scaled to 8 bits (v·255/65535, rounded)".into());
    }
    let bits = info.bits_stored;
    Ok(frame
        .samples
        .iter()
        .flat_map(|&v| {
            let v = stored_value(v, bits, false);
            let mut px = [0u8; 3];
            for (o, (lut, depth, first, n)) in px.iter_mut().zip(&luts) {
                let e = lut[lut_index(v, *first, *n)];
                *o = if *depth == 16 {
                    to_8bit(e as u64, 16)
                } else {
                    e as u8
                };
            }
            px
        })
        .collect())
}

/// pydicom's YBR_FULL → RGB (`convert_color_space`): f32 matrix, + 0.5, floor, clip.
fn ybr_to_rgb(y: u32, cb: u32, cr: u32) -> [u8; 3] {
    let (g1, g2) = (
        (-0.114f64 * 1.772 / 0.587) as f32,
        (-0.299f64 * 1.402 / 0.587) as f32,
    );
    let (y, cb, cr) = (y as f32, cb as f32 - 128.0, cr as f32 - 128.0);
    let r = y + cr * 1.402f32;
    let g = y + cb * g1 + cr * g2;
    let b = y + cb * 1.772f32;
    let q = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    [q(r), q(g), q(b)]
}

fn colour(info: &ImageInfo, frame: &Frame, notes: &mut Vec<String>) -> Result<Vec<u8>, DicomError> {
    let bits = info.bits_stored;
    if frame.photometric == Photometric::YbrFull {
        if bits > 8 {
            return Err(DicomError::Unsupported {
                detail: format!("YBR_FULL colour with {bits}-bit samples"),
            });
        }
        notes.push("YBR_FULL converted to RGB".into());
        return Ok(frame
            .samples
            .chunks_exact(3)
            .flat_map(|p| {
                let m = |v: u32| stored_value(v, bits, false) as u32;
                ybr_to_rgb(m(p[0]), m(p[1]), m(p[2]))
            })
            .collect());
    }
    if bits > 8 {
        notes.push(format!(
            "{bits}-bit colour samples scaled to 8 bits (v·255/{}, rounded)",
            (1u64 << bits) - 1
        ));
    }
    Ok(frame
        .samples
        .iter()
        .map(|&v| {
            let v = stored_value(v, bits, false) as u64;
            if bits > 8 {
                to_8bit(v, bits as u32)
            } else {
                v as u8
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard's function on a 0–255 ramp with centre 128, width 256 is the identity (dicom-rs's own
    /// VOI puts most of these one level off).
    #[test]
    fn ramp_window_128_256_is_identity() {
        for x in 0..=255u32 {
            assert_eq!(voi_linear(x as f64, 128.0, 256.0) as u32, x);
        }
    }

    #[test]
    fn width_one_is_a_threshold() {
        assert_eq!(voi_linear(99.5, 100.0, 1.0), 0);
        assert_eq!(voi_linear(99.6, 100.0, 1.0), 255);
        assert_eq!(voi_linear(-1e9, 100.0, 1.0), 0);
    }

    #[test]
    fn stored_values_mask_and_sign_extend() {
        assert_eq!(stored_value(0xF123, 12, false), 0x123);
        assert_eq!(stored_value(0x0FFF, 12, true), -1);
        assert_eq!(stored_value(0xF800, 12, true), -2048);
        assert_eq!(stored_value(0xFFFF_FFFF, 32, true), -1);
        assert_eq!(stored_value(0xFFFF_FFFF, 32, false), 0xFFFF_FFFF);
    }

    #[test]
    fn wide_samples_scale_with_rounding() {
        assert_eq!(to_8bit(0, 16), 0);
        assert_eq!(to_8bit(65535, 16), 255);
        assert_eq!(to_8bit(128, 16), 0); // 0.498 → 0
        assert_eq!(to_8bit(129, 16), 1); // 0.502 → 1
        assert_eq!(to_8bit(4095, 12), 255);
        assert_eq!(to_8bit(u32::MAX as u64, 32), 255);
    }
}
