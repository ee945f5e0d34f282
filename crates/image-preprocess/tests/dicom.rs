//! DICOM through `meddr_image`'s one decode path (issue 11.1): `decode_rgb`, `decode_rgb_with_notes`,
//! `decode_rgb_with_options` and `preprocess` recognise it by content, pass the window and frame on, apply
//! the caller's pixel limit, and wrap its errors; the renderer itself is checked against pydicom in
//! crates/dicom.
use std::path::{Path, PathBuf};

use meddr_image::{
    decode_rgb, decode_rgb_with_notes, decode_rgb_with_options, preprocess,
    preprocess_with_options, DicomError, DicomOptions, ImageError, PreprocessConfig,
};

fn dicom(name: &str) -> Vec<u8> {
    let d: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/pydicom-test-files");
    assert!(
        d.join("CT_small.dcm").is_file(),
        "{} is missing: run tests/setup.sh (it fetches the pydicom 3.0.2 wheel's test files)",
        d.display()
    );
    std::fs::read(d.join(name)).unwrap()
}

#[test]
fn dicom_goes_through_every_entry_point() {
    let ct = dicom("CT_small.dcm");
    let img = decode_rgb(&ct).unwrap();
    assert_eq!(
        (img.width, img.height, img.data.len()),
        (128, 128, 128 * 128 * 3)
    );
    let (same, notes) = decode_rgb_with_notes(&ct).unwrap();
    assert_eq!(same, img);
    assert!(
        notes.iter().any(|n| n.contains("no window in the file")),
        "{notes:?}"
    );
    let out = preprocess(&ct, &PreprocessConfig::default()).unwrap();
    assert_eq!(out.resized.width, 448);
    assert_eq!(out.notes, notes);

    // Options reach the renderer.
    let w = DicomOptions {
        window: Some((40.0, 400.0)),
        frame: None,
    };
    let (windowed, wn) = decode_rgb_with_options(&ct, &w).unwrap();
    assert_ne!(windowed.data, img.data);
    assert!(wn.iter().any(|n| n.contains("from --window")), "{wn:?}");
    let p = preprocess_with_options(&ct, &PreprocessConfig::default(), &w).unwrap();
    assert_ne!(p.pixel_values, out.pixel_values);
    let f = DicomOptions {
        window: None,
        frame: Some(1),
    };
    assert_eq!(
        decode_rgb_with_options(&ct, &f).unwrap_err(),
        ImageError::Dicom(DicomError::FrameOutOfRange {
            frame: 1,
            frames: 1
        })
    );
    // Other formats ignore the options.
    let jpg =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/retina.jpg"))
            .unwrap();
    assert_eq!(
        decode_rgb_with_options(&jpg, &w).unwrap().0,
        decode_rgb(&jpg).unwrap()
    );
}

#[test]
fn dicom_errors_and_limits() {
    let ct = dicom("CT_small.dcm");
    let e = decode_rgb(&ct[..ct.len() / 2]).unwrap_err();
    assert!(
        matches!(e, ImageError::Dicom(DicomError::Truncated { .. })),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("truncated DICOM data"), "{e}");
    let e = decode_rgb(&dicom("MR_small_jpeg_ls_lossless.dcm")).unwrap_err();
    assert!(
        e.to_string()
            .contains("JPEG-LS Lossless (1.2.840.10008.1.2.4.80)"),
        "{e}"
    );
    // The caller's pixel cap (the server's) applies to DICOM too: 128 × 128 > 10000.
    let capped = PreprocessConfig {
        max_pixels: 10_000,
        ..Default::default()
    };
    match preprocess(&ct, &capped) {
        Err(ImageError::Dicom(DicomError::TooLarge {
            max_pixels: 10_000, ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // A preamble holding another format's magic is still DICOM (the preamble is free-form).
    let mut tricky = ct.clone();
    tricky[..8].copy_from_slice(b"\x89PNG\r\n\x1a\n");
    assert_eq!(decode_rgb(&tricky).unwrap(), decode_rgb(&ct).unwrap());
}
