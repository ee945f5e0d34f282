//! DICOM through the `meddr` binary (issue 11.1): `meddr run --image file.dcm` asks about exactly the image
//! `meddr_dicom` renders (the same tokens and log-probs as the rendering saved as BMP), `--window` and
//! `--frame` reach the renderer, and bad input (truncated file, frame out of range, bad `--window`, an
//! undecodable transfer syntax) ends with one clear message naming the file and value, a non-zero exit status
//! and no panic; `meddr chat` reports a bad `/image` and goes on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{assert_failed, chat_repl, json_of, meddr, model, tmp};
use serde_json::Value as Json;

fn dicom_file(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.cache/pydicom-test-files")
        .join(name);
    assert!(
        p.is_file(),
        "{} is missing: run tests/setup.sh (it fetches the pydicom 3.0.2 wheel's test files)",
        p.display()
    );
    p
}

/// A 24-bit bottom-up BMP of an RGB8 image (decoded by `image` to exactly these pixels).
fn bmp(img: &meddr_image::RgbImage) -> Vec<u8> {
    let (w, h) = (img.width as usize, img.height as usize);
    let stride = (3 * w).div_ceil(4) * 4;
    let size = 54 + stride * h;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(w as i32).to_le_bytes());
    b.extend_from_slice(&(h as i32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for y in (0..h).rev() {
        for x in 0..w {
            let i = (y * w + x) * 3;
            b.extend_from_slice(&[img.data[i + 2], img.data[i + 1], img.data[i]]);
        }
        b.resize(b.len() + stride - 3 * w, 0);
    }
    b
}

fn run(image: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "-m",
        model().to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        "--max-new-tokens",
        "3",
        "--logprobs",
        "3",
        "-p",
        "Describe the image.",
        "--image",
        image.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    meddr(&args)
}

fn warnings(j: &Json) -> Vec<String> {
    j["warnings"]
        .as_array()
        .map(|a| a.iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn run_asks_about_the_rendered_dicom_image() {
    let ct = dicom_file("CT_small.dcm");
    let dir = tmp().join("dicom-run");
    std::fs::create_dir_all(&dir).unwrap();
    let j = json_of(&run(&ct, &[]));
    let w = warnings(&j);
    assert!(
        w.iter()
            .any(|n| n.contains("CT_small.dcm") && n.contains("no window in the file")),
        "{w:?}"
    );
    // The same pixels as a BMP: the same tokens and log-probs.
    let (rgb, _) = meddr_image::decode_rgb_with_notes(&std::fs::read(&ct).unwrap()).unwrap();
    let bmp_path = dir.join("ct_small.bmp");
    std::fs::write(&bmp_path, bmp(&rgb)).unwrap();
    let jb = json_of(&run(&bmp_path, &[]));
    assert_eq!(
        j["tokens"], jb["tokens"],
        "DICOM and its BMP rendering give different answers"
    );

    // --window reaches the renderer (and changes the pixels: a soft-tissue window of a CT).
    let jw = json_of(&run(&ct, &["--window", "40,400"]));
    assert!(
        warnings(&jw)
            .iter()
            .any(|n| n.contains("window C=40 W=400 from --window")),
        "{:?}",
        warnings(&jw)
    );
    let (windowed, _) = meddr_image::decode_rgb_with_options(
        &std::fs::read(&ct).unwrap(),
        &meddr_image::DicomOptions {
            window: Some((40.0, 400.0)),
            frame: None,
        },
    )
    .unwrap();
    assert_ne!(windowed.data, rgb.data);
    // A negative centre is a value, not an option.
    json_of(&run(&ct, &["--window", "-600,1500"]));

    // Multi-frame: the middle frame by default, --frame picks another.
    let ybr = dicom_file("examples_ybr_color.dcm");
    let jm = json_of(&run(&ybr, &[]));
    assert!(
        warnings(&jm).iter().any(|n| n.contains("frame 15 of 30")),
        "{:?}",
        warnings(&jm)
    );
    let jf = json_of(&run(&ybr, &["--frame", "3"]));
    assert!(
        warnings(&jf).iter().any(|n| n.contains("frame 3 of 30")),
        "{:?}",
        warnings(&jf)
    );
}

#[test]
fn bad_dicom_input_fails_clearly() {
    let ct = dicom_file("CT_small.dcm");
    let dir = tmp().join("dicom-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(&ct).unwrap();
    let cut = dir.join("cut.dcm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_failed(&run(&cut, &[]), 1, &["cut.dcm", "truncated DICOM data"]);
    assert_failed(
        &run(&ct, &["--frame", "99"]),
        1,
        &["CT_small.dcm", "frame 99 but the file has 1 frame (0..0)"],
    );
    assert_failed(
        &run(&dicom_file("examples_ybr_color.dcm"), &["--frame", "30"]),
        1,
        &["frame 30 but the file has 30 frames (0..29)"],
    );
    assert_failed(
        &run(&dicom_file("MR_small_jpeg_ls_lossless.dcm"), &[]),
        1,
        &[
            "MR_small_jpeg_ls_lossless.dcm",
            "JPEG-LS Lossless (1.2.840.10008.1.2.4.80)",
        ],
    );
    // Argument errors: clap's usage status.
    for bad in ["40", "40,0", "x,400"] {
        assert_failed(
            &run(&ct, &["--window", bad]),
            2,
            &[&format!(
                "--window wants CENTER,WIDTH with WIDTH ≥ 1, got {bad:?}"
            )],
        );
    }
}

#[test]
fn chat_takes_dicom_and_reports_a_bad_one() {
    let ct = dicom_file("CT_small.dcm");
    let dir = tmp().join("dicom-chat");
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("half.dcm");
    let bytes = std::fs::read(&ct).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let script = format!(
        "Describe the image.\n/image {}\n/image {}\nAnything else?\n/quit\n",
        cut.display(),
        dicom_file("examples_ybr_color.dcm").display()
    );
    let (stdout, stderr) = chat_repl(
        &[
            "--max-new-tokens",
            "2",
            "--image",
            ct.to_str().unwrap(),
            "--window",
            "40,400",
            "--frame",
            "0",
        ],
        &script,
    );
    assert!(
        stderr.contains("half.dcm") && stderr.contains("truncated DICOM data"),
        "{stderr}"
    );
    // Two answers: about the CT, then about frame 0 of the 30-frame file.
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}
