//! Bad input gives typed errors naming the problem, never a panic.
mod common;

use meddr_image::{decode_rgb, preprocess, ImageError, PreprocessConfig};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(common::shared_dir().join("fixtures/images").join(name)).unwrap()
}

/// Offset of the first SOFn marker's segment in a JPEG.
fn sof_offset(j: &[u8]) -> usize {
    (2..j.len() - 1)
        .find(|&i| j[i] == 0xFF && matches!(j[i + 1], 0xC0..=0xC2))
        .unwrap()
}

fn png_with_ihdr(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&chunk);
    // CRC-32 (IEEE), computed here so the header is otherwise valid.
    let mut crc = 0xFFFF_FFFFu32;
    for &b in &chunk {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    v.extend_from_slice(&(!crc).to_be_bytes());
    v
}

#[test]
fn empty_input() {
    assert_eq!(decode_rgb(&[]), Err(ImageError::Empty));
    assert_eq!(
        preprocess(&[], &PreprocessConfig::default()).unwrap_err(),
        ImageError::Empty
    );
}

#[test]
fn random_bytes_name_the_first_bytes() {
    let mut x = 0x1234_5678u32;
    let bytes: Vec<u8> = (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    match decode_rgb(&bytes) {
        Err(e @ ImageError::UnknownFormat { .. }) => {
            assert!(
                e.to_string()
                    .contains(&format!("{:02x} {:02x}", bytes[0], bytes[1])),
                "{e}"
            )
        }
        other => panic!("expected UnknownFormat, got {other:?}"),
    }
}

#[test]
fn gif_first_frame_decodes_and_broken_gifs_are_refused() {
    // Issue 9.3: GIF used to be refused while upstream (Pillow) reads its first frame. Pixels against Pillow
    // are in pillow_crosscheck.rs; here: a complete 1x1 GIF89a (white/black palette, pixel 0), cut short
    // anywhere, and with a logical screen too large to allocate.
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let rgb = decode_rgb(gif).unwrap();
    assert_eq!(
        (rgb.width, rgb.height, rgb.data.as_slice()),
        (1, 1, &[255u8, 255, 255][..])
    );
    for cut in 6..gif.len() {
        // Never a panic; a file cut before its image data is an error naming GIF.
        if let Err(e) = decode_rgb(&gif[..cut]) {
            assert!(
                e.to_string().contains("GIF") || matches!(e, ImageError::UnknownFormat { .. }),
                "{e}"
            );
        } else {
            assert!(
                cut >= gif.len() - 3,
                "a GIF cut at {cut} of {} decoded",
                gif.len()
            );
        }
    }
    let mut huge = gif.to_vec();
    huge[6..10].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    assert!(
        matches!(decode_rgb(&huge), Err(ImageError::TooLarge { .. })),
        "{:?}",
        decode_rgb(&huge)
    );
}

#[test]
fn truncated_jpeg() {
    for name in ["test2.jpg", "test4.jpg"] {
        let j = fixture(name);
        for cut in [j.len() / 2, j.len() * 9 / 10, sof_offset(&j) + 5] {
            match decode_rgb(&j[..cut]) {
                Err(ImageError::Truncated { format: "JPEG", .. }) => {}
                other => panic!("{name} cut at {cut}: expected Truncated, got {other:?}"),
            }
        }
        // Header only.
        assert!(decode_rgb(&j[..3]).is_err());
    }
}

#[test]
fn truncated_png() {
    let p = fixture("synth_edges_500x200.png");
    assert!(decode_rgb(&p[..p.len() / 2]).is_err());
    assert!(decode_rgb(&p[..40]).is_err());
}

#[test]
fn zero_size_images() {
    let mut j = fixture("test2.jpg");
    let s = sof_offset(&j);
    j[s + 7] = 0; // width high byte
    j[s + 8] = 0; // width low byte
    assert_eq!(
        decode_rgb(&j),
        Err(ImageError::ZeroSize {
            width: 0,
            height: 576
        })
    );
    assert!(matches!(
        decode_rgb(&png_with_ihdr(0, 10)),
        Err(ImageError::ZeroSize { .. } | ImageError::Corrupt { .. })
    ));
}

#[test]
fn absurd_dimensions_fail_before_decoding() {
    let mut j = fixture("test2.jpg");
    let s = sof_offset(&j);
    j[s + 5..s + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    match decode_rgb(&j) {
        Err(
            e @ ImageError::TooLarge {
                width: 65535,
                height: 65535,
                ..
            },
        ) => assert!(e.to_string().contains("65535")),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match decode_rgb(&png_with_ihdr(100_000, 100_000)) {
        Err(ImageError::TooLarge {
            width: 100_000,
            height: 100_000,
            ..
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn unsupported_jpeg_modes_are_typed() {
    let mut j = fixture("test2.jpg");
    let s = sof_offset(&j);
    j[s + 1] = 0xC9; // arithmetic coding
    assert!(matches!(
        decode_rgb(&j),
        Err(ImageError::UnsupportedFeature { format: "JPEG", .. })
    ));
    j[s + 1] = 0xC0;
    j[s + 4] = 12; // 12-bit precision
    let e = decode_rgb(&j).unwrap_err();
    assert!(e.to_string().contains("12"), "{e}");
}

#[test]
fn corrupt_jpeg_never_panics() {
    let j = fixture("test2.jpg");
    let mut x = 99u32;
    for i in 0..200 {
        let mut c = j.clone();
        for _ in 0..8 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = (x as usize >> 4) % c.len();
            c[at] = (x >> 20) as u8;
        }
        let _ = decode_rgb(&c); // Ok or Err, but no panic
        let _ = decode_rgb(&c[..(i * 97) % c.len()]);
    }
}

#[test]
fn float_tiff_is_an_unsupported_colour_type() {
    let img = image::Rgb32FImage::from_pixel(4, 3, image::Rgb([0.5f32, 0.25, 1.0]));
    let mut buf = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb32F(img)
        .write_to(&mut buf, image::ImageFormat::Tiff)
        .unwrap();
    match decode_rgb(buf.get_ref()) {
        Err(e @ ImageError::UnsupportedColor { format: "TIFF", .. }) => {
            assert!(e.to_string().contains("Rgb32F"), "{e}")
        }
        other => panic!("expected UnsupportedColor, got {other:?}"),
    }
}

#[test]
fn bad_config_is_rejected() {
    let j = fixture("test2.jpg");
    let cfg = PreprocessConfig {
        image_size: 0,
        ..Default::default()
    };
    assert!(matches!(
        preprocess(&j, &cfg),
        Err(ImageError::InvalidConfig {
            field: "image_size",
            ..
        })
    ));
}

/// Every input the fuzzer (`tests/fuzz`, targets `image` and `jpeg`) ever crashed on: each must now be a clean
/// error or a decoded image of the right size.
#[test]
fn fuzz_regressions_fail_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions");
    let mut n = 0;
    for target in ["image", "jpeg"] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            n += 1;
            match meddr_image::decode_rgb(&bytes) {
                Ok(img) => assert_eq!(
                    img.data.len(),
                    img.width as usize * img.height as usize * 3,
                    "{}",
                    p.display()
                ),
                Err(e) => assert!(!e.to_string().is_empty(), "{}", p.display()),
            }
        }
    }
    assert!(n > 0, "no regression inputs under {}", dir.display());
    // The png crate's palette panic: a PLTE of 686 bytes (not a multiple of 3) is refused as corrupt.
    let png = std::fs::read(dir.join("image/png-palette-not-whole-entries.png")).unwrap();
    let e = meddr_image::decode_rgb(&png).unwrap_err().to_string();
    assert!(e.contains("PLTE") && e.contains("686"), "{e}");
}

/// A caller's pixel cap (`PreprocessConfig::max_pixels`, the server's decoded-image cap) refuses an image by
/// its header, naming the cap; the same image passes under the default cap, and the cap is per call.
#[test]
fn the_pixel_cap_is_checked_before_decoding() {
    let png = {
        let mut buf = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(40, 30, image::Rgb([7, 7, 7])))
            .write_to(&mut buf, image::ImageFormat::Png)
            .unwrap();
        buf.into_inner()
    };
    let capped = PreprocessConfig {
        max_pixels: 1000,
        ..Default::default()
    };
    match preprocess(&png, &capped) {
        Err(ImageError::TooLarge {
            width: 40,
            height: 30,
            max_pixels: 1000,
            ..
        }) => {}
        other => panic!("expected TooLarge under a 1000-pixel cap, got {other:?}"),
    }
    assert!(preprocess(&png, &PreprocessConfig::default()).is_ok());
    assert!(preprocess(
        &png,
        &PreprocessConfig {
            max_pixels: 1200,
            ..Default::default()
        }
    )
    .is_ok());
}
