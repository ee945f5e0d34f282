//! Format sniffing (by content, as Pillow does) and Pillow's `convert('RGB')` rules for what the
//! `image` crate decodes.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::{check_dimensions_u64, jpeg, ImageError, RgbImage, MAX_DIMENSION, MAX_PIXELS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jpeg,
    Other(ImageFormat, &'static str),
}

fn sniff(bytes: &[u8]) -> Result<Kind, ImageError> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Ok(Kind::Jpeg);
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(Kind::Other(ImageFormat::Png, "PNG"));
    }
    if starts(b"BM") {
        return Ok(Kind::Other(ImageFormat::Bmp, "BMP"));
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Ok(Kind::Other(ImageFormat::Tiff, "TIFF"));
    }
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Ok(Kind::Other(ImageFormat::WebP, "WebP"));
    }
    let unsupported: &[(&[u8], &'static str)] = &[
        (b"GIF87a", "GIF"),
        (b"GIF89a", "GIF"),
        (b"II+\0", "BigTIFF"),
        (b"MM\0+", "BigTIFF"),
        (b"\0\0\x01\0", "ICO"),
        (b"8BPS", "PSD"),
        (b"%PDF", "PDF"),
        (b"DICM", "DICOM"),
        (b"\x76\x2f\x31\x01", "OpenEXR"),
        (b"#?RADIANCE", "HDR"),
        (b"qoif", "QOI"),
        (b"\0\0\0\x0cjP  ", "JPEG 2000"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
    ];
    for (magic, name) in unsupported {
        if starts(magic) {
            return Err(ImageError::UnsupportedFormat { format: name });
        }
    }
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        return Err(ImageError::UnsupportedFormat { format: "DICOM" });
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Err(ImageError::UnsupportedFormat {
            format: "HEIF/AVIF",
        });
    }
    let first: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    Err(ImageError::UnknownFormat {
        first_bytes: first.join(" "),
    })
}

pub(crate) fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    match sniff(bytes)? {
        Kind::Jpeg => jpeg::decode_rgb(bytes),
        Kind::Other(fmt, name) => decode_other(bytes, fmt, name),
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_DIMENSION);
    l.max_image_height = Some(MAX_DIMENSION);
    // Largest legitimate buffer: MAX_PIXELS of 16-bit RGBA.
    l.max_alloc = Some(MAX_PIXELS * 8);
    l
}

fn map_err(e: image::ImageError, name: &'static str) -> ImageError {
    use image::error::ImageError as E;
    match e {
        E::Limits(l) => ImageError::Corrupt {
            format: name,
            detail: format!("decoder limit exceeded: {l}"),
        },
        E::Unsupported(u) => ImageError::UnsupportedFeature {
            format: name,
            feature: u.to_string(),
        },
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => ImageError::Truncated {
            format: name,
            detail: io.to_string(),
        },
        other => {
            let msg = other.to_string();
            let lower = msg.to_ascii_lowercase();
            if lower.contains("eof") || lower.contains("end of") || lower.contains("truncat") {
                ImageError::Truncated {
                    format: name,
                    detail: msg,
                }
            } else {
                ImageError::Corrupt {
                    format: name,
                    detail: msg,
                }
            }
        }
    }
}

fn decode_other(
    bytes: &[u8],
    fmt: ImageFormat,
    name: &'static str,
) -> Result<RgbImage, ImageError> {
    // Header dimensions first, so absurd sizes fail before any pixel buffer exists. PNG's IHDR
    // is read directly: the png crate wants to see IDAT before it reports the size.
    if fmt == ImageFormat::Png && bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        check_dimensions_u64(be(16) as u64, be(20) as u64)?;
    }
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), fmt)
        .into_dimensions()
        .map_err(|e| map_err(e, name))?;
    check_dimensions_u64(w as u64, h as u64)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), fmt);
    reader.limits(limits());
    let img = reader.decode().map_err(|e| map_err(e, name))?;
    to_rgb_pillow(img, name)
}

/// Pillow's `convert('RGB')` on what Pillow would have opened.
fn to_rgb_pillow(img: DynamicImage, name: &'static str) -> Result<RgbImage, ImageError> {
    let (width, height) = (img.width(), img.height());
    check_dimensions_u64(width as u64, height as u64)?;
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        DynamicImage::ImageLuma8(b) => b.as_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => b
            .as_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        // Pillow opens 16-bit grey as mode I; I → RGB clips to 0..=255.
        DynamicImage::ImageLuma16(b) => b
            .as_raw()
            .iter()
            .flat_map(|&v| {
                let c = v.min(255) as u8;
                [c, c, c]
            })
            .collect(),
        // Pillow unpacks 16-bit colour and grey+alpha with the *;16B/L rawmodes: high byte.
        DynamicImage::ImageLumaA16(b) => b
            .as_raw()
            .chunks_exact(2)
            .flat_map(|p| {
                let c = (p[0] >> 8) as u8;
                [c, c, c]
            })
            .collect(),
        DynamicImage::ImageRgb16(b) => b.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => {
            return Err(ImageError::UnsupportedColor {
                format: name,
                color_type: format!("{:?}", other.color()),
            })
        }
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}
