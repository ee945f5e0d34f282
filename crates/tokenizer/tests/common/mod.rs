#![allow(dead_code)]
//! Shared helpers for the integration tests.

use std::path::{Path, PathBuf};

use meddr_tokenizer::{MedDrTokenizer, TokenizerSpec};
use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Canonical, so that a symlinked checkout still finds the workspace's .venv, .cache and ../shared.
    std::fs::canonicalize(manifest)
        .unwrap_or_else(|_| manifest.to_owned())
        .join("../..")
}

pub fn shared() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"))
}

pub fn fixture_dir() -> PathBuf {
    let d = shared().join("fixtures/tokenizer");
    assert!(
        d.join("tokenizer.model").is_file(),
        "missing {} (set MEDDR_SHARED)",
        d.display()
    );
    d
}

pub fn read_json(p: &Path) -> Value {
    let text =
        std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn fixtures() -> Value {
    read_json(&fixture_dir().join("tokenizer_fixtures.json"))
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.is_file(),
        "python for cross-checks not found at {} (set MEDDR_PYTHON)",
        p.display()
    );
    p
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    // One folder per call: tests run in parallel, and two of them asking for the same name must not share
    // (one's cleanup removed the other's files).
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("meddr-tokenizer-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn fixture_spec() -> TokenizerSpec {
    TokenizerSpec::from_hf_dir(&fixture_dir()).expect("fixture tokenizer loads")
}

/// Every way the engine can obtain the runtime tokenizer from what the quantizer wrote.
pub fn all_runtimes(spec: &TokenizerSpec) -> Vec<(&'static str, MedDrTokenizer)> {
    // The GGUF stores the JSON as a string: re-serialise it through a generic JSON value as another writer would.
    let reserialised =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&spec.hf_json).unwrap())
            .unwrap();
    let from_parts = TokenizerSpec::from_gguf_parts(
        spec.tokens.clone(),
        spec.scores.clone(),
        spec.token_types.clone(),
        spec.bos_id,
        spec.eos_id,
        spec.unk_id,
        spec.pad_id,
        spec.add_bos,
        spec.add_eos,
        spec.add_space_prefix,
        Some(reserialised.clone()),
    )
    .unwrap();
    vec![
        ("from_spec", MedDrTokenizer::from_spec(spec).unwrap()),
        (
            "from_hf_json",
            MedDrTokenizer::from_hf_json(&spec.hf_json).unwrap(),
        ),
        (
            "from_hf_json(reserialised)",
            MedDrTokenizer::from_hf_json(&reserialised).unwrap(),
        ),
        (
            "from_gguf_parts(json)",
            MedDrTokenizer::from_spec(&from_parts).unwrap(),
        ),
    ]
}

/// Small deterministic PRNG (SplitMix64) for reproducible random inputs.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
