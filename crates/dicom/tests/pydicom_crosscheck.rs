//! Real DICOM files (the test files of PyPI's pydicom 3.0.2 wheel, fetched by tests/setup.sh into
//! `.cache/pydicom-test-files/`) and edge cases synthesized with pydicom, each rendered by `meddr_dicom` and by
//! an independent pydicom + numpy renderer (tests/pydicom_reference.py) and compared byte for byte; the same
//! image in another encoding must render identically to its uncompressed twin; files that cannot be decoded
//! must give an error naming the reason.
//!
//! Every image is rendered twice: through `meddr_image` (the path every entry point takes; lossy JPEG frames
//! go through its libjpeg-turbo-exact decoder, as Pillow decodes them for pydicom), which must equal pydicom
//! byte for byte, and through `meddr_dicom::decode_to_rgb8` alone, which must give the same bytes except for
//! lossy JPEG, decoded there by jpeg-decoder (another IDCT and chroma upsampling): each sample within
//! `JPEG_TOLERANCE` of pydicom's, the largest difference printed.

use std::path::{Path, PathBuf};

use meddr_dicom::{decode_to_rgb8, DicomError, DicomOptions, Rendered};
use serde_json::{json, Value};

const JPEG_TOLERANCE: u8 = 3;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn test_files() -> PathBuf {
    let d = workspace_root().join(".cache/pydicom-test-files");
    assert!(
        d.join("CT_small.dcm").is_file(),
        "{} is missing: run tests/setup.sh (it fetches the pydicom 3.0.2 wheel's test files)",
        d.display()
    );
    d
}

fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python for the pydicom cross-check not found at {} (set MEDDR_PYTHON; it needs numpy and pydicom==3.0.2 \
         from tests/requirements.txt)",
        p.display()
    );
    p
}

#[derive(Clone, Copy, Debug)]
enum Want {
    /// Equal to pydicom's rendering of the same file and options.
    Pydicom,
    /// Within [`JPEG_TOLERANCE`] of pydicom's rendering (lossy JPEG with YCbCr colour).
    PydicomJpeg,
    /// Identical to our rendering of this other file (same options), which itself equals pydicom's.
    Twin(&'static str),
    /// Equal to pydicom's rendering, and the notes contain this text.
    PydicomNote(&'static str),
    /// An error whose message contains this text.
    Error(&'static str),
}

struct Case {
    name: &'static str,
    path: &'static str,
    frame: Option<u32>,
    window: Option<(f64, f64)>,
    want: Want,
}

const fn case(name: &'static str, path: &'static str, want: Want) -> Case {
    Case {
        name,
        path,
        frame: None,
        window: None,
        want,
    }
}

fn cases() -> Vec<Case> {
    use Want::*;
    let mut v = vec![
        // Rescale (slope 1, intercept −1024), no window: min/max.
        case(
            "ct_small",
            "CT_small.dcm",
            PydicomNote("no window in the file"),
        ),
        // The user's window replaces the file's (here: none).
        Case {
            window: Some((40.0, 400.0)),
            ..case(
                "ct_small_window",
                "CT_small.dcm",
                PydicomNote("window C=40 W=400 from --window"),
            )
        },
        // The MR_small family: one 64×64 image in every encoding.
        case(
            "mr_small",
            "MR_small.dcm",
            PydicomNote("window C=600 W=1600 from the file"),
        ),
        case("mr_implicit", "MR_small_implicit.dcm", Twin("mr_small")),
        case("mr_bigendian", "MR_small_bigendian.dcm", Twin("mr_small")),
        case("mr_expb", "MR_small_expb.dcm", Twin("mr_small")),
        case("mr_rle", "MR_small_RLE.dcm", Twin("mr_small")),
        case("mr_j2k", "MR_small_jp2klossless.dcm", Twin("mr_small")),
        case("mr_padded", "MR_small_padded.dcm", Twin("mr_small")),
        case("mr_implicit_py", "MR_small_implicit.dcm", Pydicom),
        case("mr_bigendian_py", "MR_small_bigendian.dcm", Pydicom),
        case("mr_rle_py", "MR_small_RLE.dcm", Pydicom),
        case("mr_j2k_py", "MR_small_jp2klossless.dcm", Pydicom),
        // MONOCHROME1 CR (12 bits stored, rescale 0.684 / 200, window from the file).
        case(
            "cr_mono1",
            "dicomdirtests/77654033/CR1/6154",
            PydicomNote("MONOCHROME1: inverted after windowing"),
        ),
        case("cr_mono1_b", "dicomdirtests/77654033/CR3/6278", Pydicom),
        case("ct_dicomdir", "dicomdirtests/98892001/CT5N/2062", Pydicom),
        case("mr_dicomdir", "dicomdirtests/98892003/MR2/4950", Pydicom),
        // Two windows in the file: the first is used.
        case(
            "overlay_two_windows",
            "examples_overlay.dcm",
            PydicomNote("the first of 2"),
        ),
        // JPEG 2000 greyscale: 14 and 16 bits, signed; and a pixel representation the codestream disagrees with.
        case("j2k_693", "693_J2KI.dcm", Pydicom),
        case("j2k_1024", "JPEG2000.dcm", Pydicom),
        case(
            "j2k_pixelrep_mismatch",
            "J2K_pixelrep_mismatch.dcm",
            Pydicom,
        ),
        // Deflate.
        case("deflate", "image_dfl.dcm", Pydicom),
        // 1-bit, little and big endian.
        case("liver_1bit", "liver_1frame.dcm", Pydicom),
        case("liver_1bit_be", "liver_expb_1frame.dcm", Twin("liver_1bit")),
        // 32-bit greyscale, 15 frames (default: the middle one, 7), native and RLE, both byte orders.
        case(
            "rtdose",
            "rtdose.dcm",
            PydicomNote("frame 7 of 15 (the middle one"),
        ),
        case("rtdose_expb", "rtdose_expb.dcm", Twin("rtdose")),
        case("rtdose_rle", "rtdose_rle.dcm", Twin("rtdose")),
        case("rtdose_rle_py", "rtdose_rle.dcm", Pydicom),
        Case {
            frame: Some(0),
            ..case("rtdose_frame0", "rtdose.dcm", Pydicom)
        },
        case("rtdose_1frame", "rtdose_1frame.dcm", Pydicom),
        // Colour: RGB planar configuration 1 big endian, RGB, odd sizes, YBR_FULL_422 uncompressed.
        case("rgb_be_planar", "ExplVR_BigEnd.dcm", Pydicom),
        case("rgb", "examples_rgb_color.dcm", Pydicom),
        case("rgb_odd", "SC_rgb_small_odd.dcm", Pydicom),
        case(
            "rgb_odd_be",
            "SC_rgb_small_odd_big_endian.dcm",
            Twin("rgb_odd"),
        ),
        case(
            "ybr_422_native",
            "SC_ybr_full_422_uncompressed.dcm",
            Pydicom,
        ),
        // RLE colour: 8, 16, 32 bits, two frames (default: frame 1), and frame 0.
        case("rgb_rle", "SC_rgb_rle.dcm", Pydicom),
        case(
            "rgb_rle_16",
            "SC_rgb_rle_16bit.dcm",
            PydicomNote("16-bit colour samples scaled"),
        ),
        case("rgb_rle_32", "SC_rgb_rle_32bit.dcm", Pydicom),
        case("rgb_rle_2frame", "SC_rgb_rle_2frame.dcm", Pydicom),
        Case {
            frame: Some(0),
            ..case("rgb_rle_2frame_0", "SC_rgb_rle_2frame.dcm", Pydicom)
        },
        case("rgb_rle_16_2frame", "SC_rgb_rle_16bit_2frame.dcm", Pydicom),
        case("rgb_rle_32_2frame", "SC_rgb_rle_32bit_2frame.dcm", Pydicom),
        // JPEG lossless RGB: the same pixels as the RLE file.
        case("rgb_jpeg_lossless", "SC_rgb_jpeg_gdcm.dcm", Twin("rgb_rle")),
        // JPEG 2000 colour (YBR_RCT, RGB).
        case("j2k_rct", "examples_jpeg2k.dcm", Pydicom),
        case("j2k_rgb", "SC_rgb_gdcm_KY.dcm", Pydicom),
        // Palette colour, 16-bit entries.
        case(
            "palette",
            "examples_palette.dcm",
            PydicomNote("16-bit palette entries"),
        ),
        // Lossy JPEG colour: RGB and YBR_FULL(_422) codestreams, with and without Adobe / JFIF markers.
        case("jpeg_rgb", "SC_rgb_jpeg_dcmd.dcm", PydicomJpeg),
        case("jpeg_rgb_implicit", "SC_rgb_jpeg.dcm", PydicomJpeg),
        case("jpeg_app14", "SC_rgb_jpeg_app14_dcmd.dcm", PydicomJpeg),
        case(
            "jpeg_no_transform",
            "SC_jpeg_no_color_transform.dcm",
            PydicomJpeg,
        ),
        case(
            "jpeg_no_transform_2",
            "SC_jpeg_no_color_transform_2.dcm",
            PydicomJpeg,
        ),
        case("jpeg_dcmtk", "SC_rgb_jpeg_dcmtk.dcm", PydicomJpeg),
        case("jpeg_dcmtk_cr", "SC_rgb_dcmtk_+eb+cr.dcm", PydicomJpeg),
        case("jpeg_dcmtk_n1", "SC_rgb_dcmtk_+eb+cy+n1.dcm", PydicomJpeg),
        case("jpeg_dcmtk_n2", "SC_rgb_dcmtk_+eb+cy+n2.dcm", PydicomJpeg),
        case("jpeg_dcmtk_np", "SC_rgb_dcmtk_+eb+cy+np.dcm", PydicomJpeg),
        case("jpeg_dcmtk_s2", "SC_rgb_dcmtk_+eb+cy+s2.dcm", PydicomJpeg),
        case("jpeg_dcmtk_s4", "SC_rgb_dcmtk_+eb+cy+s4.dcm", PydicomJpeg),
        case("jpeg_gdcm_lossy", "SC_rgb_jpeg_lossy_gdcm.dcm", PydicomJpeg),
        case("jpeg_odd", "SC_rgb_small_odd_jpeg.dcm", PydicomJpeg),
        // 30-frame JPEG YBR_FULL_422: the middle frame (15) by default, and frame 3.
        case("ybr_multiframe", "examples_ybr_color.dcm", PydicomJpeg),
        Case {
            frame: Some(3),
            ..case("ybr_multiframe_3", "examples_ybr_color.dcm", PydicomJpeg)
        },
        // Synthesized edge cases (pydicom_reference.py).
        case("ramp_c128_w256", "synth/ramp_c128_w256.dcm", Pydicom),
        case("width1", "synth/width1.dcm", Pydicom),
        case(
            "two_windows",
            "synth/two_windows.dcm",
            PydicomNote("the first of 2"),
        ),
        case("mono1_window", "synth/mono1_window.dcm", Pydicom),
        case("signed_neg_slope", "synth/signed_neg_slope.dcm", Pydicom),
        case(
            "signed_neg_slope_window",
            "synth/signed_neg_slope_window.dcm",
            Pydicom,
        ),
        case("garbage_bits", "synth/garbage_bits.dcm", Pydicom),
        case(
            "garbage_bits_signed",
            "synth/garbage_bits_signed.dcm",
            Pydicom,
        ),
        case("rgb16_planar_be", "synth/rgb16_planar_be.dcm", Pydicom),
        case("ybr_full", "synth/ybr_full.dcm", Pydicom),
        case(
            "five_frames",
            "synth/five_frames.dcm",
            PydicomNote("frame 2 of 5"),
        ),
        Case {
            frame: Some(4),
            ..case("five_frames_4", "synth/five_frames.dcm", Pydicom)
        },
        case(
            "modality_lut",
            "synth/modality_lut.dcm",
            PydicomNote("Modality LUT Sequence"),
        ),
        case("palette8", "synth/palette8.dcm", Pydicom),
        case("bare_implicit", "synth/bare_implicit.dcm", Pydicom),
        Case {
            window: Some((90.0, 30.0)),
            ..case("width0_overridden", "synth/width0.dcm", Pydicom)
        },
        // Refusals.
        case(
            "width0",
            "synth/width0.dcm",
            Error("bad window in the file: centre 100, width 0"),
        ),
        Case {
            window: Some((40.0, 0.5)),
            ..case(
                "user_width_half",
                "CT_small.dcm",
                Error("bad window from --window: centre 40, width 0.5"),
            )
        },
        case(
            "short_data",
            "synth/short_data.dcm",
            Error("pixel data too short: 8192 bytes needed"),
        ),
        case(
            "huge_frames",
            "synth/huge_frames.dcm",
            Error("pixel data too short: 53687091200000 bytes needed"),
        ),
        case(
            "huge_side",
            "synth/huge_side.dcm",
            Error("too large: 65535 rows × 65535 columns"),
        ),
        Case {
            frame: Some(40),
            ..case(
                "frame_40",
                "examples_ybr_color.dcm",
                Error("frame 40 but the file has 30 frames (0..29)"),
            )
        },
        Case {
            frame: Some(5),
            ..case(
                "frame_5",
                "synth/five_frames.dcm",
                Error("frame 5 but the file has 5 frames (0..4)"),
            )
        },
        Case {
            frame: Some(1),
            ..case(
                "frame_1_single",
                "CT_small.dcm",
                Error("frame 1 but the file has 1 frame (0..0)"),
            )
        },
        case(
            "jpeg_ls",
            "MR_small_jpeg_ls_lossless.dcm",
            Error("JPEG-LS Lossless (1.2.840.10008.1.2.4.80)"),
        ),
        case(
            "jpeg_ls_lossy",
            "SC_rgb_jls_lossy_line.dcm",
            Error("JPEG-LS Lossy (Near-Lossless) (1.2.840.10008.1.2.4.81)"),
        ),
        case(
            "jpeg_12bit",
            "JPEG-lossy.dcm",
            Error("JPEG Extended (Process 2 & 4) with 12-bit samples (1.2.840.10008.1.2.4.51)"),
        ),
        case(
            "jpeg_12bit_b",
            "JPGExtended.dcm",
            Error("JPEG Extended (Process 2 & 4) with 12-bit samples (1.2.840.10008.1.2.4.51)"),
        ),
        case(
            "truncated",
            "MR_truncated.dcm",
            Error("truncated DICOM data: element (7FE0,0010) declares 8192 bytes"),
        ),
        case("no_pixels", "rtplan.dcm", Error("no image")),
        case(
            "bad_frames",
            "badVR.dcm",
            Error("Number of Frames (0028,0008): \"1A\""),
        ),
        case(
            "j2k_garbage_siz",
            "JPEG2000-embedded-sequence-delimiter.dcm",
            Error("the JPEG 2000 frame is 3722445056 × 1024"),
        ),
    ];
    // Every CT / MR / CR image of the DICOMDIR test set.
    for (i, p) in [
        "77654033/CR2/6247",
        "77654033/CT2/17106",
        "77654033/CT2/17136",
        "77654033/CT2/17166",
        "77654033/CT2/17196",
        "98892001/CT2N/6293",
        "98892001/CT2N/6924",
        "98892001/CT5N/2392",
        "98892001/CT5N/2693",
        "98892001/CT5N/3023",
        "98892001/CT5N/3353",
        "98892003/MR1/15820",
        "98892003/MR1/4919",
        "98892003/MR1/5641",
        "98892003/MR2/15970",
        "98892003/MR2/4981",
        "98892003/MR2/5011",
        "98892003/MR2/6273",
        "98892003/MR2/6605",
        "98892003/MR2/6935",
        "98892003/MR700/4467",
        "98892003/MR700/4528",
        "98892003/MR700/4558",
        "98892003/MR700/4588",
        "98892003/MR700/4618",
        "98892003/MR700/4648",
        "98892003/MR700/4678",
    ]
    .iter()
    .enumerate()
    {
        let name: &'static str = Box::leak(format!("dicomdir_{i}").into_boxed_str());
        let path: &'static str = Box::leak(format!("dicomdirtests/{p}").into_boxed_str());
        v.push(case(name, path, Want::Pydicom));
    }
    v
}

fn resolve(files: &Path, out: &Path, path: &str) -> PathBuf {
    if path.starts_with("synth/") {
        out.join(path)
    } else {
        files.join(path)
    }
}

/// The image as `meddr_image` decodes it for the model (lossy JPEG frames through its own decoder).
fn render_for_model(path: &Path, c: &Case) -> (Vec<u8>, Vec<String>) {
    let bytes = std::fs::read(path).unwrap();
    let opts = DicomOptions {
        window: c.window,
        frame: c.frame,
    };
    let (img, notes) = meddr_image::decode_rgb_with_options(&bytes, &opts)
        .unwrap_or_else(|e| panic!("{}: meddr_image: {e}", c.name));
    (img.data, notes)
}

fn render(path: &Path, c: &Case) -> Result<Rendered, DicomError> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_to_rgb8(
        &bytes,
        &DicomOptions {
            window: c.window,
            frame: c.frame,
        },
    )
}

/// (samples that differ, largest difference).
fn diff(a: &[u8], b: &[u8]) -> (usize, u8) {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y))
        .filter(|&d| d > 0)
        .fold((0, 0), |(n, m), d| (n + 1, m.max(d)))
}

#[test]
fn every_case_matches_pydicom_or_fails_clearly() {
    let files = test_files();
    let out = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-dicom-pydicom-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let cases = cases();
    let spec: Vec<Value> = cases
        .iter()
        .filter(|c| !matches!(c.want, Want::Error(_) | Want::Twin(_)))
        .map(|c| {
            let path = if c.path.starts_with("synth/") {
                c.path.to_string()
            } else {
                files.join(c.path).display().to_string()
            };
            json!({"name": c.name, "path": path, "frame": c.frame, "window": c.window.map(|(a, b)| vec![a, b])})
        })
        .collect();
    let spec_path = out.join("cases.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pydicom_reference.py");
    let run = std::process::Command::new(python())
        .arg(&script)
        .arg(&spec_path)
        .arg(&out)
        .output()
        .expect("run python");
    assert!(
        run.status.success(),
        "pydicom_reference.py failed (the venv needs numpy and pydicom==3.0.2, tests/requirements.txt):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["pydicom"], "3.0.2",
        "the reference must come from pydicom 3.0.2"
    );

    let mut failures = Vec::new();
    let mut ours: std::collections::HashMap<&str, Vec<u8>> = std::collections::HashMap::new();
    let (mut compared, mut exact, mut max_jpeg) = (0usize, 0usize, 0u8);
    // Twins last: they compare with the rendering of an earlier case.
    let mut order: Vec<&Case> = cases
        .iter()
        .filter(|c| !matches!(c.want, Want::Twin(_)))
        .collect();
    order.extend(cases.iter().filter(|c| matches!(c.want, Want::Twin(_))));
    for c in order {
        let path = resolve(&files, &out, c.path);
        let got = render(&path, c);
        match (c.want, got) {
            (Want::Error(text), Err(e)) => {
                if !e.to_string().contains(text) {
                    failures.push(format!(
                        "{}: error {e:?}, wanted one containing {text:?}",
                        c.name
                    ));
                }
            }
            (Want::Error(text), Ok(_)) => failures.push(format!(
                "{}: decoded, wanted an error with {text:?}",
                c.name
            )),
            (_, Err(e)) => failures.push(format!("{}: {e}", c.name)),
            (Want::Twin(other), Ok(r)) => {
                compared += 1;
                match ours.get(other) {
                    Some(o) if *o == r.data && *o == render_for_model(&path, c).0 => exact += 1,
                    Some(o) => {
                        let (n, m) = diff(&r.data, o);
                        failures.push(format!(
                            "{}: {n} samples differ from {other}, max {m}",
                            c.name
                        ));
                    }
                    None => failures.push(format!("{}: twin {other} did not render", c.name)),
                }
            }
            (want, Ok(r)) => {
                compared += 1;
                let m = &manifest["cases"][c.name];
                if let Some(e) = m.get("error") {
                    failures.push(format!("{}: pydicom could not render it: {e}", c.name));
                    continue;
                }
                let want_rgb = std::fs::read(out.join(format!("{}.rgb", c.name))).unwrap();
                if (r.width as u64, r.height as u64)
                    != (m["width"].as_u64().unwrap(), m["height"].as_u64().unwrap())
                    || r.data.len() != want_rgb.len()
                {
                    failures.push(format!(
                        "{}: size {}x{} vs pydicom {}x{}",
                        c.name, r.width, r.height, m["width"], m["height"]
                    ));
                    continue;
                }
                // The model's path: exact.
                let (model, model_notes) = render_for_model(&path, c);
                let (n, max) = diff(&model, &want_rgb);
                if n > 0 || model.len() != want_rgb.len() {
                    failures.push(format!(
                        "{}: {n} of {} samples differ from pydicom, max {max} (notes {:?})",
                        c.name,
                        want_rgb.len(),
                        r.notes
                    ));
                } else {
                    exact += 1;
                }
                if model_notes != r.notes {
                    failures.push(format!(
                        "{}: notes {model_notes:?} vs {:?}",
                        c.name, r.notes
                    ));
                }
                // meddr_dicom alone: the same bytes, or within the tolerance for lossy JPEG.
                let (n, max) = diff(&r.data, &want_rgb);
                if let Want::PydicomJpeg = want {
                    max_jpeg = max_jpeg.max(max);
                    println!(
                        "{}: jpeg-decoder: {n} of {} samples differ from pydicom, max {max}",
                        c.name,
                        r.data.len()
                    );
                    if max > JPEG_TOLERANCE {
                        failures.push(format!(
                            "{}: jpeg-decoder: {n} samples differ, max {max} > {JPEG_TOLERANCE}",
                            c.name
                        ));
                    }
                } else if n > 0 {
                    failures.push(format!(
                        "{}: meddr_dicom alone differs from pydicom in {n} samples, max {max}",
                        c.name
                    ));
                }
                if let Want::PydicomNote(text) = want {
                    if !r.notes.iter().any(|n| n.contains(text)) {
                        failures.push(format!("{}: notes {:?} lack {text:?}", c.name, r.notes));
                    }
                }
                ours.insert(c.name, r.data);
            }
        }
    }
    println!(
        "{} cases: {compared} images compared, {exact} byte-identical to pydicom through meddr_image; \
         largest jpeg-decoder difference {max_jpeg}",
        cases.len()
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
