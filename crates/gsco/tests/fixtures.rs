//! RAD, MoED, the prompt and the metrics against `shared/fixtures/gsco` (what upstream's timm +
//! scikit-learn computed): index of the 200 train images, top-10 neighbours identical, distances within
//! 1e-5 (f32 index; scikit-learn's own float32 distances are within 3e-6 of exact) or 5e-5 (f16 index,
//! whose storage rounding moved distances by up to 1.1e-5 in the fixtures' own measurement), the exact
//! RAD/MoED strings and the exact PCam200 prompt; ACC/AUC equal scikit-learn's. Features on burn's CPU
//! backend; retrieval on the CPU backend and on the engine's wgpu device (lavapipe in CI).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use burn_tensor::Device;
use meddr_engine::{ContextOptions, GpuContext};
use meddr_gsco::dataset::MedMnistSplit;
use meddr_gsco::metrics::classifier_metrics;
use meddr_gsco::{build_index, Gsco, GscoError, Index, IndexDtype, Template};
use meddr_image::RgbImage;
use meddr_specialist::{cpu_device, ConfigOverrides, FeatureMode, Specialist, Task};
use serde_json::Value;

const ALL: [&str; 4] = [
    "pcam_resnet18_64",
    "derma_densenet121_28",
    "pcam_vit_tiny_224",
    "chest_efficientnet_b0_128",
];

fn shared() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn dir(name: &str) -> PathBuf {
    let p = shared().join("fixtures/gsco").join(name);
    assert!(
        p.is_dir(),
        "GSCo fixture {} not found (set MEDDR_SHARED)",
        p.display()
    );
    p
}

fn tmp(name: &str) -> PathBuf {
    // Under cargo's per-target scratch directory (which CI removes after the tests), not /tmp: each run
    // writes ~230 MB of indexes here, and /tmp would keep them.
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-gsco-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir(name).join("expected.json")).unwrap()).unwrap()
}

fn gpu() -> Device {
    static D: OnceLock<(Arc<GpuContext>, Device)> = OnceLock::new();
    D.get_or_init(|| {
        let ctx = GpuContext::new_blocking(ContextOptions { all_adapter_features: true, ..Default::default() })
            .unwrap_or_else(|e| panic!("no usable GPU adapter: {e}. Install lavapipe: apt-get install -y mesa-vulkan-drivers libvulkan1"));
        let dev = meddr_specialist::wgpu_device(&ctx.instance, &ctx.adapter, &ctx.device, &ctx.queue).unwrap();
        (Arc::new(ctx), dev)
    })
    .1
    .clone()
}

fn specialist(name: &str) -> Specialist {
    Specialist::load(&dir(name), &ConfigOverrides::default(), &cpu_device()).unwrap()
}

fn images(name: &str, split: &str) -> (MedMnistSplit, Vec<RgbImage>) {
    let mut m = MedMnistSplit::open(&dir(name).join("data.npz"), split).unwrap();
    let mut all = Vec::new();
    m.for_each_batch(50, |_, imgs| {
        all.extend_from_slice(imgs);
        Ok(())
    })
    .unwrap();
    (m, all)
}

/// Train features of each specialist, computed once (upstream: batches of 50): (unpooled, pooled).
fn train_features(name: &str) -> Arc<(Vec<f32>, Vec<f32>)> {
    static CACHE: OnceLock<
        Mutex<std::collections::HashMap<String, Arc<OnceLock<Arc<(Vec<f32>, Vec<f32>)>>>>>,
    > = OnceLock::new();
    let cell = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        let s = specialist(name);
        let (_, train) = images(name, "train");
        let (mut un, mut po) = (Vec::new(), Vec::new());
        for chunk in train.chunks(50) {
            let mut x = Vec::new();
            for img in chunk {
                x.extend(s.preprocess(img).unwrap());
            }
            let o = s.run(&x, chunk.len(), Some(FeatureMode::Unpooled)).unwrap();
            un.extend(o.features.unwrap());
            po.extend(o.pooled);
        }
        Arc::new((un, po))
    })
    .clone()
}

/// An index of the train split written from the cached features (the streaming `build_index` path is
/// checked to write the identical file in `build_index_streams_the_same_file`).
fn index_of(name: &str, mode: FeatureMode, dtype: IndexDtype) -> PathBuf {
    let out = tmp(&format!(
        "{name}-{}-{}.gscoidx",
        mode.as_str(),
        dtype.as_str()
    ));
    static DONE: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    let done = DONE.get_or_init(Default::default);
    let mut guard = done.lock().unwrap();
    if guard.contains(&out) {
        return out;
    }
    let s = specialist(name);
    let split = MedMnistSplit::open(&dir(name).join("data.npz"), "train").unwrap();
    let f = train_features(name);
    let feats = if mode == FeatureMode::Unpooled {
        &f.0
    } else {
        &f.1
    };
    let meta = meddr_gsco::IndexMeta::for_specialist(&s, mode, split.count, "train", dtype);
    let mut w = meddr_gsco::IndexWriter::create(&out, &meta, &split.labels, true).unwrap();
    // Uneven pieces: the writer must not care how rows arrive.
    let d = meta.feature_dim;
    w.push(&feats[..7 * d]).unwrap();
    w.push(&feats[7 * d..]).unwrap();
    w.finish().unwrap();
    guard.push(out.clone());
    out
}

fn index(name: &str, dtype: IndexDtype) -> PathBuf {
    index_of(name, FeatureMode::Unpooled, dtype)
}

#[test]
fn build_index_streams_the_same_file() {
    let name = "pcam_vit_tiny_224";
    let s = specialist(name);
    let mut split = MedMnistSplit::open(&dir(name).join("data.npz"), "train").unwrap();
    let out = tmp("streamed.gscoidx");
    let labels = split.labels.clone();
    let mut calls = 0;
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
        &mut |done, total| {
            calls += 1;
            assert!(done <= total);
        },
    )
    .unwrap();
    assert_eq!(calls, 4, "200 images in batches of 50");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(index(name, IndexDtype::F32)).unwrap()
    );
}

fn check_retrieval(name: &str, dtype: IndexDtype, device: &Device, tol: f32) {
    let exp = expected(name);
    let s = specialist(name);
    let idx = Index::open(&index(name, dtype)).unwrap();
    idx.check_specialist(&s).unwrap();
    assert_eq!(idx.meta.count, 200);
    let (_, test) = images(name, "test");
    let mut x = Vec::new();
    for img in &test {
        x.extend(s.preprocess(img).unwrap());
    }
    let f = s
        .run(&x, test.len(), Some(FeatureMode::Unpooled))
        .unwrap()
        .features
        .unwrap();
    let hits = idx.search(&f, 10, device).unwrap();
    let mut worst = 0f32;
    for (i, list) in hits.iter().enumerate() {
        let t = &exp["tests"][i];
        let want: Vec<usize> = t["rad_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let got: Vec<usize> = list.iter().map(|n| n.index).collect();
        assert_eq!(
            got,
            want,
            "{name} ({}) query {i}: neighbours",
            dtype.as_str()
        );
        for (n, d) in list.iter().zip(t["rad_distances"].as_array().unwrap()) {
            worst = worst.max((n.distance - d.as_f64().unwrap() as f32).abs());
        }
        let labels: Vec<String> = list.iter().map(|n| idx.label_string(n.index)).collect();
        assert_eq!(
            labels.join(","),
            t["rad"].as_str().unwrap(),
            "{name}: RAD string of query {i}"
        );
    }
    eprintln!(
        "{name} ({} index, {device:?}): max distance error {worst:.2e}",
        dtype.as_str()
    );
    assert!(
        worst <= tol,
        "{name}: distances off by {worst:e} (> {tol:e})"
    );
}

#[test]
fn retrieval_f32_index_cpu() {
    for name in ALL {
        check_retrieval(name, IndexDtype::F32, &cpu_device(), 1e-5);
    }
}

#[test]
fn retrieval_f16_index_cpu() {
    for name in ALL {
        check_retrieval(name, IndexDtype::F16, &cpu_device(), 5e-5);
    }
}

#[test]
fn retrieval_on_the_gpu() {
    for name in ALL {
        check_retrieval(name, IndexDtype::F32, &gpu(), 1e-5);
    }
}

/// MoED strings, the composed PCam200 prompt and the multi-label convention, end to end through `Gsco`.
#[test]
fn moed_rad_and_prompt_strings() {
    let t = Template::from_arg("pcam200").unwrap();
    for name in ALL {
        let exp = expected(name);
        let specs = vec![specialist(name)];
        let idx = Index::open(&index(name, IndexDtype::F32)).unwrap();
        let g = Gsco::new(&specs, &idx, &t, 10).unwrap();
        let (_, test) = images(name, "test");
        let collabs = g.collaborate(&test).unwrap();
        for (i, c) in collabs.iter().enumerate() {
            let e = &exp["tests"][i];
            assert_eq!(
                c.moed_string,
                e["moed"].as_str().unwrap(),
                "{name}: MoED of {i}"
            );
            assert_eq!(
                c.rad_string,
                e["rad"].as_str().unwrap(),
                "{name}: RAD of {i}"
            );
            if let Some(p) = e.get("prompt").and_then(Value::as_str) {
                assert_eq!(c.prompt, p, "{name}: prompt of {i}");
            }
        }
    }
}

/// MoED with several specialists: one entry per specialist, comma-joined, in the order given.
#[test]
fn moed_of_two_specialists() {
    let t = Template::from_arg("pcam200").unwrap();
    let specs = vec![
        specialist("pcam_vit_tiny_224"),
        specialist("pcam_resnet18_64"),
    ];
    let idx = Index::open(&index("pcam_resnet18_64", IndexDtype::F32)).unwrap();
    let g = Gsco::new(&specs, &idx, &t, 10).unwrap();
    assert_eq!(g.retriever, 1, "the index's own specialist retrieves");
    let (_, test) = images("pcam_resnet18_64", "test");
    let c = &g.collaborate(&test[..2]).unwrap()[1];
    let (v, r) = (expected("pcam_vit_tiny_224"), expected("pcam_resnet18_64"));
    let want = format!(
        "{},{}",
        v["tests"][1]["moed"].as_str().unwrap(),
        r["tests"][1]["moed"].as_str().unwrap()
    );
    assert_eq!(c.moed_string, want);
    assert_eq!(c.rad_string, r["tests"][1]["rad"].as_str().unwrap());
}

#[test]
fn metrics_equal_scikit_learn() {
    for name in ALL {
        let exp = expected(name);
        let task = Task::parse(exp["task"].as_str().unwrap()).unwrap();
        let c = exp["num_classes"].as_u64().unwrap() as usize;
        let (split, _) = images(name, "test");
        let probs: Vec<f32> = exp["tests"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                t["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        let m = classifier_metrics(task, c, &split.labels.values, &probs);
        let em = &exp["metrics"];
        assert!(
            (m.acc - em["ACC"].as_f64().unwrap()).abs() < 1e-12,
            "{name}: ACC {} vs {}",
            m.acc,
            em["ACC"]
        );
        assert!(
            (m.auc.unwrap() - em["AUC"].as_f64().unwrap()).abs() < 1e-12,
            "{name}: AUC {:?} vs {}",
            m.auc,
            em["AUC"]
        );
        for (k, a) in em["per_class_AUC"].as_array().unwrap().iter().enumerate() {
            assert!(
                (m.per_class_auc[k].unwrap() - a.as_f64().unwrap()).abs() < 1e-12,
                "{name}: AUC of class {k}"
            );
        }
    }
}

// ---- bad input ----

#[test]
fn an_index_refuses_another_specialist() {
    let idx = Index::open(&index("pcam_resnet18_64", IndexDtype::F32)).unwrap();
    let other = specialist("pcam_vit_tiny_224");
    let e = idx.check_specialist(&other).unwrap_err().to_string();
    assert!(
        e.contains("pcam_resnet18_64") && e.contains("pcam_vit_tiny_224") && e.contains("resnet18"),
        "{e}"
    );
    let t = Template::from_arg("pcam200").unwrap();
    let specs = vec![other];
    assert!(matches!(
        Gsco::new(&specs, &idx, &t, 10),
        Err(GscoError::WrongSpecialist { .. })
    ));
}

#[test]
fn corrupt_empty_and_foreign_indexes_are_refused() {
    let good = std::fs::read(index("pcam_resnet18_64", IndexDtype::F32)).unwrap();
    let p = tmp("bad.gscoidx");
    for (bytes, want) in [
        (good[..good.len() / 2].to_vec(), "bad.gscoidx"),
        (b"GGUF garbage".to_vec(), "not a readable index"),
        (Vec::new(), "not a readable index"),
    ] {
        std::fs::write(&p, &bytes).unwrap();
        let e = Index::open(&p).err().expect("refused").to_string();
        assert!(e.contains(want), "{e}");
    }
    // A GGUF that is not an index (wrong architecture key).
    let w = meddr_gguf::GgufWriter::create_with(
        &p,
        meddr_gguf::WriteOptions {
            overwrite: true,
            ..Default::default()
        },
        vec![(
            "general.architecture".into(),
            meddr_gguf::Value::String("llama".into()),
        )],
        vec![],
    )
    .unwrap();
    w.finish().unwrap();
    let e = Index::open(&p).err().unwrap().to_string();
    assert!(e.contains("\"llama\"") && e.contains("not an index"), "{e}");
}

#[test]
fn bad_medmnist_files_are_refused() {
    let good = dir("pcam_resnet18_64").join("data.npz");
    let e = MedMnistSplit::open(&good, "val").err().unwrap().to_string();
    assert!(
        e.contains("val_images") && e.contains("train_images"),
        "{e}"
    );
    let p = tmp("notzip.npz");
    std::fs::write(&p, b"this is not a zip").unwrap();
    let e = MedMnistSplit::open(&p, "train").err().unwrap().to_string();
    assert!(e.contains("notzip.npz") && e.contains(".npz"), "{e}");
    let e = MedMnistSplit::open(&tmp("missing.npz"), "train")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.npz"), "{e}");
    // Labels that do not fit the specialist (multi-label file for a multi-class specialist).
    let chest =
        MedMnistSplit::open(&dir("chest_efficientnet_b0_128").join("data.npz"), "train").unwrap();
    let e = chest
        .labels
        .check(&chest.path, Task::MultiClass, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 columns"), "{e}");
}

#[test]
fn templates_need_both_placeholders() {
    let e = Template::new("t.txt", "Only ###RAD### here")
        .unwrap_err()
        .to_string();
    assert!(e.contains("t.txt") && e.contains("###MOED###"), "{e}");
    let t = Template::new("t.txt", "\n    A ###RAD### B ###MOED###\n").unwrap();
    assert_eq!(t.compose("x,y", "z"), "  A x,y B z ");
    let e = Template::from_arg(tmp("no-such-template.txt").to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-template.txt"), "{e}");
}

/// The opt-in pooled mode: what it costs against upstream's unpooled neighbours (printed; the README table
/// comes from this), and that it retrieves correctly in its own space (each train case finds itself first).
#[test]
fn pooled_index_cost() {
    for name in ALL {
        let exp = expected(name);
        let s = specialist(name);
        let out = index_of(name, FeatureMode::Pooled, IndexDtype::F32);
        let idx = Index::open(&out).unwrap();
        assert_eq!(idx.meta.feature_dim, s.config.architecture.num_features());
        let (_, train) = images(name, "train");
        let mut x = Vec::new();
        for img in &train[..4] {
            x.extend(s.preprocess(img).unwrap());
        }
        let f = s
            .run(&x, 4, Some(FeatureMode::Pooled))
            .unwrap()
            .features
            .unwrap();
        for (k, list) in idx.search(&f, 1, &cpu_device()).unwrap().iter().enumerate() {
            assert_eq!(
                list[0].index, k,
                "{name}: train case {k} should find itself"
            );
            assert!(list[0].distance < 1e-5);
        }
        let (_, test) = images(name, "test");
        let mut x = Vec::new();
        for img in &test {
            x.extend(s.preprocess(img).unwrap());
        }
        let f = s
            .run(&x, test.len(), Some(FeatureMode::Pooled))
            .unwrap()
            .features
            .unwrap();
        let hits = idx.search(&f, 10, &cpu_device()).unwrap();
        let (mut overlap, mut same_rad) = (0, 0);
        for (i, list) in hits.iter().enumerate() {
            let want: Vec<u64> = exp["tests"][i]["rad_indices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            overlap += list
                .iter()
                .filter(|n| want.contains(&(n.index as u64)))
                .count();
            let rad: Vec<String> = list.iter().map(|n| idx.label_string(n.index)).collect();
            same_rad += usize::from(rad.join(",") == exp["tests"][i]["rad"].as_str().unwrap());
        }
        eprintln!("pooled {name}: recall@10 vs upstream's unpooled neighbours {:.2} ({overlap}/{}), identical RAD strings {same_rad}/{}", overlap as f64 / (10 * hits.len()) as f64, 10 * hits.len(), hits.len());
    }
}
