//! DICOM images to 8-bit RGB for MedDr, in pure Rust (native and wasm32 alike).
//!
//! [`decode_to_rgb8`] turns one frame of a DICOM file's pixel data into interleaved RGB8, which then goes
//! through MedDr's ordinary preprocessing (`meddr_image`), exactly like a PNG would.
//!
//! # Greyscale (MONOCHROME1, MONOCHROME2)
//! 1. Stored values: each sample's low `BitsStored` bits (bits above them are ignored, as pydicom does),
//!    sign-extended when `PixelRepresentation` is 1.
//! 2. Modality values: `x = stored · RescaleSlope + RescaleIntercept` in f64 (a missing slope is 1, a missing
//!    intercept 0); a Modality LUT Sequence, when present, is applied instead (values below its first mapped
//!    value take its first entry, values past its end its last).
//! 3. Window: the user's (`--window C,W`), else the **first** Window Center / Window Width pair in the file,
//!    else `c = (min + max) / 2`, `w = max − min + 1` over the chosen frame's modality values.
//! 4. The standard's linear VOI function (PS3.3 C.11.2.1.2.1), written out:
//!    `y = ((x − (c − 0.5)) / (w − 1) + 0.5) · 255`, clamped to 0…255 and rounded half up (`⌊y + 0.5⌋`), in
//!    f64. Width 1 is the standard's special case: `y = 0` where `x ≤ c − 0.5`, else 255. A width below 1
//!    (or a centre or width that is not a finite number) is an error ([`DicomError::BadWindow`]), whether it
//!    comes from the file or from the user; a file's bad window can be overridden with `--window`.
//!    dicom-rs's own VOI function is not used: it sits half a grey level away from the standard's.
//! 5. MONOCHROME1 is inverted after windowing (`255 − y`), then the grey level is replicated to R, G and B.
//!
//! A VOI LUT Sequence or a non-linear VOI LUT Function (SIGMOID, LINEAR_EXACT) in the file is not applied;
//! [`Rendered::notes`] says so.
//!
//! # Colour
//! - RGB; YBR_FULL and YBR_FULL_422 (uncompressed, RLE or JPEG) converted to RGB with pydicom's formula
//!   (PS3.3 C.7.6.3.1.2: `R = Y + 1.402 (Cr − 128)`, `G = Y − 0.114·1.772/0.587 (Cb − 128) −
//!   0.299·1.402/0.587 (Cr − 128)`, `B = Y + 1.772 (Cb − 128)` in f32, rounded half up, clamped);
//!   YBR_ICT / YBR_RCT come out of the JPEG 2000 decoder as RGB. `PlanarConfiguration` 0 and 1.
//! - PALETTE COLOR with 8- or 16-bit lookup tables (not the segmented kind): indices below the first mapped
//!   value take the first entry, indices past the end the last.
//! - Samples wider than 8 bits (16- or 32-bit RGB, 16-bit palette entries) are scaled to 8 bits linearly over
//!   their full range, rounded half up: `⌊(v · 510 + M) / (2M)⌋` with `M = 2^BitsStored − 1` (for palettes,
//!   `2^bits − 1` of the table's descriptor). The user is told.
//!
//! # Files and transfer syntaxes
//! With the 128-byte preamble and `DICM`, or without either (a bare data set starting with a group 0002 or
//! 0008 element, implicit or explicit VR, either byte order). Decoded: Implicit / Explicit VR Little
//! Endian, Explicit VR Big Endian, Deflated Explicit VR Little Endian, Encapsulated Uncompressed, RLE
//! Lossless (own decoder), JPEG Baseline, Extended (8-bit) and Lossless (jpeg-decoder), JPEG 2000 Part 1
//! (openjp2, the Rust port of OpenJPEG; native builds only: on wasm32 it does not link, and the browser
//! refuses JPEG 2000 by name). Every other syntax — JPEG-LS (CharLS is C++), 12-bit lossy JPEG
//! (jpeg-decoder refuses precision 12), HTJ2K, JPEG XL, MPEG/HEVC video, … — is refused with
//! [`DicomError::UnsupportedTransferSyntax`] naming it. Bits allocated: 1 (greyscale), 8, 16, 32.
//!
//! Multi-frame files: one frame is rendered, by default the middle one (index ⌊n/2⌋, counted from 0);
//! [`DicomOptions::frame`] picks another.
//!
//! # Untrusted input
//! The data set is read element by element with dicom-rs's decoder, each declared length checked against
//! the bytes that remain before its value is read (dicom-rs's own data set reader allocates a declared length
//! first: the fuzzer found 20-byte changes that made it ask for 3.5 GB), keeping only what rendering needs
//! (group 0028, the LUT sequences, Pixel Data); Rows × Columns is checked against
//! [`MAX_DIMENSION`] and the pixel limit, and the declared frames against the pixel data's length, before any
//! pixel buffer exists; each JPEG / JPEG 2000 codestream's own size must equal Rows × Columns before it is
//! decoded; a deflated data set is inflated to a bounded size. Any input gives `Ok` or an `Err` naming the
//! offending value, never a panic.

mod codec;
mod parse;
mod render;
mod syntax;

use thiserror::Error;

/// Largest accepted Rows or Columns (the same as `meddr_image::MAX_DIMENSION`).
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest accepted pixel count of one frame (the same as `meddr_image::MAX_PIXELS`).
#[cfg(not(fuzzing))]
pub const MAX_PIXELS: u64 = 256 * 1024 * 1024;
/// Fuzzing builds (`--cfg fuzzing`, `tests/fuzz`) take 2^14 pixels at most, so that a declared huge image
/// cannot make one execution slow; every check stays the same.
#[cfg(fuzzing)]
pub const MAX_PIXELS: u64 = 1 << 14;

/// How to render a DICOM file; `Default` is the file's own window and the middle frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DicomOptions {
    /// `(centre, width)` of the linear VOI window, replacing the file's (greyscale only; width ≥ 1).
    pub window: Option<(f64, f64)>,
    /// Frame index counted from 0; `None` is the middle frame ⌊n/2⌋.
    pub frame: Option<u32>,
}

/// One rendered frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// `height * width * 3` bytes, interleaved RGB, row-major.
    pub data: Vec<u8>,
    /// What the user should know about how the file was rendered, one sentence each (frame chosen,
    /// window used, inversion, scaling of wide colour samples, what was ignored).
    pub notes: Vec<String>,
}

/// Every way decoding can fail; each message names the offending value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DicomError {
    #[error("not a DICOM file (no DICM marker and no data set at its start)")]
    NotDicom,
    #[error("truncated DICOM data: {detail}")]
    Truncated { detail: String },
    #[error("corrupt DICOM data: {detail}")]
    Corrupt { detail: String },
    #[error("cannot decode transfer syntax {name} ({uid}): {reason}")]
    UnsupportedTransferSyntax {
        name: String,
        uid: String,
        reason: String,
    },
    #[error("unsupported DICOM image: {detail}")]
    Unsupported { detail: String },
    #[error("the DICOM file has no image: {detail}")]
    NoPixelData { detail: String },
    #[error("DICOM attribute {name} is missing")]
    MissingAttribute { name: &'static str },
    #[error("bad DICOM attribute {name}: {value}")]
    BadAttribute { name: &'static str, value: String },
    #[error("frame {frame} but the file has {frames} frame{} (0..{})", if *frames == 1 { "" } else { "s" }, frames.saturating_sub(1))]
    FrameOutOfRange { frame: u32, frames: u32 },
    #[error("DICOM image too large: {rows} rows × {columns} columns (limits: side {max_side}, {max_pixels} pixels)")]
    TooLarge {
        rows: u64,
        columns: u64,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("pixel data too short: {needed} bytes needed ({detail}), {actual} present")]
    PixelDataTooShort {
        needed: u64,
        actual: u64,
        detail: String,
    },
    #[error("bad window {origin}: centre {center}, width {width} (the width must be a number ≥ 1{})", if *origin == "in the file" { "; override it with --window CENTER,WIDTH" } else { "" })]
    BadWindow {
        center: String,
        width: String,
        /// "in the file" or "from --window".
        origin: &'static str,
    },
    #[error("{codec} decoding failed: {detail}")]
    Decode { codec: &'static str, detail: String },
}

/// Whether `bytes` look like a DICOM file: the 128-byte preamble followed by `DICM`, or `DICM` at the start,
/// or a bare data set whose first element is a plausible group 0002 or 0008 element (explicit or implicit
/// VR, little or big endian). Conservative: PNG, JPEG, GIF, BMP, TIFF and WebP never match.
pub fn is_dicom(bytes: &[u8]) -> bool {
    parse::locate(bytes).is_some()
}

/// A caller's decoder for lossy 8-bit JPEG frames (Baseline, Extended): `meddr_image` passes its
/// libjpeg-turbo-exact one, so that such frames decode exactly as Pillow, and so pydicom, decodes them. With
/// `raw` it returns the components as stored (no colour conversion: the photometric interpretation decides);
/// without, libjpeg's own conversion to RGB (used when the frame has an Adobe marker, as Pillow does). Without
/// a caller's decoder, or when it fails, jpeg-decoder decodes (its IDCT and chroma upsampling differ from
/// libjpeg's by up to 3 levels on pydicom's test files). Lossless JPEG always goes to jpeg-decoder.
pub type JpegFrameDecoder = fn(data: &[u8], raw: bool) -> Result<JpegFrame, String>;

/// What a [`JpegFrameDecoder`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JpegFrame {
    /// The codestream's width and height.
    pub width: u32,
    pub height: u32,
    /// Samples per pixel: 1 or 3.
    pub components: usize,
    /// `height * width * components` bytes, interleaved.
    pub data: Vec<u8>,
}

/// Renders one frame of a DICOM file as RGB8 ([crate docs](crate) for every rule), with the pixel limit
/// [`MAX_PIXELS`].
pub fn decode_to_rgb8(bytes: &[u8], opts: &DicomOptions) -> Result<Rendered, DicomError> {
    decode_to_rgb8_with(bytes, opts, MAX_PIXELS, None)
}

/// [`decode_to_rgb8`] refusing frames of more than `max_pixels` pixels (at most [`MAX_PIXELS`]) before any
/// pixel buffer is allocated; a server taking files from others sets it lower.
pub fn decode_to_rgb8_with_limit(
    bytes: &[u8],
    opts: &DicomOptions,
    max_pixels: u64,
) -> Result<Rendered, DicomError> {
    decode_to_rgb8_with(bytes, opts, max_pixels, None)
}

/// [`decode_to_rgb8_with_limit`] with the caller's decoder for lossy 8-bit JPEG frames.
pub fn decode_to_rgb8_with(
    bytes: &[u8],
    opts: &DicomOptions,
    max_pixels: u64,
    jpeg: Option<JpegFrameDecoder>,
) -> Result<Rendered, DicomError> {
    if let Some((c, w)) = opts.window {
        render::check_window(c, w, "from --window")?;
    }
    let max_pixels = max_pixels.min(MAX_PIXELS);
    let parsed = parse::parse(bytes, max_pixels)?;
    let image = parse::image_info(&parsed, max_pixels)?;
    let frames = image.frames;
    let frame = match opts.frame {
        Some(f) if f >= frames => return Err(DicomError::FrameOutOfRange { frame: f, frames }),
        Some(f) => f,
        None => frames / 2,
    };
    let mut notes = Vec::new();
    if frames > 1 {
        if opts.frame.is_some() {
            notes.push(format!("frame {frame} of {frames} (0..{})", frames - 1));
        } else {
            notes.push(format!(
                "frame {frame} of {frames} (the middle one, counted from 0); choose another with --frame"
            ));
        }
    }
    let samples = codec::decode_frame(&parsed, &image, frame, jpeg)?;
    let data = render::render(&parsed, &image, &samples, opts, &mut notes)?;
    Ok(Rendered {
        width: image.columns,
        height: image.rows,
        data,
        notes,
    })
}
