//! Every specialist in `shared/fixtures/gsco` against what upstream's PyTorch/timm computed on it
//! (`expected.npz`, `expected.json`): the preprocessed input bit for bit, logits, probabilities and the
//! unpooled features within 1e-4 of the array's max-abs, and the same predicted labels — on burn's CPU
//! backend and on the engine's own wgpu device (lavapipe in CI).
//!
//! Tolerance: the fixtures' README measures PyTorch's own float32 error against float64 at ≤ 9.5e-6
//! relative (features, EfficientNet-B0); 1e-4 leaves 10× for a different but correct float32 summation
//! order, and the smallest logit margin (0.057) is 500× larger than 1e-4 of the largest logit (~10), so
//! predictions cannot flip inside it.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use burn_tensor::Device;
use meddr_engine::{ContextOptions, GpuContext};
use meddr_specialist::{
    cpu_device, ConfigOverrides, FeatureMode, Specialist, SpecialistError, Task,
};
use npyz::npz::NpzArchive;
use serde_json::Value;

fn shared() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

fn gsco(name: &str) -> PathBuf {
    let p = shared().join("fixtures/gsco").join(name);
    assert!(
        p.is_dir(),
        "GSCo fixture {} not found (set MEDDR_SHARED)",
        p.display()
    );
    p
}

/// The engine's device, registered once with burn: the specialists share MedDr's device and queue.
fn gpu() -> Device {
    static D: OnceLock<(Arc<GpuContext>, Device)> = OnceLock::new();
    D.get_or_init(|| {
        let ctx = GpuContext::new_blocking(ContextOptions { all_adapter_features: true, ..Default::default() })
            .unwrap_or_else(|e| panic!("no usable GPU adapter: {e}. Install lavapipe: apt-get install -y mesa-vulkan-drivers libvulkan1"));
        let dev = meddr_specialist::wgpu_device(&ctx.instance, &ctx.adapter, &ctx.device, &ctx.queue).expect("burn on the engine's device");
        (Arc::new(ctx), dev)
    })
    .1
    .clone()
}

fn npz_f32(path: &PathBuf, key: &str) -> (Vec<u64>, Vec<f32>) {
    let mut a = NpzArchive::open(path).unwrap();
    let npy = a
        .by_name(key)
        .unwrap()
        .unwrap_or_else(|| panic!("{key} in {}", path.display()));
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn npz_u8(path: &PathBuf, key: &str) -> (Vec<u64>, Vec<u8>) {
    let mut a = NpzArchive::open(path).unwrap();
    let npy = a.by_name(key).unwrap().unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<u8>().unwrap())
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let max_b = b.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    let max_d = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    max_d / max_b.max(1e-30)
}

fn test_images(dir: &PathBuf) -> Vec<meddr_image::RgbImage> {
    let (shape, data) = npz_u8(&dir.join("data.npz"), "test_images");
    let s = shape[1] as usize;
    data.chunks_exact(s * s * 3)
        .map(|c| meddr_image::RgbImage {
            width: s as u32,
            height: s as u32,
            data: c.to_vec(),
        })
        .collect()
}

/// Runs the first `n` test images through the specialist on `device` and checks everything.
fn check(name: &str, device: &Device, n: usize) {
    let dir = gsco(name);
    let exp: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let s = Specialist::load(&dir, &ConfigOverrides::default(), device).unwrap();
    assert_eq!(s.config.architecture_name, exp["arch"].as_str().unwrap());
    assert_eq!(
        s.feature_dim(FeatureMode::Unpooled) as u64,
        exp["feature_dim"].as_u64().unwrap()
    );
    let images = test_images(&dir);
    let expected_npz = dir.join("expected.npz");

    let (_, input0) = npz_f32(&expected_npz, "input0");
    let x0 = s.preprocess(&images[0]).unwrap();
    assert!(
        x0.iter()
            .zip(&input0)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{name}: preprocessed input differs from torchvision's"
    );

    let mut x = Vec::new();
    for img in &images[..n] {
        x.extend(s.preprocess(img).unwrap());
    }
    let out = s.run(&x, n, Some(FeatureMode::Unpooled)).unwrap();
    let c = s.config.num_classes;
    let d = s.feature_dim(FeatureMode::Unpooled);
    let (_, logits) = npz_f32(&expected_npz, "logits");
    let (_, probs) = npz_f32(&expected_npz, "probabilities");
    let (_, feats) = npz_f32(&expected_npz, "features");
    let got_logits: Vec<f32> = out
        .predictions
        .iter()
        .flat_map(|p| p.logits.clone())
        .collect();
    let got_probs: Vec<f32> = out
        .predictions
        .iter()
        .flat_map(|p| p.probabilities.clone())
        .collect();
    let r_logits = rel_diff(&got_logits, &logits[..n * c]);
    let r_probs = rel_diff(&got_probs, &probs[..n * c]);
    let r_feats = rel_diff(out.features.as_ref().unwrap(), &feats[..n * d]);
    eprintln!("{name} on {device:?}: logits {r_logits:.2e}, probabilities {r_probs:.2e}, features {r_feats:.2e} (relative to max-abs)");
    assert!(r_logits <= 1e-4, "{name}: logits off by {r_logits:e}");
    assert!(r_probs <= 1e-4, "{name}: probabilities off by {r_probs:e}");
    assert!(r_feats <= 1e-4, "{name}: features off by {r_feats:e}");
    for (i, p) in out.predictions.iter().enumerate() {
        let t = &exp["tests"][i];
        let want: Vec<usize> = match s.config.task {
            Task::MultiClass => vec![t["pred"].as_u64().unwrap() as usize],
            Task::MultiLabel => t["pred"]
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, v)| v.as_u64() == Some(1))
                .map(|(k, _)| k)
                .collect(),
        };
        assert_eq!(p.predicted, want, "{name}: test image {i} predicted");
    }
    // Pooled features are the classifier's input: same batch, a different readout.
    let pooled = s
        .run(&x[..s.input_len()], 1, Some(FeatureMode::Pooled))
        .unwrap();
    assert_eq!(
        pooled.features.unwrap().len(),
        s.config.architecture.num_features()
    );
}

#[test]
fn resnet18_cpu() {
    check("pcam_resnet18_64", &cpu_device(), 8);
}
#[test]
fn densenet121_cpu() {
    check("derma_densenet121_28", &cpu_device(), 8);
}
#[test]
fn vit_tiny_cpu() {
    check("pcam_vit_tiny_224", &cpu_device(), 8);
}
#[test]
fn efficientnet_b0_cpu() {
    check("chest_efficientnet_b0_128", &cpu_device(), 8);
}
#[test]
fn resnet18_gpu() {
    check("pcam_resnet18_64", &gpu(), 8);
}
#[test]
fn densenet121_gpu() {
    check("derma_densenet121_28", &gpu(), 2);
}
#[test]
fn vit_tiny_gpu() {
    check("pcam_vit_tiny_224", &gpu(), 8);
}
#[test]
fn efficientnet_b0_gpu() {
    check("chest_efficientnet_b0_128", &gpu(), 2);
}

/// An image of another size is resized to `img_size` first (Pillow bicubic), then padded.
#[test]
fn other_sizes_are_resized_first() {
    let dir = gsco("pcam_resnet18_64");
    let s = Specialist::load(&dir, &ConfigOverrides::default(), &cpu_device()).unwrap();
    let img = &test_images(&dir)[0];
    let big = meddr_image::resize_bicubic(img, 100, 100);
    let direct = s
        .preprocess(&meddr_image::resize_bicubic(&big, 64, 64))
        .unwrap();
    assert_eq!(s.preprocess(&big).unwrap(), direct);
    let (l, t, r, b) = s.config.padding();
    assert_eq!((l, t, r, b), (80, 80, 80, 80));
    assert_eq!(direct[0], 0.0, "padding is zero after normalisation");
}

fn copy_fixture(name: &str) -> PathBuf {
    let src = gsco(name);
    // One folder per call: tests run in parallel, and two of them asking for the same name must not share
    // (one's cleanup removed the other's files).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dst = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-spec-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn load_err(dir: &PathBuf) -> SpecialistError {
    match Specialist::load(dir, &ConfigOverrides::default(), &cpu_device()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

fn edit_config(dir: &PathBuf, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn bad_specialists_get_one_clear_error() {
    let base = "pcam_resnet18_64";
    // Unknown architecture.
    let d = copy_fixture(base);
    edit_config(&d, |v| v["architecture"] = "convnext_tiny".into());
    let e = load_err(&d).to_string();
    assert!(
        e.contains("config.json") && e.contains("convnext_tiny") && e.contains("resnet18"),
        "{e}"
    );
    // Label count ≠ num_classes.
    edit_config(&d, |v| {
        v["architecture"] = "resnet18".into();
        v["label_names"] = serde_json::json!(["a", "b", "c"]);
    });
    let e = load_err(&d).to_string();
    assert!(
        e.contains("label_names") && e.contains("3 names") && e.contains("num_classes = 2"),
        "{e}"
    );
    // Weights of another architecture (config says resnet34: missing tensors).
    edit_config(&d, |v| {
        v["label_names"] = serde_json::json!(["normal", "tumor"]);
        v["architecture"] = "resnet34".into();
        v.as_object_mut().unwrap().remove("num_features");
    });
    let e = load_err(&d).to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("missing") && e.contains("layer1.2"),
        "{e}"
    );
    // Mis-shaped tensor: num_classes 3 against a 2-class head.
    edit_config(&d, |v| {
        v["architecture"] = "resnet18".into();
        v["num_classes"] = 3.into();
        v["label_names"] = serde_json::json!(["a", "b", "c"]);
    });
    let e = load_err(&d).to_string();
    assert!(
        e.contains("fc.weight") && e.contains("[2, 512]") && e.contains("[3, 512]"),
        "{e}"
    );
    // Extra tensors: ResNet-18 weights declared as a ResNet-18 with a copy of another model's keys is covered
    // by loading DenseNet weights under a ResNet config (everything missing) and the converse (extras).
    let e2 = copy_fixture("derma_densenet121_28");
    std::fs::copy(d.join("config.json"), e2.join("config.json")).unwrap();
    edit_config(&e2, |v| {
        v["num_classes"] = 2.into();
        v["label_names"] = serde_json::json!(["normal", "tumor"]);
    });
    let e = load_err(&e2).to_string();
    assert!(e.contains("missing") && e.contains("conv1.weight"), "{e}");
    // Not safetensors.
    std::fs::write(
        d.join("model.safetensors"),
        b"not a safetensors file at all",
    )
    .unwrap();
    edit_config(&d, |v| {
        v["num_classes"] = 2.into();
        v["label_names"] = serde_json::json!(["normal", "tumor"]);
    });
    let e = load_err(&d).to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("not a safetensors"),
        "{e}"
    );
    // Missing config field, bad JSON, no folder.
    std::fs::write(d.join("config.json"), b"{\"architecture\": \"resnet18\"}").unwrap();
    let e = load_err(&d).to_string();
    assert!(e.contains("num_classes"), "{e}");
    std::fs::write(d.join("config.json"), b"{oops").unwrap();
    let e = load_err(&d).to_string();
    assert!(e.contains("not valid JSON"), "{e}");
    let e = load_err(&d.join("nope")).to_string();
    assert!(e.contains("nope"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&e2);
}

#[test]
fn extra_tensors_are_refused() {
    // A ViT-Ti config over the fixture's weights with depth cut by one would leave blocks.11.* unused;
    // emulate with a ViT state dict plus an unrelated tensor.
    let d = copy_fixture("pcam_resnet18_64");
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra = vec![0u8; 16];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView)> = st.tensors();
    tensors.push((
        "head.extra.weight".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &extra).unwrap(),
    ));
    let out = safetensors::serialize(tensors, None).unwrap();
    std::fs::write(d.join("model.safetensors"), out).unwrap();
    let e = load_err(&d).to_string();
    assert!(
        e.contains("1 tensor(s)") && e.contains("head.extra.weight"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// A plain timm config (no GSCo fields) works with defaults; GSCo fields can come from the caller.
#[test]
fn plain_timm_config_defaults() {
    let d = copy_fixture("pcam_resnet18_64");
    edit_config(&d, |v| {
        let o = v.as_object_mut().unwrap();
        o.remove("img_size");
        o.remove("task");
        o.remove("label_names");
    });
    let s = Specialist::load(&d, &ConfigOverrides::default(), &cpu_device()).unwrap();
    assert_eq!(
        (
            s.config.img_size,
            s.config.task,
            s.config.label_names.clone()
        ),
        (
            224,
            Task::MultiClass,
            vec!["0".to_string(), "1".to_string()]
        )
    );
    let o = ConfigOverrides {
        img_size: Some(64),
        task: None,
        label_names: Some(vec!["normal".into(), "tumor".into()]),
    };
    let s = Specialist::load(&d, &o, &cpu_device()).unwrap();
    assert_eq!(s.config.img_size, 64);
    // Duplicate label names cannot be told apart in RAD/MoED strings.
    let dup = ConfigOverrides {
        label_names: Some(vec!["a".into(), "a".into()]),
        ..Default::default()
    };
    let e = Specialist::load(&d, &dup, &cpu_device())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("appears twice"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
