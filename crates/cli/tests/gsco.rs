//! `meddr specialist` and `meddr gsco` end to end: the GSCo fixtures (timm/scikit-learn ground truth) and
//! the dev MedDr fixture model, on the wgpu engine (lavapipe in CI) and on the CPU.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails_with, gsco_fixture, model, ok_json, tmp};
use meddr_gsco::dataset::MedMnistSplit;
use serde_json::Value as Json;

fn expected(name: &str) -> Json {
    serde_json::from_slice(&std::fs::read(gsco_fixture(name).join("expected.json")).unwrap())
        .unwrap()
}

/// The fixture's test image `i` as a PNG file.
fn test_png(name: &str, i: usize) -> PathBuf {
    let out = tmp().join(format!("{name}-test{i}.png"));
    if out.exists() {
        return out;
    }
    let mut m = MedMnistSplit::open(&gsco_fixture(name).join("data.npz"), "test").unwrap();
    let mut img = None;
    m.for_each_batch(8, |_, imgs| {
        img = Some(imgs[i].clone());
        Ok(())
    })
    .unwrap();
    let img = img.unwrap();
    let buf = image::RgbImage::from_raw(img.width, img.height, img.data).unwrap();
    let part = out.with_extension("part.png");
    buf.save(&part).unwrap();
    std::fs::rename(&part, &out).unwrap();
    out
}

/// `gsco index` of the PCam ResNet-18 fixture's train split, built once (CPU device).
fn pcam_index() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = tmp().join("pcam.gscoidx");
        let j = common::pcam_index("train", &out);
        assert_eq!(j["cases"], 200);
        assert_eq!(j["feature_dim"], 25088);
        out
    })
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let m = b.iter().fold(0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f64, |d, (x, y)| d.max((x - y).abs())) / m
}

fn f64s(v: &Json) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn specialist_predict_matches_timm() {
    for (name, i) in [("pcam_resnet18_64", 0), ("chest_efficientnet_b0_128", 3)] {
        let exp = expected(name);
        let img = test_png(name, i);
        let dir = gsco_fixture(name);
        for device in ["cpu", "gpu"] {
            let j = ok_json(&[
                "specialist",
                "predict",
                "--specialist",
                dir.to_str().unwrap(),
                "--image",
                img.to_str().unwrap(),
                "--device",
                device,
                "--json",
            ]);
            let t = &exp["tests"][i];
            assert_eq!(j["architecture"], exp["arch"]);
            assert_eq!(j["labels"], exp["labels"]);
            let r = rel(&f64s(&j["logits"]), &f64s(&t["logits"]));
            assert!(r < 1e-4, "{name} on {device}: logits off by {r:e}");
            assert!(rel(&f64s(&j["probabilities"]), &f64s(&t["probabilities"])) < 1e-4);
            let want: Vec<String> = match t["pred_names"].clone() {
                Json::String(s) => vec![s],
                Json::Array(a) => a
                    .into_iter()
                    .map(|x| x.as_str().unwrap().to_string())
                    .collect(),
                other => panic!("pred_names {other}"),
            };
            let got: Vec<String> = j["predicted"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            assert_eq!(got, want, "{name} on {device}");
        }
    }
}

/// `gsco run`: MoED, RAD and the prompt exactly as upstream composes them; then MedDr's greedy answer on the
/// GPU equals the CPU reference's, token for token.
#[test]
fn gsco_run_prompt_and_answer() {
    let exp = expected("pcam_resnet18_64");
    let spec = gsco_fixture("pcam_resnet18_64");
    let img = test_png("pcam_resnet18_64", 0);
    let index = pcam_index();
    let run = |device: &str| {
        ok_json(&[
            "gsco",
            "run",
            "-m",
            model().to_str().unwrap(),
            "--specialist",
            spec.to_str().unwrap(),
            "--index",
            index.to_str().unwrap(),
            "--template",
            "pcam200",
            "--image",
            img.to_str().unwrap(),
            "--max-new-tokens",
            "24",
            "--device",
            device,
            "--json",
        ])
    };
    let gpu = run("gpu");
    let t = &exp["tests"][0];
    assert_eq!(gpu["prompt"], t["prompt"]);
    assert_eq!(gpu["moed"][0]["predicted"][0], t["pred_names"]);
    let idx: Vec<u64> = gpu["rad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = t["rad_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(idx, want);
    for (r, d) in gpu["rad"]
        .as_array()
        .unwrap()
        .iter()
        .zip(t["rad_distances"].as_array().unwrap())
    {
        assert!((r["distance"].as_f64().unwrap() - d.as_f64().unwrap()).abs() <= 1e-5);
    }
    assert!(!gpu["tokens"].as_array().unwrap().is_empty());
    let cpu = run("cpu");
    assert_eq!(cpu["prompt"], gpu["prompt"]);
    assert_eq!(
        cpu["tokens"], gpu["tokens"],
        "GPU greedy tokens differ from the CPU reference's"
    );
    assert_eq!(cpu["answer"], gpu["answer"]);
}

/// `gsco eval`: records appended as produced; an interrupted run (here: `--limit 3`) resumes where it
/// stopped; the specialists' ACC/AUC over the full split equal scikit-learn's.
#[test]
fn gsco_eval_resumes_and_scores() {
    let exp = expected("pcam_resnet18_64");
    let spec = gsco_fixture("pcam_resnet18_64");
    let npz = gsco_fixture("pcam_resnet18_64").join("data.npz");
    let out = tmp().join("eval.jsonl");
    let _ = std::fs::remove_file(&out);
    let args = |limit: Option<&'static str>| {
        let mut a: Vec<String> = [
            "gsco",
            "eval",
            "-m",
            model().to_str().unwrap(),
            "--specialist",
            spec.to_str().unwrap(),
            "--index",
            pcam_index().to_str().unwrap(),
            "--template",
            "pcam200",
            "--medmnist",
            npz.to_str().unwrap(),
            "--split",
            "test",
            "--out",
            out.to_str().unwrap(),
            "--max-new-tokens",
            "4",
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(l) = limit {
            a.extend(["--limit".to_string(), l.to_string()]);
        }
        a
    };
    let a = args(Some("3"));
    let first = ok_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first["images"], 3);
    // A torn last line (a run killed mid-write) is cut off on resume.
    let mut f = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut f, b"{\"question_id\": 3, \"trunc").unwrap();
    drop(f);
    let a = args(None);
    let full = ok_json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(full["images"], 8);
    let text = std::fs::read_to_string(&out).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["question_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (0..8).collect::<Vec<u64>>(),
        "each image once, in order"
    );
    let rec: Json = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
    assert_eq!(rec["question"], exp["tests"][0]["prompt"]);
    assert_eq!(rec["annotation"], exp["tests"][0]["true_label_names"]);
    let m = &full["specialists"][0];
    assert!((m["ACC"].as_f64().unwrap() - exp["metrics"]["ACC"].as_f64().unwrap()).abs() < 1e-12);
    assert!((m["AUC"].as_f64().unwrap() - exp["metrics"]["AUC"].as_f64().unwrap()).abs() < 1e-6);
    assert!(full["knn_vote_ACC"].as_f64().is_some() && full["meddr_ACC"].as_f64().is_some());
    // Another setting on the same file is refused, not mixed in.
    let mut a = args(None);
    let k = a.iter().position(|s| s == "4").unwrap();
    a[k] = "5".into();
    fails_with(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &["eval.jsonl", "other settings", "max_new_tokens"],
    );
}

#[test]
fn gsco_bad_inputs() {
    let vit = gsco_fixture("pcam_vit_tiny_224");
    let res = gsco_fixture("pcam_resnet18_64");
    let img = test_png("pcam_resnet18_64", 0);
    let m = model().to_str().unwrap();
    // The index was built by the ResNet; querying it with only the ViT is refused before MedDr loads.
    fails_with(
        &[
            "gsco",
            "run",
            "-m",
            m,
            "--specialist",
            vit.to_str().unwrap(),
            "--index",
            pcam_index().to_str().unwrap(),
            "--template",
            "pcam200",
            "--image",
            img.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["pcam.gscoidx", "pcam_resnet18_64", "pcam_vit_tiny_224"],
    );
    // A template without placeholders.
    let t = tmp().join("bad-template.txt");
    std::fs::write(&t, "Diagnose the image.").unwrap();
    fails_with(
        &[
            "gsco",
            "run",
            "-m",
            m,
            "--specialist",
            res.to_str().unwrap(),
            "--index",
            pcam_index().to_str().unwrap(),
            "--template",
            t.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["bad-template.txt", "###RAD###"],
    );
    // A model file given as the index.
    fails_with(
        &[
            "gsco",
            "run",
            "-m",
            m,
            "--specialist",
            res.to_str().unwrap(),
            "--index",
            m,
            "--template",
            "pcam200",
            "--image",
            img.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["dev-f32.gguf", "not an index"],
    );
    // A MedMNIST file with the wrong split, and an image that is not an image.
    let npz = res.join("data.npz");
    fails_with(
        &[
            "gsco",
            "index",
            "--specialist",
            res.to_str().unwrap(),
            "--medmnist",
            npz.to_str().unwrap(),
            "--split",
            "val",
            "-o",
            tmp().join("x.idx").to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["data.npz", "val_images"],
    );
    assert!(!tmp().join("x.idx").exists(), "no partial index is left");
    let junk = tmp().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    fails_with(
        &[
            "specialist",
            "predict",
            "--specialist",
            res.to_str().unwrap(),
            "--image",
            junk.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["junk.png"],
    );
    // eval never modifies a file that is not its own results file (a mistyped --out).
    let victim = tmp().join("victim.jsonl");
    std::fs::copy(pcam_index(), &victim).unwrap();
    let before = std::fs::read(&victim).unwrap();
    let npz = res.join("data.npz");
    fails_with(
        &[
            "gsco",
            "eval",
            "-m",
            m,
            "--specialist",
            res.to_str().unwrap(),
            "--index",
            pcam_index().to_str().unwrap(),
            "--template",
            "pcam200",
            "--medmnist",
            npz.to_str().unwrap(),
            "--out",
            victim.to_str().unwrap(),
            "--device",
            "cpu",
            "--limit",
            "1",
        ],
        &["victim.jsonl", "not a GSCo results file"],
    );
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        before,
        "a foreign --out file was modified"
    );
    // A flag that contradicts the specialist's config is refused, not silently applied.
    fails_with(
        &[
            "specialist",
            "predict",
            "--specialist",
            res.to_str().unwrap(),
            "--img-size",
            "32",
            "--image",
            img.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["img_size", "64", "32"],
    );
    // Unknown architecture in the config.
    let d = tmp().join("weird-spec");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(res.join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(res.join("config.json"))
        .unwrap()
        .replace("\"resnet18\"", "\"swin_tiny\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    fails_with(
        &[
            "specialist",
            "predict",
            "--specialist",
            d.to_str().unwrap(),
            "--image",
            img.to_str().unwrap(),
            "--device",
            "cpu",
        ],
        &["config.json", "swin_tiny"],
    );
}
