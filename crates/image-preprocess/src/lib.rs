//! MedDr image preprocessing, bit-exact with the upstream Python pipeline
//! (`PIL.Image.open(..).convert('RGB')` → `expand2square` → `Resize((448, 448), BICUBIC)` →
//! `ToTensor` → `Normalize`), in pure Rust so it also builds for wasm32.
//!
//! Supported inputs and how they are turned into RGB (each mirrors what Pillow 10.2 does):
//! - JPEG (baseline / extended / progressive Huffman, 8-bit): own decoder ([`jpeg`]) matching
//!   libjpeg-turbo's default output (islow IDCT, fancy upsampling). 1 component = grey
//!   (replicated), 3 = YCbCr or RGB (per JFIF/Adobe/component ids), 4 = CMYK/YCCK read as
//!   inverted (Adobe) CMYK and converted with Pillow's `MULDIV255` formula. Arithmetic coding,
//!   lossless, hierarchical, 12-bit and 2-component JPEGs are rejected with a typed error.
//! - PNG, BMP, TIFF, WebP via the `image` crate (its `jpeg` feature is left off: JPEG never goes
//!   through it): grey is replicated, alpha is dropped without
//!   compositing, palettes are expanded, 16-bit RGB(A) / grey+alpha keep the high byte, 16-bit
//!   grey is clipped to 0..=255 (Pillow opens it as mode `I`, whose RGB conversion clips).
//!   Float samples are rejected.
//! - GIF: the first frame, as Pillow opens it (see `convert.rs`).
//! - DICOM (with or without the 128-byte preamble): rendered to RGB8 by [`meddr_dicom`] — rescale, the
//!   standard's linear VOI window (the file's first, or [`DicomOptions::window`]), MONOCHROME1 inverted,
//!   palette and YBR colour, one frame of a multi-frame file (the middle one unless
//!   [`DicomOptions::frame`] says otherwise) — then preprocessed like any other image. Its notes (frame and
//!   window used) come back with [`decode_rgb_with_notes`] and in [`PreprocessedImage::notes`].
//! - Everything else: typed error naming the format or the first bytes.

mod convert;
pub mod jpeg;
mod resize;

use thiserror::Error;

pub use meddr_dicom::{DicomError, DicomOptions};
pub use resize::resize_bicubic;

/// Largest accepted side, in pixels.
pub const MAX_DIMENSION: u32 = 16_384;
/// Largest accepted pixel count (bounds decoder memory on native and wasm32 alike).
#[cfg(not(fuzzing))]
pub const MAX_PIXELS: u64 = 256 * 1024 * 1024;
/// Fuzzing builds (`--cfg fuzzing`, `tests/fuzz`) take 2^14 pixels (128 × 128) at most, so that an input
/// declaring a huge image cannot make one execution slow; every check and decoding path stays the same.
#[cfg(fuzzing)]
pub const MAX_PIXELS: u64 = 1 << 14;

/// Interleaved 8-bit RGB image, row-major HWC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Image filled with one colour; errors instead of panicking on absurd sizes.
    pub fn filled(width: u32, height: u32, color: [u8; 3]) -> Result<Self, ImageError> {
        check_dimensions(width, height)?;
        let n = width as usize * height as usize;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            data.extend_from_slice(&color);
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// The pixel at column `x`, row `y`, or `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        Some([self.data[i], self.data[i + 1], self.data[i + 2]])
    }
}

/// MedDr's preprocessing settings.
#[derive(Clone, Debug, PartialEq)]
pub struct PreprocessConfig {
    pub image_size: u32,
    pub pad2square: bool,
    pub pad_color: [u8; 3],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Images with more pixels (by their header) are refused before decoding ([`ImageError::TooLarge`]);
    /// at most [`MAX_PIXELS`]. A server taking images from others sets it lower: a small PNG can declare
    /// 2²⁸ pixels of zeros and cost a gigabyte to decode.
    pub max_pixels: u64,
}

impl Default for PreprocessConfig {
    /// InternVL-Chat-V1-2 / MedDr: 448², pad2square on, pad colour `int(255 * mean)` (truncated,
    /// which is why it is (123, 116, 103) and not the rounded (124, 116, 104)), ImageNet stats.
    fn default() -> Self {
        Self {
            image_size: 448,
            pad2square: true,
            pad_color: [123, 116, 103],
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            max_pixels: MAX_PIXELS,
        }
    }
}

/// Output of [`preprocess`].
#[derive(Clone, Debug)]
pub struct PreprocessedImage {
    /// `[3, S, S]` channel-first, normalised.
    pub pixel_values: Vec<f32>,
    /// The uint8 image right before `ToTensor` (S × S).
    pub resized: RgbImage,
    /// What the user should be told about the conversion ([`decode_rgb_with_notes`]).
    pub notes: Vec<String>,
}

/// Every way preprocessing can fail; messages name the offending value.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ImageError {
    #[error("empty input: 0 bytes")]
    Empty,
    #[error("unknown image format (first bytes: {first_bytes})")]
    UnknownFormat { first_bytes: String },
    #[error(
        "unsupported image format {format} (supported: JPEG, PNG, BMP, TIFF, WebP, GIF, DICOM)"
    )]
    UnsupportedFormat { format: &'static str },
    #[error("zero-size image: width {width}, height {height}")]
    ZeroSize { width: u32, height: u32 },
    #[error("image too large: {width}x{height} (limits: side {max_side}, {max_pixels} pixels)")]
    TooLarge {
        width: u64,
        height: u64,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("unsupported colour type {color_type} in {format}")]
    UnsupportedColor {
        format: &'static str,
        color_type: String,
    },
    #[error("unsupported {format} feature: {feature}")]
    UnsupportedFeature {
        format: &'static str,
        feature: String,
    },
    #[error("truncated {format} data: {detail}")]
    Truncated {
        format: &'static str,
        detail: String,
    },
    #[error("corrupt {format} data: {detail}")]
    Corrupt {
        format: &'static str,
        detail: String,
    },
    #[error("invalid config field {field}: {value}")]
    InvalidConfig { field: &'static str, value: String },
    #[error("invalid image buffer: {width}x{height} needs {expected} bytes, got {actual}")]
    BadBuffer {
        width: u32,
        height: u32,
        expected: u64,
        actual: u64,
    },
    /// A DICOM file that cannot be rendered; the message names the value (transfer syntax, frame, …).
    #[error(transparent)]
    Dicom(#[from] meddr_dicom::DicomError),
}

thread_local! {
    /// [`PreprocessConfig::max_pixels`] of the `preprocess` call running on this thread. Every decoder checks
    /// its header's size through [`check_dimensions_u64`]; a per-call limit read here reaches all of them
    /// without a parameter on each decoder's signature.
    static PIXEL_LIMIT: std::cell::Cell<u64> = const { std::cell::Cell::new(MAX_PIXELS) };
}

/// The pixel limit of the `preprocess` call running on this thread ([`MAX_PIXELS`] outside one).
pub(crate) fn pixel_limit() -> u64 {
    PIXEL_LIMIT.with(|l| l.get()).min(MAX_PIXELS)
}

/// Sets the pixel limit for this thread until dropped (restoring the previous one, also on unwinding).
struct PixelLimit(u64);

impl PixelLimit {
    fn set(limit: u64) -> Self {
        PixelLimit(PIXEL_LIMIT.with(|l| l.replace(limit)))
    }
}

impl Drop for PixelLimit {
    fn drop(&mut self) {
        PIXEL_LIMIT.with(|l| l.set(self.0));
    }
}

/// Rejects zero and absurd sizes before anything is allocated.
pub fn check_dimensions(width: u32, height: u32) -> Result<(), ImageError> {
    check_dimensions_u64(width as u64, height as u64)
}

pub(crate) fn check_dimensions_u64(width: u64, height: u64) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize {
            width: width as u32,
            height: height as u32,
        });
    }
    let max_pixels = pixel_limit();
    if width > MAX_DIMENSION as u64 || height > MAX_DIMENSION as u64 || width * height > max_pixels
    {
        return Err(ImageError::TooLarge {
            width,
            height,
            max_side: MAX_DIMENSION,
            max_pixels,
        });
    }
    Ok(())
}

fn check_buffer(img: &RgbImage) -> Result<(), ImageError> {
    check_dimensions(img.width, img.height)?;
    let expected = img.width as u64 * img.height as u64 * 3;
    if img.data.len() as u64 != expected {
        return Err(ImageError::BadBuffer {
            width: img.width,
            height: img.height,
            expected,
            actual: img.data.len() as u64,
        });
    }
    Ok(())
}

/// Decodes any supported format and converts it to RGB the way Pillow's `convert('RGB')` does (DICOM: as
/// [`meddr_dicom`] renders it with default options).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    Ok(convert::decode_rgb(bytes, &DicomOptions::default())?.0)
}

/// [`decode_rgb`] plus notes for the user on what the conversion lost or chose, each one sentence: that a
/// 16-bit greyscale image was clipped to 8 bits (Pillow's rule, which upstream follows, so the pixels stay
/// upstream's); for DICOM, the frame and window used, an inversion, wide colour scaled to 8 bits.
pub fn decode_rgb_with_notes(bytes: &[u8]) -> Result<(RgbImage, Vec<String>), ImageError> {
    convert::decode_rgb(bytes, &DicomOptions::default())
}

/// [`decode_rgb_with_notes`] with a DICOM file's window and frame chosen by `dicom` (ignored for other
/// formats).
pub fn decode_rgb_with_options(
    bytes: &[u8],
    dicom: &DicomOptions,
) -> Result<(RgbImage, Vec<String>), ImageError> {
    convert::decode_rgb(bytes, dicom)
}

/// MedDr's `expand2square`: paste onto a `max(w, h)` square at `((s−w)//2, 0)` or `(0, (s−h)//2)`.
pub fn expand_to_square(img: &RgbImage, color: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    if w == h || img.data.len() != w * h * 3 {
        return img.clone();
    }
    let s = w.max(h);
    let (ox, oy) = if w > h {
        (0, (s - h) / 2)
    } else {
        ((s - w) / 2, 0)
    };
    let mut data = Vec::with_capacity(s * s * 3);
    for _ in 0..s * s {
        data.extend_from_slice(&color);
    }
    for y in 0..h {
        let dst = ((y + oy) * s + ox) * 3;
        data[dst..dst + w * 3].copy_from_slice(&img.data[y * w * 3..(y + 1) * w * 3]);
    }
    RgbImage {
        width: s as u32,
        height: s as u32,
        data,
    }
}

/// `ToTensor` + `Normalize` in f32 with true divisions (as torch does), channel-first.
pub fn normalize_chw(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = img.width as usize * img.height as usize;
    let mut out = vec![0f32; 3 * n.min(img.data.len() / 3)];
    let n = out.len() / 3;
    for c in 0..3 {
        let plane = &mut out[c * n..(c + 1) * n];
        for (i, v) in plane.iter_mut().enumerate() {
            let x = img.data[i * 3 + c] as f32 / 255.0;
            *v = (x - mean[c]) / std[c];
        }
    }
    out
}

/// The whole MedDr transform from file bytes to `pixel_values`.
pub fn preprocess(bytes: &[u8], cfg: &PreprocessConfig) -> Result<PreprocessedImage, ImageError> {
    preprocess_with_options(bytes, cfg, &DicomOptions::default())
}

/// [`preprocess`] with a DICOM file's window and frame chosen by `dicom` (ignored for other formats).
///
/// A separate argument rather than a [`PreprocessConfig`] field: the config describes the model's
/// preprocessing (it is built from the GGUF's metadata), the DICOM options the user's choice for one file.
pub fn preprocess_with_options(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    dicom: &DicomOptions,
) -> Result<PreprocessedImage, ImageError> {
    if cfg.image_size == 0 || cfg.image_size > MAX_DIMENSION {
        return Err(ImageError::InvalidConfig {
            field: "image_size",
            value: cfg.image_size.to_string(),
        });
    }
    let limit = PixelLimit::set(cfg.max_pixels);
    let (rgb, notes) = decode_rgb_with_options(bytes, dicom)?;
    let rgb = if cfg.pad2square {
        expand_to_square(&rgb, cfg.pad_color)
    } else {
        rgb
    };
    // The square canvas may exceed the limit that its source met; the limit is about decoding input.
    drop(limit);
    check_buffer(&rgb)?;
    let resized = resize_bicubic(&rgb, cfg.image_size, cfg.image_size);
    let pixel_values = normalize_chw(&resized, cfg.mean, cfg.std);
    Ok(PreprocessedImage {
        pixel_values,
        resized,
        notes,
    })
}
