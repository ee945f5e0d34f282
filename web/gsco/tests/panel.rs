//! The browser panel's own code path, natively on burn's CPU backend: specialist and index from bytes (as the
//! page hands them over), asynchronous readback, the JSON the page shows, and the panel's refusals. The real
//! page runs the same code on WebGPU in `web/e2e-test.sh`. Ground truth: `shared/fixtures/gsco`
//! (timm + scikit-learn); tolerances as in `crates/gsco/tests/fixtures.rs` (1e-4 of max-abs, 1e-5 distance).

use std::path::PathBuf;

use meddr_gsco::dataset::MedMnistSplit;
use meddr_gsco::{build_index, IndexDtype};
use meddr_specialist::{cpu_device, ConfigOverrides, FeatureMode, Specialist};
use meddr_web_gsco::Panel;
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    let shared = std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let p = shared.join("fixtures/gsco").join(name);
    assert!(
        p.is_dir(),
        "GSCo fixture {} not found (set MEDDR_SHARED)",
        p.display()
    );
    p
}

fn read(name: &str, file: &str) -> Vec<u8> {
    std::fs::read(dir(name).join(file)).unwrap()
}

/// The train split's index, written by the same streaming path as `meddr gsco index`.
fn index_bytes(name: &str) -> Vec<u8> {
    let s = Specialist::load(&dir(name), &ConfigOverrides::default(), &cpu_device()).unwrap();
    let mut split = MedMnistSplit::open(&dir(name).join("data.npz"), "train").unwrap();
    let out = std::env::temp_dir().join(format!(
        "meddr-web-gsco-{}-{name}.gscoidx",
        std::process::id()
    ));
    let labels = split.labels.clone();
    build_index(
        &s,
        FeatureMode::Unpooled,
        split.count,
        &labels,
        "train",
        &out,
        IndexDtype::F32,
        true,
        &mut |f| split.for_each_batch(50, |a, b| f(a, b)),
        &mut |_, _| {},
    )
    .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// The fixture's test image 0 as a PNG file's bytes (lossless: the pixels the fixture used).
fn test_png(name: &str) -> Vec<u8> {
    let mut split = MedMnistSplit::open(&dir(name).join("data.npz"), "test").unwrap();
    let mut first = None;
    split
        .for_each_batch(1, |i, imgs| {
            if i == 0 {
                first = Some(imgs[0].clone());
            }
            Ok(())
        })
        .unwrap();
    let img = first.unwrap();
    let mut png = Vec::new();
    let mut enc = png::Encoder::new(&mut png, img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()
        .unwrap()
        .write_image_data(&img.data)
        .unwrap();
    png
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn panel_reproduces_the_fixture_and_refuses_bad_files() {
    let name = "pcam_resnet18_64";
    let t = &serde_json::from_slice::<Value>(&read(name, "expected.json")).unwrap()["tests"][0];
    let mut p = Panel::new(cpu_device());
    let png = test_png(name);

    // Nothing loaded yet: a clear message, not a panic.
    let e = pollster::block_on(p.collaborate(&png, "pcam200", None, 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no reference index"), "{e}");

    let s = p
        .add_specialist(
            name,
            &read(name, "config.json"),
            &read(name, "model.safetensors"),
            &ConfigOverrides::default(),
        )
        .unwrap();
    assert_eq!(
        (
            s["name"].as_str(),
            s["architecture"].as_str(),
            s["imgSize"].as_u64()
        ),
        (Some(name), Some("resnet18"), Some(64))
    );
    // The same weights again replace the first copy.
    p.add_specialist(
        name,
        &read(name, "config.json"),
        &read(name, "model.safetensors"),
        &ConfigOverrides::default(),
    )
    .unwrap();
    assert_eq!(p.status()["specialists"].as_array().unwrap().len(), 1);

    let vit = "pcam_vit_tiny_224";
    let i = p.set_index("pcam.gscoidx", index_bytes(name)).unwrap();
    assert_eq!(
        (
            i["cases"].as_u64(),
            i["specialist"].as_str(),
            i["featureDim"].as_u64()
        ),
        (Some(200), Some(name), Some(25088))
    );

    let r = pollster::block_on(p.collaborate(&png, "pcam200", None, 10)).unwrap();
    let m = &r["moed"][0];
    let (got, want) = (f64s(&m["logits"]), f64s(&t["logits"]));
    let scale = want.iter().fold(0f64, |a, &x| a.max(x.abs()));
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
        / scale;
    assert!(err <= 1e-4, "logits rel err {err:e}");
    assert_eq!(m["predicted"], serde_json::json!([t["pred_names"]]));
    let idx: Vec<u64> = r["rad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    let want_idx: Vec<u64> = t["rad_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(idx, want_idx);
    for (x, d) in r["rad"]
        .as_array()
        .unwrap()
        .iter()
        .zip(f64s(&t["rad_distances"]))
    {
        assert!(
            (x["distance"].as_f64().unwrap() - d).abs() <= 1e-5,
            "{x} vs {d}"
        );
    }
    assert_eq!(
        (&r["rad_string"], &r["moed_string"], &r["prompt"]),
        (&t["rad"], &t["moed"], &t["prompt"])
    );

    // A user template must hold both placeholders; an unknown built-in name is named.
    let e = pollster::block_on(p.collaborate(&png, "mine.txt", Some("no placeholders"), 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("mine.txt") && e.contains("###RAD###"), "{e}");
    let e = pollster::block_on(p.collaborate(&png, "pcam300", None, 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pcam300") && e.contains("pcam200"), "{e}");
    let e = pollster::block_on(p.collaborate(b"not an image", "pcam200", None, 10))
        .unwrap_err()
        .to_string();
    assert!(!e.is_empty());
    let e = pollster::block_on(p.collaborate(&png, "pcam200", None, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("top-n"), "{e}");

    // Another specialist whose index this is not: the retrieval names the index's own specialist.
    assert_eq!(p.remove_specialist(name), 1);
    p.add_specialist(
        vit,
        &read(vit, "config.json"),
        &read(vit, "model.safetensors"),
        &ConfigOverrides::default(),
    )
    .unwrap();
    let e = pollster::block_on(p.collaborate(&png, "pcam200", None, 10))
        .unwrap_err()
        .to_string();
    assert!(e.contains(name) && e.contains(vit), "{e}");

    // Not an index, an empty file and a truncated index: each named.
    for (file, bytes) in [
        ("model.safetensors", read(name, "model.safetensors")),
        ("empty.gscoidx", Vec::new()),
        ("cut.gscoidx", index_bytes(name)[..4096].to_vec()),
    ] {
        let e = p.set_index(file, bytes).unwrap_err().to_string();
        assert!(e.contains(file), "{file}: {e}");
    }
}
