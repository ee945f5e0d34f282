//! The dev fixture quantizes at every type; gguf-py reads each output and its dequantized tensors match the
//! LoRA-merged f32 weights (merged independently in numpy) within each type's bound; the embedded tokenizer
//! reproduces every fixture case through the `tokenizers` crate.

mod common;
use common::*;
use std::process::Command;
use std::str::FromStr;

fn quantize_and_check(ty: &str, extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("dev-{ty}.gguf"));
    let ck = dev_checkpoint();
    let mut args = vec![
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        ty,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let r = run_quantize(&args);
    assert_eq!(r.code, 0, "meddr-quantize --type {ty} failed: {}", r.stderr);
    let check = Command::new(python())
        .arg(workspace_root().join("tests/py/check_gguf.py"))
        .arg(&out)
        .arg(&ck)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "gguf-py check of {ty} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["n_tokens"], 2009);
    assert_eq!(report["alignment"], 32);
    // Nothing but the two outputs is left in the directory.
    assert_eq!(
        dir_entries(dir.path()),
        vec![format!("dev-{ty}.gguf"), format!("dev-{ty}.mmproj.gguf")]
    );
    report
}

fn types(report: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = report["types"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    v.sort();
    v
}

#[test]
fn f32_is_exact_merge() {
    let r = quantize_and_check("f32", &[]);
    assert_eq!(types(&r), vec!["F32"]);
}

#[test]
fn f16() {
    let r = quantize_and_check("f16", &[]);
    assert_eq!(types(&r), vec!["F16", "F32"]);
}

#[test]
fn q8_0() {
    let r = quantize_and_check("q8_0", &[]);
    // The patch embedding's 588-wide rows hold no 32-element block: it stays F16.
    assert_eq!(r["tensors"]["v.patch_embd.weight"]["type"], "F16");
    assert_eq!(r["tensors"]["blk.0.ffn_down.weight"]["type"], "Q8_0");
}

#[test]
fn q4_0() {
    let r = quantize_and_check("q4_0", &[]);
    assert_eq!(r["tensors"]["blk.1.attn_q.weight"]["type"], "Q4_0");
    // llama.cpp puts the output matrix at Q6_K, falling back to Q8_0 for rows (192) that hold no 256 block.
    assert_eq!(r["tensors"]["output.weight"]["type"], "Q8_0");
}

#[test]
fn q4_k_m() {
    let r = quantize_and_check("q4_k_m", &[]);
    // Rows of 192 cannot take k-quants: Q4_K falls back to Q5_0 as in llama.cpp; ffn_down rows are 512 wide.
    assert_eq!(r["tensors"]["blk.1.attn_q.weight"]["type"], "Q5_0");
    // use_more_bits(i, 3) holds for the last layer only.
    assert_eq!(r["tensors"]["blk.0.ffn_down.weight"]["type"], "Q4_K");
    assert_eq!(r["tensors"]["blk.1.ffn_down.weight"]["type"], "Q4_K");
    assert_eq!(r["tensors"]["blk.2.ffn_down.weight"]["type"], "Q6_K");
    assert_eq!(r["tensors"]["v.blk.0.ffn_down.weight"]["type"], "Q8_0");
    assert_eq!(r["file_type"], 15);
}

#[test]
fn q4_k_s_with_q4_k_vision() {
    let r = quantize_and_check("q4_k_s", &["--vision-type", "q4_k"]);
    assert_eq!(r["tensors"]["blk.0.ffn_down.weight"]["type"], "Q4_K");
    // ViT fc2 rows (384) hold no 256 block → Q5_0; the projector's 384-wide rows too.
    assert_eq!(r["tensors"]["v.blk.0.ffn_down.weight"]["type"], "Q5_0");
    assert_eq!(r["file_type"], 14);
}

#[test]
fn embedded_tokenizer_reproduces_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dev.gguf");
    let r = run_quantize(&[
        dev_checkpoint().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = meddr_gguf::GgufFile::open_model(&out, None).unwrap();
    let json = f
        .header
        .get_str("tokenizer.huggingface.json")
        .unwrap()
        .to_string();
    let tok = tokenizers::Tokenizer::from_str(&json).unwrap();
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("fixtures/tokenizer/tokenizer_fixtures.json"))
            .unwrap(),
    )
    .unwrap();
    let cases = fx["encode_cases"].as_array().expect("encode_cases");
    assert!(cases.len() >= 27);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "encoding {text:?}");
    }
    // And the four fixture prompts.
    let exp: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("fixtures/expected/dev/expected.json")).unwrap(),
    )
    .unwrap();
    for s in exp["samples"].as_array().unwrap() {
        let want: Vec<u32> = s["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok
            .encode(s["prompt"].as_str().unwrap(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(got, want, "prompt of {}", s["id"]);
    }
}

#[test]
fn synthetic_dev_checkpoint_matches_upstream_layout_and_quantizes() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("synth");
    let st = Command::new(synth_bin())
        .args(["-o", ck.to_str().unwrap(), "--shard-mb", "2"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // Same tensor names, shapes and dtypes as the upstream fixture checkpoint.
    let load = |p: &std::path::Path| -> std::collections::BTreeMap<String, (Vec<usize>, String)> {
        let s = meddr_quantize::checkpoint::ShardSet::open(p).unwrap();
        s.tensors
            .iter()
            .map(|(k, v)| (k.clone(), (v.shape.clone(), format!("{:?}", v.dtype))))
            .collect()
    };
    assert_eq!(load(&ck), load(&dev_checkpoint()));
    let a =
        meddr_quantize::checkpoint::CheckpointConfig::from_file(&ck.join("config.json")).unwrap();
    let b = meddr_quantize::checkpoint::CheckpointConfig::from_file(
        &dev_checkpoint().join("config.json"),
    )
    .unwrap();
    assert_eq!(a, b);
    let out = dir.path().join("synth.gguf");
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q4_k_m",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let check = Command::new(python())
        .arg(workspace_root().join("tests/py/check_gguf.py"))
        .arg(&out)
        .arg(&ck)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn already_merged_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("merged");
    let st = Command::new(synth_bin())
        .args(["-o", ck.to_str().unwrap(), "--lora-rank", "0"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let out = dir.path().join("merged.gguf");
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = meddr_gguf::GgufFile::open_model(&out, None).unwrap();
    assert_eq!(f.header.get_bool("meddr.lora.merged").unwrap(), false);
    let check = Command::new(python())
        .arg(workspace_root().join("tests/py/check_gguf.py"))
        .arg(&out)
        .arg(&ck)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn k_quant_fallbacks_are_reported_and_recorded() {
    // Issue 9.7: on the dev checkpoint most language-model matrices cannot take k-quants (rows of 192/512 are
    // not multiples of 256) and fell back silently. The summary goes to stderr, every fallback into the file.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dev-q4_k_m.gguf");
    let ck = dev_checkpoint();
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q4_k_m",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("20 of 23 language-model matrices, 85 % of their parameters"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("q4_K -> q5_0: 18 tensors")
            && r.stderr.contains("q6_K -> q8_0: 2 tensors"),
        "{}",
        r.stderr
    );
    let f = meddr_gguf::GgufFile::open_model(&out, None).unwrap();
    let listed = f.header.get_str_array("meddr.quantize.fallbacks").unwrap();
    // Each entry names a tensor whose stored type is the one it says it fell back to.
    for e in &listed {
        let (name, rest) = e.split_once(": ").unwrap();
        let got = rest
            .split(" -> ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(f.header.tensor(name).unwrap().ty.name(), got, "{e}");
    }
    assert!(
        listed
            .iter()
            .any(|e| e.starts_with("blk.1.attn_q.weight: q4_K -> q5_0")),
        "{listed:?}"
    );
    // An f32 file has nothing to report.
    let out32 = dir.path().join("dev-f32.gguf");
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out32.to_str().unwrap(),
        "--type",
        "f32",
    ]);
    assert!(!r.stderr.contains("fell back"), "{}", r.stderr);
    assert!(meddr_gguf::GgufFile::open_model(&out32, None)
        .unwrap()
        .header
        .get_str_array("meddr.quantize.fallbacks")
        .unwrap()
        .is_empty());
}

/// Embedding rows past `len(tokenizer)` (padded Hugging Face checkpoints; a synthetic model at Yi's 64k scale)
/// become `[PAD{id}]` tokens of type UNUSED, as llama.cpp's converter writes them; text never encodes to them
/// and gguf-py reads the file. A tokenizer larger than the embedding is refused.
#[test]
fn padded_vocabulary_gets_llama_cpp_pad_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("synth");
    let synth = |vocab: &str, out: &std::path::Path| {
        let st = Command::new(synth_bin())
            .args([
                "-o",
                out.to_str().unwrap(),
                "--vocab",
                vocab,
                "--lora-rank",
                "0",
            ])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    };
    synth("2100", &ck);
    let out = dir.path().join("padded.gguf");
    let r = run_quantize(&[
        ck.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = meddr_gguf::GgufFile::open_model(&out, None).unwrap();
    let tokens = f.header.get_str_array("tokenizer.ggml.tokens").unwrap();
    let types = f.header.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!((tokens.len(), types.len()), (2100, 2100));
    assert_eq!(tokens[2008], "</box>");
    for id in 2009..2100 {
        assert_eq!(tokens[id], format!("[PAD{id}]"));
        assert_eq!(types[id], 5, "token {id} is not UNUSED");
    }
    let json = f
        .header
        .get_str("tokenizer.huggingface.json")
        .unwrap()
        .to_string();
    let tok = tokenizers::Tokenizer::from_str(&json).unwrap();
    assert_eq!(tok.get_vocab_size(true), 2100);
    let ids = tok
        .encode("[PAD2050] <img> a chest X-ray", false)
        .unwrap()
        .get_ids()
        .to_vec();
    assert!(ids.iter().all(|&i| i < 2009 || i == 2050), "{ids:?}");
    let check = Command::new(python())
        .arg(workspace_root().join("tests/py/check_gguf.py"))
        .arg(&out)
        .arg(&ck)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(report["n_tokens"], 2100);

    let small = dir.path().join("small");
    synth("2000", &small);
    let r = run_quantize(&[
        small.to_str().unwrap(),
        "-o",
        dir.path().join("x.gguf").to_str().unwrap(),
        "--quiet",
    ]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("2009 tokens but embed_tokens has only 2000 rows"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("x.gguf").exists());
}
