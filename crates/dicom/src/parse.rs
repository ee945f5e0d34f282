//! Finding the data set (preamble, file meta information, transfer syntax), checking every element length
//! before dicom-rs reads it, and the image attributes.

use std::io::Read;

use dicom_core::header::{HasLength, Header, SequenceItemHeader};
use dicom_core::value::{DataSetSequence, PixelFragmentSequence};
use dicom_core::{DataElement, DicomValue, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_parser::{DynStatefulDecoder, StatefulDecode};
use dicom_transfer_syntax_registry::entries;

use crate::syntax::{self, Syntax};
use crate::{DicomError, MAX_DIMENSION};

/// Where the file meta information or the data set starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Start {
    /// File meta information (group 0002, explicit VR little endian) at this offset.
    Meta(usize),
    /// A bare data set at offset 0 in this encoding.
    Bare { explicit: bool, little_endian: bool },
}

const VRS: [&[u8; 2]; 34] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
];

fn is_vr(b: &[u8]) -> bool {
    b.len() >= 2 && VRS.iter().any(|v| v[..] == b[..2])
}

/// VRs with a 2-byte length in explicit VR (PS3.5 7.1.2); dicom-rs reads every other one, including
/// unknown VRs, with 2 reserved bytes and a 4-byte length.
fn short_vr(b: [u8; 2]) -> bool {
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    SHORT.iter().any(|v| **v == b)
}

fn u16_at(b: &[u8], pos: usize, le: bool) -> Option<u16> {
    let s = b.get(pos..pos.checked_add(2)?)?;
    let a = [s[0], s[1]];
    Some(if le {
        u16::from_le_bytes(a)
    } else {
        u16::from_be_bytes(a)
    })
}

fn u32_at(b: &[u8], pos: usize, le: bool) -> Option<u32> {
    let s = b.get(pos..pos.checked_add(4)?)?;
    let a = [s[0], s[1], s[2], s[3]];
    Some(if le {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    })
}

/// The encoding of a data set (or meta group) whose first element starts at `pos`, if it looks like one:
/// a tag of group `group` followed by a valid explicit VR, or (little endian only) an implicit-VR length
/// that fits in the bytes that remain.
fn sniff_encoding(bytes: &[u8], pos: usize, groups: &[u16]) -> Option<(bool, bool)> {
    let head = bytes.get(pos..pos.checked_add(8)?)?;
    let le_group = u16::from_le_bytes([head[0], head[1]]);
    let be_group = u16::from_be_bytes([head[0], head[1]]);
    if groups.contains(&le_group) {
        if is_vr(&head[4..6]) {
            return Some((true, true));
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len <= bytes.len() - pos - 8 {
            return Some((false, true));
        }
    }
    if groups.contains(&be_group) && be_group != le_group && is_vr(&head[4..6]) {
        return Some((true, false));
    }
    None
}

/// The encoding of a data set at `pos` that no transfer syntax describes: explicit VR if its first element
/// has a valid VR (little endian unless the big-endian reading gives the smaller group number: data sets
/// start with low groups), else implicit VR little endian.
fn guess_encoding(bytes: &[u8], pos: usize) -> (bool, bool) {
    match (
        u16_at(bytes, pos, true),
        u16_at(bytes, pos, false),
        bytes.get(pos + 4..pos + 6),
    ) {
        (Some(le), Some(be), Some(vr)) if is_vr(vr) => (true, le <= be),
        _ => (false, true),
    }
}

/// Where the file's meta information or data set starts, if it is DICOM at all (see [`crate::is_dicom`]).
pub(crate) fn locate(bytes: &[u8]) -> Option<Start> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return Some(Start::Meta(132));
    }
    if bytes.starts_with(b"DICM") {
        return Some(Start::Meta(4));
    }
    // A meta group without preamble: explicit VR little endian, group 0002.
    if let Some((true, true)) = sniff_encoding(bytes, 0, &[0x0002]) {
        return Some(Start::Meta(0));
    }
    sniff_encoding(bytes, 0, &[0x0008]).map(|(explicit, little_endian)| Start::Bare {
        explicit,
        little_endian,
    })
}

/// The parsed data set and how its pixel data is encoded.
pub(crate) struct Parsed {
    pub obj: InMemDicomObject,
    pub syntax: Syntax,
    /// Transfer syntax name and UID, for messages.
    pub ts_name: &'static str,
    pub ts_uid: String,
}

/// The file meta group from `pos`: the transfer syntax UID (if any) and where the data set starts.
fn read_meta(bytes: &[u8], mut pos: usize) -> Result<(Option<String>, usize), DicomError> {
    let mut ts = None;
    while u16_at(bytes, pos, true) == Some(0x0002) {
        let elem = u16_at(bytes, pos + 2, true).unwrap_or(0);
        let vr = bytes.get(pos + 4..pos + 6).unwrap_or(&[]);
        let (len, head) = if is_vr(vr) {
            if short_vr([vr[0], vr[1]]) {
                (u16_at(bytes, pos + 6, true).map(u32::from), 8)
            } else {
                (u32_at(bytes, pos + 8, true), 12)
            }
        } else {
            // A meta group written in implicit VR (invalid, but seen): 4-byte length.
            (u32_at(bytes, pos + 4, true), 8)
        };
        let Some(len) = len else {
            return Err(DicomError::Truncated {
                detail: format!(
                    "the file meta information ends inside the header of element (0002,{elem:04X})"
                ),
            });
        };
        let start = pos + head;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= bytes.len() && len != u32::MAX)
            .ok_or_else(|| DicomError::Truncated {
                detail: format!(
                    "file meta element (0002,{elem:04X}) declares {len} bytes, {} remain",
                    bytes.len().saturating_sub(start)
                ),
            })?;
        if elem == 0x0010 {
            let uid: String = bytes[start..end]
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
                .trim_end_matches(['\0', ' '])
                .trim()
                .to_string();
            ts = Some(uid);
        }
        pos = end;
    }
    Ok((ts, pos))
}

/// Largest inflated data set of a Deflated Explicit VR Little Endian file.
#[cfg(not(fuzzing))]
const MAX_INFLATED: u64 = 1 << 30;
#[cfg(fuzzing)]
const MAX_INFLATED: u64 = 1 << 20;

/// Inflates at most `cap` bytes, refusing more (a deflate bomb).
fn inflate(data: &[u8], cap: u64) -> Result<Vec<u8>, DicomError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::DeflateDecoder::new(data).take(cap + 1);
    dec.read_to_end(&mut out).map_err(|e| DicomError::Corrupt {
        detail: format!("the deflated data set does not inflate: {e}"),
    })?;
    if out.len() as u64 > cap {
        return Err(DicomError::Corrupt {
            detail: format!(
                "the deflated data set inflates to more than {cap} bytes (a deflate bomb?)"
            ),
        });
    }
    Ok(out)
}

/// Deepest sequence nesting read (deeper data sets are refused, not recursed into).
const MAX_DEPTH: u32 = 32;

/// Reads a data set with dicom-rs's stateful decoder (its header rules: explicit / implicit VR, both byte
/// orders, the dictionary's VRs), checking every declared length against the bytes that remain *before*
/// reading a value: dicom-rs's own data set reader allocates a declared length first (a 20-byte file could
/// ask for 4 GB). Only what rendering needs is kept — group 0028 (image attributes, LUTs, windows), the
/// Modality / VOI LUT Sequences and Pixel Data; every other value is skipped unread and other sequences are
/// walked without keeping anything.
struct Reader<'a> {
    dec: DynStatefulDecoder<&'a [u8]>,
    len: u64,
}

fn read_error(e: impl std::error::Error) -> DicomError {
    let detail = chain(&e);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("fill whole buffer") || lower.contains("end of file") || lower.contains("eof")
    {
        DicomError::Truncated { detail }
    } else {
        DicomError::Corrupt { detail }
    }
}

impl Reader<'_> {
    fn pos(&self) -> u64 {
        self.dec.position()
    }

    /// Refuses a length beyond the data (`what` names the element or item).
    fn fits(&self, len: u32, what: impl FnOnce() -> String) -> Result<(), DicomError> {
        let left = self.len.saturating_sub(self.pos());
        if u64::from(len) > left {
            return Err(DicomError::Truncated {
                detail: format!("{} declares {len} bytes but {left} remain", what()),
            });
        }
        Ok(())
    }

    /// Elements until `end` (a defined length), an item delimiter (an item of undefined length) or the end of
    /// the data (the top level).
    fn data_set(
        &mut self,
        end: Option<u64>,
        depth: u32,
        keep_all: bool,
    ) -> Result<InMemDicomObject, DicomError> {
        let mut obj = InMemDicomObject::new_empty();
        let top = depth == 0;
        loop {
            match end {
                Some(e) if self.pos() >= e => break,
                _ if self.pos() >= self.len => {
                    if top {
                        break;
                    }
                    return Err(DicomError::Truncated {
                        detail: "the data ends inside a sequence item".into(),
                    });
                }
                _ => {}
            }
            let header = self.dec.decode_header().map_err(read_error)?;
            let tag = header.tag;
            let name = || format!("element ({:04X},{:04X})", tag.group(), tag.element());
            if tag.group() == 0xFFFE {
                match tag.element() {
                    // The end of this item (or a stray delimiter at the top level, which dicom-rs ignores too).
                    0xE00D if !top && end.is_none() => break,
                    0xE00D | 0xE0DD => continue,
                    _ => {}
                }
            }
            if header.is_encapsulated_pixeldata() {
                let v = self.fragments()?;
                obj.put(DataElement::new(tag, header.vr, v));
                continue;
            }
            if header.vr == VR::SQ || header.len.is_undefined() {
                let keep =
                    keep_all || tag == tags::MODALITY_LUT_SEQUENCE || tag == tags::VOILUT_SEQUENCE;
                let items = self.sequence(header.len, depth + 1, keep)?;
                if keep {
                    obj.put(DataElement::new(
                        tag,
                        VR::SQ,
                        DataSetSequence::new(items, header.len),
                    ));
                }
                continue;
            }
            let len = header.len.0;
            self.fits(len, name)?;
            if keep_all || tag.group() == 0x0028 || tag == tags::PIXEL_DATA {
                let v = self.dec.read_value_preserved(&header).map_err(read_error)?;
                obj.put(DataElement::new(tag, header.vr, v));
            } else {
                self.dec.skip_bytes(len).map_err(read_error)?;
            }
        }
        Ok(obj)
    }

    /// The items of a sequence (kept only when `keep`).
    fn sequence(
        &mut self,
        len: Length,
        depth: u32,
        keep: bool,
    ) -> Result<Vec<InMemDicomObject>, DicomError> {
        if depth > MAX_DEPTH {
            return Err(DicomError::Corrupt {
                detail: format!("sequences nested more than {MAX_DEPTH} deep"),
            });
        }
        let end = match len.get() {
            Some(l) => {
                self.fits(l, || "a sequence".into())?;
                Some(self.pos() + u64::from(l))
            }
            None => None,
        };
        let mut items = Vec::new();
        loop {
            match end {
                Some(e) if self.pos() >= e => break,
                _ if self.pos() >= self.len => {
                    return Err(DicomError::Truncated {
                        detail: "the data ends inside a sequence".into(),
                    })
                }
                _ => {}
            }
            match self.dec.decode_item_header().map_err(read_error)? {
                SequenceItemHeader::Item { len } => {
                    let item_end = match len.get() {
                        Some(l) => {
                            self.fits(l, || "a sequence item".into())?;
                            Some(self.pos() + u64::from(l))
                        }
                        None => None,
                    };
                    let item = self.data_set(item_end, depth, keep)?;
                    if keep {
                        items.push(item);
                    }
                }
                SequenceItemHeader::ItemDelimiter => {}
                SequenceItemHeader::SequenceDelimiter if end.is_none() => break,
                SequenceItemHeader::SequenceDelimiter => {}
            }
        }
        Ok(items)
    }

    /// Encapsulated pixel data: the Basic Offset Table, then the fragments, up to the sequence delimiter (or the
    /// end of the data, as dicom-rs accepts).
    fn fragments(&mut self) -> Result<DicomValue<InMemDicomObject, Vec<u8>>, DicomError> {
        let (mut offsets, mut fragments, mut first) = (Vec::new(), Vec::new(), true);
        while self.pos() < self.len {
            match self.dec.decode_item_header().map_err(read_error)? {
                SequenceItemHeader::Item { len } => {
                    let l = len.get().ok_or_else(|| DicomError::Corrupt {
                        detail: "a pixel data fragment of undefined length".into(),
                    })?;
                    self.fits(l, || "a pixel data fragment".into())?;
                    if first {
                        self.dec
                            .read_u32_to_vec(l, &mut offsets)
                            .map_err(read_error)?;
                    } else {
                        let mut f = Vec::new();
                        self.dec.read_to_vec(l, &mut f).map_err(read_error)?;
                        fragments.push(f);
                    }
                    first = false;
                }
                SequenceItemHeader::SequenceDelimiter => break,
                SequenceItemHeader::ItemDelimiter => {
                    return Err(DicomError::Corrupt {
                        detail: "an item delimiter among the pixel data fragments".into(),
                    })
                }
            }
        }
        Ok(DicomValue::PixelSequence(PixelFragmentSequence::new(
            offsets, fragments,
        )))
    }
}

/// The error chain of a dicom-rs error as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// Reads the data set of `bytes` (see [`crate::decode_to_rgb8`]); `max_pixels` bounds the inflated size of a
/// deflated one.
pub(crate) fn parse(bytes: &[u8], max_pixels: u64) -> Result<Parsed, DicomError> {
    let start = locate(bytes).ok_or(DicomError::NotDicom)?;
    let (uid, data_start) = match start {
        Start::Meta(pos) => read_meta(bytes, pos)?,
        Start::Bare { .. } => (None, 0),
    };
    let (syntax, ts_name, ts_uid) = match uid {
        Some(uid) => {
            let (s, name) = syntax::lookup(&uid)?;
            (s, name, uid)
        }
        None => {
            // No transfer syntax given: the data set's own first element tells.
            let (explicit, little_endian) = match start {
                Start::Bare {
                    explicit,
                    little_endian,
                } => (explicit, little_endian),
                Start::Meta(_) => guess_encoding(bytes, data_start),
            };
            let uid = match (explicit, little_endian) {
                (false, _) => "1.2.840.10008.1.2",
                (true, true) => "1.2.840.10008.1.2.1",
                (true, false) => "1.2.840.10008.1.2.2",
            };
            let (s, name) = syntax::lookup(uid)?;
            (s, name, uid.to_string())
        }
    };
    let raw = &bytes[data_start.min(bytes.len())..];
    let inflated;
    let (data, explicit, le): (&[u8], bool, bool) = match syntax {
        Syntax::Native {
            explicit,
            little_endian,
        } => (raw, explicit, little_endian),
        Syntax::Deflated => {
            let cap = MAX_INFLATED.min(max_pixels.saturating_mul(48).max(16 << 20));
            inflated = inflate(raw, cap)?;
            (&inflated, true, true)
        }
        Syntax::Encapsulated(_) => (raw, true, true),
    };
    // Files whose data set is in the other VR encoding than the transfer syntax says (seen in the wild, and
    // read by pydicom the same way): the first element decides.
    let explicit = match data.get(4..6) {
        Some(vr) if le && !matches!(syntax, Syntax::Deflated) => is_vr(vr),
        _ => explicit,
    };
    let ts = match (explicit, le) {
        (false, _) => entries::IMPLICIT_VR_LITTLE_ENDIAN,
        (true, true) => entries::EXPLICIT_VR_LITTLE_ENDIAN,
        (true, false) => entries::EXPLICIT_VR_BIG_ENDIAN,
    }
    .erased();
    let mut reader = Reader {
        dec: DynStatefulDecoder::new_with_ts(data, &ts, 0).map_err(read_error)?,
        len: data.len() as u64,
    };
    let obj = reader.data_set(None, 0, false)?;
    Ok(Parsed {
        obj,
        syntax,
        ts_name,
        ts_uid,
    })
}

/// Photometric interpretations rendered here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Photometric {
    Monochrome1,
    Monochrome2,
    Palette,
    Rgb,
    YbrFull,
    YbrFull422,
    /// YBR_ICT / YBR_RCT: JPEG 2000's component transforms, undone by its decoder.
    YbrJ2k,
}

/// What the pixel data holds, checked against the limits.
#[derive(Clone, Debug)]
pub(crate) struct ImageInfo {
    pub rows: u32,
    pub columns: u32,
    pub samples: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub signed: bool,
    pub planar: bool,
    pub photometric: Photometric,
    pub frames: u32,
}

/// Shortened printable text of an attribute, for messages.
pub(crate) fn shown(obj: &InMemDicomObject, tag: Tag) -> String {
    let s = obj
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.into_owned())
        .unwrap_or_else(|| "(unreadable)".into());
    let s: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    format!("{s:?}")
}

/// An unsigned integer attribute, `None` when absent or empty.
pub(crate) fn uint(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &'static str,
) -> Result<Option<u64>, DicomError> {
    let Some(e) = obj.get(tag) else {
        return Ok(None);
    };
    if e.is_empty() {
        return Ok(None);
    }
    match e.to_int::<i64>() {
        Ok(v) if v >= 0 => Ok(Some(v as u64)),
        _ => Err(DicomError::BadAttribute {
            name,
            value: shown(obj, tag),
        }),
    }
}

fn required(obj: &InMemDicomObject, tag: Tag, name: &'static str) -> Result<u64, DicomError> {
    uint(obj, tag, name)?.ok_or(DicomError::MissingAttribute { name })
}

/// The image attributes, checked: sizes against [`MAX_DIMENSION`] and `max_pixels`, combinations against
/// what [`crate::render`] handles.
pub(crate) fn image_info(p: &Parsed, max_pixels: u64) -> Result<ImageInfo, DicomError> {
    let obj = &p.obj;
    if obj.get(tags::PIXEL_DATA).is_none() {
        let what = if obj.get(tags::FLOAT_PIXEL_DATA).is_some()
            || obj.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some()
        {
            "it holds Float / Double Float Pixel Data, which is not rendered here"
        } else {
            "there is no Pixel Data (7FE0,0010) element"
        };
        return Err(DicomError::NoPixelData {
            detail: what.into(),
        });
    }
    let rows = required(obj, tags::ROWS, "Rows (0028,0010)")?;
    let columns = required(obj, tags::COLUMNS, "Columns (0028,0011)")?;
    if rows == 0 || columns == 0 {
        return Err(DicomError::BadAttribute {
            name: "Rows × Columns",
            value: format!("{rows} × {columns} (zero-size image)"),
        });
    }
    if rows > MAX_DIMENSION as u64 || columns > MAX_DIMENSION as u64 || rows * columns > max_pixels
    {
        return Err(DicomError::TooLarge {
            rows,
            columns,
            max_side: MAX_DIMENSION,
            max_pixels,
        });
    }
    let samples = uint(
        obj,
        tags::SAMPLES_PER_PIXEL,
        "Samples per Pixel (0028,0002)",
    )?
    .unwrap_or(1);
    let bits_allocated = required(obj, tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")?;
    let bits_stored =
        uint(obj, tags::BITS_STORED, "Bits Stored (0028,0101)")?.unwrap_or(bits_allocated);
    let signed = match uint(
        obj,
        tags::PIXEL_REPRESENTATION,
        "Pixel Representation (0028,0103)",
    )? {
        None | Some(0) => false,
        Some(1) => true,
        Some(_) => {
            return Err(DicomError::BadAttribute {
                name: "Pixel Representation (0028,0103)",
                value: shown(obj, tags::PIXEL_REPRESENTATION),
            })
        }
    };
    let pi_text = obj
        .get(tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or(DicomError::MissingAttribute {
            name: "Photometric Interpretation (0028,0004)",
        })?
        .to_str()
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default();
    let photometric = match pi_text.as_str() {
        "MONOCHROME1" => Photometric::Monochrome1,
        "MONOCHROME2" => Photometric::Monochrome2,
        "PALETTE COLOR" => Photometric::Palette,
        "RGB" => Photometric::Rgb,
        "YBR_FULL" => Photometric::YbrFull,
        "YBR_FULL_422" => Photometric::YbrFull422,
        "YBR_ICT" | "YBR_RCT" => Photometric::YbrJ2k,
        other => {
            return Err(DicomError::Unsupported {
                detail: format!(
                    "photometric interpretation {:?} (rendered: MONOCHROME1, MONOCHROME2, PALETTE COLOR, RGB, \
                     YBR_FULL, YBR_FULL_422, YBR_ICT, YBR_RCT)",
                    other.chars().take(32).collect::<String>()
                ),
            })
        }
    };
    let want_samples = match photometric {
        Photometric::Monochrome1 | Photometric::Monochrome2 | Photometric::Palette => 1,
        _ => 3,
    };
    if samples != want_samples {
        return Err(DicomError::BadAttribute {
            name: "Samples per Pixel (0028,0002)",
            value: format!(
                "{samples} with photometric interpretation {pi_text} (which needs {want_samples})"
            ),
        });
    }
    let grey = want_samples == 1 && photometric != Photometric::Palette;
    match bits_allocated {
        8 | 16 | 32 => {}
        1 if grey => {}
        _ => {
            return Err(DicomError::Unsupported {
                detail: format!(
                    "Bits Allocated {bits_allocated} with {pi_text} (rendered: 1 for greyscale, 8, 16, 32)"
                ),
            })
        }
    }
    if bits_stored == 0 || bits_stored > bits_allocated {
        return Err(DicomError::BadAttribute {
            name: "Bits Stored (0028,0101)",
            value: format!("{bits_stored} with Bits Allocated {bits_allocated}"),
        });
    }
    if signed && !grey {
        return Err(DicomError::Unsupported {
            detail: format!("signed (Pixel Representation 1) samples with {pi_text}"),
        });
    }
    let planar = samples == 3
        && match uint(
            obj,
            tags::PLANAR_CONFIGURATION,
            "Planar Configuration (0028,0006)",
        )? {
            None | Some(0) => false,
            Some(1) => true,
            Some(_) => {
                return Err(DicomError::BadAttribute {
                    name: "Planar Configuration (0028,0006)",
                    value: shown(obj, tags::PLANAR_CONFIGURATION),
                })
            }
        };
    let frames = match uint(obj, tags::NUMBER_OF_FRAMES, "Number of Frames (0028,0008)")? {
        None => 1,
        Some(0) => {
            return Err(DicomError::BadAttribute {
                name: "Number of Frames (0028,0008)",
                value: "0".into(),
            })
        }
        Some(n) if n > u32::MAX as u64 => {
            return Err(DicomError::BadAttribute {
                name: "Number of Frames (0028,0008)",
                value: n.to_string(),
            })
        }
        Some(n) => n as u32,
    };
    Ok(ImageInfo {
        rows: rows as u32,
        columns: columns as u32,
        samples: samples as u16,
        bits_allocated: bits_allocated as u16,
        bits_stored: bits_stored as u16,
        signed,
        planar,
        photometric,
        frames,
    })
}
