//! Images in many formats and modes, written by Pillow 10.2 (tests/pillow_reference.py), must
//! decode + convert('RGB') + expand2square + BICUBIC 448 exactly like Pillow does.
mod common;

use meddr_image::{decode_rgb_with_notes, preprocess, PreprocessConfig};
use serde_json::Value;

#[test]
fn full_pipeline_matches_pillow_for_every_format() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-image-pillow-{}", std::process::id()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pillow_reference.py");
    let out = std::process::Command::new(common::python())
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "pillow_reference.py failed (the venv needs `pip install pillow==10.2.0 numpy`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["pillow"], "10.2.0",
        "reference must come from Pillow 10.2.0"
    );
    let images = manifest["images"].as_array().unwrap();
    assert!(images.len() >= 30);
    let mut failures = Vec::new();
    for im in images {
        let name = im["name"].as_str().unwrap();
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let want_rgb = std::fs::read(dir.join(format!("{name}.rgb"))).unwrap();
        let want_448 = std::fs::read(dir.join(format!("{name}.448"))).unwrap();
        let rgb = match decode_rgb_with_notes(&bytes) {
            Ok((r, notes)) => {
                // Issue 9.4: 16-bit grey is clipped exactly as Pillow does, and the user is told (only then).
                let clipped = name == "grey16.png";
                if clipped
                    != notes
                        .iter()
                        .any(|n| n.contains("16-bit greyscale") && n.contains("DICOM"))
                    || (!clipped && !notes.is_empty())
                {
                    failures.push(format!("{name}: notes {notes:?}"));
                }
                r
            }
            Err(e) => {
                failures.push(format!("{name} ({}): decode error {e}", im["mode"]));
                continue;
            }
        };
        let size = (rgb.width as u64, rgb.height as u64);
        if size
            != (
                im["width"].as_u64().unwrap(),
                im["height"].as_u64().unwrap(),
            )
        {
            failures.push(format!("{name}: size {size:?}"));
            continue;
        }
        let diffs: Vec<i32> = rgb
            .data
            .iter()
            .zip(&want_rgb)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .filter(|&d| d > 0)
            .collect();
        if !diffs.is_empty() || rgb.data.len() != want_rgb.len() {
            failures.push(format!(
                "{name} ({}): {} of {} decoded samples differ, max {}",
                im["mode"],
                diffs.len(),
                want_rgb.len(),
                diffs.iter().max().unwrap_or(&0)
            ));
            continue;
        }
        let got = preprocess(&bytes, &PreprocessConfig::default())
            .unwrap()
            .resized;
        let n = got
            .data
            .iter()
            .zip(&want_448)
            .filter(|(a, b)| a != b)
            .count();
        if n > 0 || got.data.len() != want_448.len() {
            failures.push(format!("{name}: {n} resized bytes differ"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {} images differ from Pillow:\n{}",
        failures.len(),
        images.len(),
        failures.join("\n")
    );
}
