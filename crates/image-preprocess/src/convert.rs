//! Format sniffing (by content, as Pillow does) and Pillow's `convert('RGB')` rules for what the
//! `image` crate decodes.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::{check_dimensions_u64, jpeg, ImageError, RgbImage, MAX_DIMENSION, MAX_PIXELS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jpeg,
    Gif,
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
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(Kind::Gif);
    }
    let unsupported: &[(&[u8], &'static str)] = &[
        (b"II+\0", "BigTIFF"),
        (b"MM\0+", "BigTIFF"),
        (b"\0\0\x01\0", "ICO"),
        (b"8BPS", "PSD"),
        (b"%PDF", "PDF"),
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

/// The decoded image and what the user should know about how it was converted (see [`crate::decode_rgb_with_notes`]).
/// DICOM is recognised first (its 128-byte preamble may hold anything, even another format's magic) and
/// rendered by `meddr_dicom` with `dicom`'s window and frame.
pub(crate) fn decode_rgb(
    bytes: &[u8],
    dicom: &meddr_dicom::DicomOptions,
) -> Result<(RgbImage, Vec<String>), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if meddr_dicom::is_dicom(bytes) {
        let r =
            meddr_dicom::decode_to_rgb8_with(bytes, dicom, crate::pixel_limit(), Some(dicom_jpeg))?;
        check_dimensions_u64(r.width as u64, r.height as u64)?;
        return Ok((
            RgbImage {
                width: r.width,
                height: r.height,
                data: r.data,
            },
            r.notes,
        ));
    }
    match sniff(bytes)? {
        Kind::Jpeg => Ok((jpeg::decode_rgb(bytes)?, Vec::new())),
        Kind::Gif => Ok((decode_gif(bytes)?, Vec::new())),
        Kind::Other(fmt, name) => decode_other(bytes, fmt, name),
    }
}

/// DICOM's lossy JPEG frames through our libjpeg-turbo-exact decoder (see [`meddr_dicom::JpegFrameDecoder`]).
fn dicom_jpeg(data: &[u8], raw: bool) -> Result<meddr_dicom::JpegFrame, String> {
    if raw {
        let s = jpeg::decode_samples(data).map_err(|e| e.to_string())?;
        Ok(meddr_dicom::JpegFrame {
            width: s.width,
            height: s.height,
            components: s.components,
            data: s.data,
        })
    } else {
        let img = jpeg::decode_rgb(data).map_err(|e| e.to_string())?;
        Ok(meddr_dicom::JpegFrame {
            width: img.width,
            height: img.height,
            components: 3,
            data: img.data,
        })
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

/// The png crate (0.18) panics expanding a palette whose PLTE chunk is not a whole number of RGB entries (a
/// `tests/fuzz` find); the PNG spec requires 3 bytes per entry and at most 256 entries, so such a file is
/// refused here as corrupt. Walks the chunk list with checked offsets; stops at IDAT (PLTE must precede it).
fn check_png_palette(bytes: &[u8]) -> Result<(), ImageError> {
    let mut pos = 8usize;
    while let Some(head) = pos.checked_add(8).and_then(|end| bytes.get(pos..end)) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match &head[4..8] {
            b"PLTE" if len % 3 != 0 || len > 768 || len == 0 => {
                return Err(ImageError::Corrupt {
                    format: "PNG",
                    detail: format!(
                        "the palette (PLTE) is {len} bytes, not 1 to 256 RGB entries of 3 bytes"
                    ),
                })
            }
            b"IDAT" | b"IEND" => return Ok(()),
            _ => {}
        }
        // length + type + data + CRC
        match pos.checked_add(12).and_then(|p| p.checked_add(len)) {
            Some(next) => pos = next,
            None => return Ok(()),
        }
    }
    Ok(())
}

fn decode_other(
    bytes: &[u8],
    fmt: ImageFormat,
    name: &'static str,
) -> Result<(RgbImage, Vec<String>), ImageError> {
    // Header dimensions first, so absurd sizes fail before any pixel buffer exists. PNG's IHDR
    // is read directly: the png crate wants to see IDAT before it reports the size.
    if fmt == ImageFormat::Png && bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        check_dimensions_u64(be(16) as u64, be(20) as u64)?;
        check_png_palette(bytes)?;
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

/// GIF as Pillow 10.2 opens it (`GifImagePlugin`, frame 0) and then `convert('RGB')`s it: a canvas of palette
/// indices the size of the logical screen (grown to hold the first frame if it sticks out), filled with the
/// frame's transparency index when it has one and with 0 otherwise; the first frame's indices at its offset;
/// each index looked up in the frame's palette (its local one, else the global one; transparency ignored, as
/// `convert('RGB')` does), where entries past the palette's end keep Pillow's default grey ramp (i, i, i).
/// Later frames of an animation are never decoded. Why not the `image` crate's GIF decoder: it composites to
/// RGBA with transparent pixels as black, which is not what Pillow's first frame gives.
fn decode_gif(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    const NAME: &str = "GIF";
    let err = |e: gif::DecodingError| match e {
        gif::DecodingError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Truncated {
                format: NAME,
                detail: io.to_string(),
            }
        }
        other => ImageError::Corrupt {
            format: NAME,
            detail: other.to_string(),
        },
    };
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    // One index byte per pixel: the pixel cap bounds what the decoder may allocate for a frame.
    opts.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(MAX_PIXELS).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut d = opts.read_info(Cursor::new(bytes)).map_err(err)?;
    let (sw, sh) = (u64::from(d.width()), u64::from(d.height()));
    let global = d.global_palette().map(<[u8]>::to_vec);
    let f = d
        .read_next_frame()
        .map_err(err)?
        .ok_or(ImageError::Corrupt {
            format: NAME,
            detail: "the file holds no image".into(),
        })?;
    let (left, top, fw, fh) = (
        u64::from(f.left),
        u64::from(f.top),
        u64::from(f.width),
        u64::from(f.height),
    );
    let (w, h) = (sw.max(left + fw), sh.max(top + fh));
    check_dimensions_u64(w, h)?;
    let (w, h) = (w as usize, h as usize);
    let mut palette = [0u8; 768];
    for i in 0..256 {
        palette[3 * i..3 * i + 3].fill(i as u8);
    }
    if let Some(p) = f.palette.as_deref().or(global.as_deref()) {
        let n = p.len().min(768);
        palette[..n].copy_from_slice(&p[..n]);
    }
    let mut index = vec![f.transparent.unwrap_or(0); w * h];
    let (left, top, fw) = (left as usize, top as usize, fw as usize);
    for (y, row) in f.buffer.chunks_exact(fw.max(1)).enumerate() {
        let start = (top + y) * w + left;
        index[start..start + row.len()].copy_from_slice(row);
    }
    let data = index.iter().flat_map(|&i| {
        let i = 3 * i as usize;
        [palette[i], palette[i + 1], palette[i + 2]]
    });
    Ok(RgbImage {
        width: w as u32,
        height: h as u32,
        data: data.collect(),
    })
}

/// Pillow's `convert('RGB')` on what Pillow would have opened, and notes on what that loses.
fn to_rgb_pillow(
    img: DynamicImage,
    name: &'static str,
) -> Result<(RgbImage, Vec<String>), ImageError> {
    let (width, height) = (img.width(), img.height());
    check_dimensions_u64(width as u64, height as u64)?;
    let mut notes = Vec::new();
    if let DynamicImage::ImageLuma16(b) = &img {
        let clipped = b.as_raw().iter().filter(|&&v| v > 255).count();
        if clipped > 0 {
            let max = b.as_raw().iter().copied().max().unwrap_or(0);
            notes.push(format!(
                "this {name} is 16-bit greyscale: like Pillow, and so upstream MedDr, the conversion clips values above \
                 255, which turns {:.1} % of its pixels white (largest value {max}); window it to 8 bits first, or use \
                 the DICOM original",
                100.0 * clipped as f64 / b.as_raw().len().max(1) as f64
            ));
        }
    }
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
    Ok((
        RgbImage {
            width,
            height,
            data,
        },
        notes,
    ))
}
