//! Every malformed input gives one clear message, a non-zero exit and no output file (not even a temp file).

mod common;
use common::*;
use std::path::{Path, PathBuf};

struct Case {
    _tmp: tempfile::TempDir,
    ck: PathBuf,
    out_dir: PathBuf,
}

fn damaged(f: impl FnOnce(&Path)) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    copy_dir(&dev_checkpoint(), &ck);
    f(&ck);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    Case {
        _tmp: tmp,
        ck,
        out_dir,
    }
}

fn expect_failure(c: &Case, needle: &str) {
    let out = c.out_dir.join("m.gguf");
    let r = run_quantize(&[
        c.ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(
        r.code, 1,
        "expected failure containing {needle:?}, got exit {} and {:?}",
        r.code, r.stderr
    );
    assert!(
        r.stderr.contains(needle),
        "stderr {:?} does not mention {needle:?}",
        r.stderr
    );
    assert!(r.stderr.starts_with("error: "), "{:?}", r.stderr);
    assert_eq!(
        r.stderr.trim_end().lines().count(),
        1,
        "one message expected: {:?}",
        r.stderr
    );
    assert!(
        dir_entries(&c.out_dir).is_empty(),
        "left behind: {:?}",
        dir_entries(&c.out_dir)
    );
}

/// Rewrites one shard through `safetensors`, letting the test edit its tensors, and keeps the index in step.
fn edit_shard(
    ck: &Path,
    shard: &str,
    f: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = ck.join(shard);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let data = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, data).unwrap();
    let idx_path = ck.join("model.safetensors.index.json");
    let mut idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&idx_path).unwrap()).unwrap();
    let map = idx["weight_map"].as_object_mut().unwrap();
    map.retain(|_, v| v != shard);
    for (n, ..) in &tensors {
        map.insert(n.clone(), serde_json::json!(shard));
    }
    std::fs::write(&idx_path, serde_json::to_string(&idx).unwrap()).unwrap();
}

fn edit_config(ck: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = ck.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

const S3: &str = "model-00003-of-00003.safetensors";

#[test]
fn missing_shard() {
    let c =
        damaged(|ck| std::fs::remove_file(ck.join("model-00002-of-00003.safetensors")).unwrap());
    expect_failure(&c, "model-00002-of-00003.safetensors");
}

#[test]
fn truncated_shard() {
    let c = damaged(|ck| {
        let p = ck.join(S3);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 100).unwrap();
    });
    expect_failure(&c, "truncated");
}

#[test]
fn unsupported_dtype() {
    let c = damaged(|ck| {
        edit_shard(ck, S3, |t| {
            let e = t.iter_mut().find(|e| e.0 == "mlp1.3.bias").unwrap();
            e.1 = safetensors::Dtype::I16;
        })
    });
    expect_failure(&c, "mlp1.3.bias: dtype I16 is not supported");
}

#[test]
fn shape_contradicts_config() {
    let c = damaged(|ck| edit_config(ck, |v| v["llm_config"]["intermediate_size"] = 500.into()));
    expect_failure(&c, "contradicts config.json");
}

#[test]
fn unknown_tensor() {
    let c = damaged(|ck| {
        edit_shard(ck, S3, |t| {
            t.push((
                "vision_model.extra_head.weight".into(),
                safetensors::Dtype::BF16,
                vec![2],
                vec![0; 4],
            ))
        })
    });
    expect_failure(&c, "vision_model.extra_head.weight: unknown tensor");
}

#[test]
fn missing_tensor() {
    let c = damaged(|ck| edit_shard(ck, S3, |t| t.retain(|e| e.0 != "mlp1.3.bias")));
    expect_failure(&c, "mlp1.3.bias: missing");
}

#[test]
fn unsupported_model_type() {
    let c = damaged(|ck| edit_config(ck, |v| v["model_type"] = "llava".into()));
    expect_failure(&c, "unsupported model_type \"llava\"");
}

#[test]
fn unreadable_tokenizer() {
    let c = damaged(|ck| {
        let p = ck.join("tokenizer.model");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 3]).unwrap();
    });
    expect_failure(&c, "tokenizer");
}

#[test]
fn lora_a_without_b() {
    let c = damaged(|ck| {
        edit_shard(ck, S3, |t| {
            t.retain(|e| e.0 != "language_model.base_model.model.model.layers.2.mlp.up_proj.lora_B.default.weight")
        })
    });
    expect_failure(&c, "has no matching lora_B");
}

#[test]
fn lora_rank_disagrees_with_config() {
    let c = damaged(|ck| edit_config(ck, |v| v["use_llm_lora"] = 8.into()));
    expect_failure(&c, "use_llm_lora = 8");
}

#[test]
fn non_finite_weight() {
    let c = damaged(|ck| {
        edit_shard(ck, S3, |t| {
            let e = t.iter_mut().find(|e| e.0 == "mlp1.3.weight").unwrap();
            e.3[10..12].copy_from_slice(&half::bf16::NAN.to_bits().to_le_bytes());
        })
    });
    expect_failure(&c, "mm.model.mlp.3.weight");
}

#[test]
fn existing_output_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let ck = dev_checkpoint();
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
        "--force",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(&std::fs::read(&out).unwrap()[..4], b"GGUF");
    assert_eq!(
        dir_entries(tmp.path()),
        vec!["m.gguf".to_string(), "m.mmproj.gguf".to_string()]
    );

    // An mmproj left beside a new output name is refused too, and kept.
    let out2 = tmp.path().join("n.gguf");
    let proj2 = tmp.path().join("n.mmproj.gguf");
    std::fs::write(&proj2, b"keep me too").unwrap();
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out2.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("already exists") && r.stderr.contains("n.mmproj.gguf"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(&proj2).unwrap(), b"keep me too");
    assert!(!out2.exists());
}

#[test]
fn disk_full_leaves_nothing() {
    // RLIMIT_FSIZE makes writes past 200 KiB fail with EFBIG, as a full disk would fail them.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m.gguf");
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec {} {} -o {} --type f32 --quiet",
        quantize_bin().display(),
        dev_checkpoint().display(),
        out.display()
    );
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    assert!(
        dir_entries(tmp.path()).is_empty(),
        "left behind: {:?}",
        dir_entries(tmp.path())
    );
}

#[test]
fn not_a_directory() {
    let r = run_quantize(&["/nonexistent/ck", "-o", "/tmp/never.gguf"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
}

/// `--synthetic 40b --layout-only`: MedDr's full pair declared in a moment without weights (holes on disk,
/// `meddr info` plans it: crates/cli/tests/cli.rs); an unknown preset is refused naming it, writing nothing.
#[test]
fn layout_only_of_the_40b_preset_and_a_bad_preset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("meddr-40b.gguf");
    let r = run_quantize(&[
        "--synthetic",
        "40b",
        "--layout-only",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("the layout only"), "{}", r.stderr);
    let (lm, mm) = (
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(tmp.path().join("meddr-40b.mmproj.gguf"))
            .unwrap()
            .len(),
    );
    // Yi-34B at Q4_K_M with a 64,000-token vocabulary, InternViT-6B at q8_0.
    assert!((20_000_000_000..22_000_000_000).contains(&lm), "{lm}");
    assert!((5_900_000_000..6_200_000_000).contains(&mm), "{mm}");
    let r = run_quantize(&[
        "--synthetic",
        "70b",
        "--layout-only",
        "-o",
        tmp.path().join("x.gguf").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("\"70b\""), "{}", r.stderr);
    assert!(!tmp.path().join("x.gguf").exists());
}
