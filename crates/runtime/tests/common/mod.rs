#![allow(dead_code)]

use std::path::{Path, PathBuf};

use meddr_tokenizer::{MedDrTokenizer, TokenizerSpec};
use serde_json::Value;

/// `MEDDR_SHARED`, or `<workspace root>/../shared`.
pub fn fixtures() -> PathBuf {
    let shared = match std::env::var_os("MEDDR_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let d = shared.join("fixtures");
    assert!(
        d.is_dir(),
        "shared fixtures not found at {} (set MEDDR_SHARED)",
        d.display()
    );
    d
}

pub fn expected() -> Value {
    let p = fixtures().join("expected/dev/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

pub fn tokenizer() -> MedDrTokenizer {
    let spec =
        TokenizerSpec::from_hf_dir(&fixtures().join("checkpoints/dev")).expect("tokenizer spec");
    MedDrTokenizer::from_spec(&spec).expect("tokenizer")
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
