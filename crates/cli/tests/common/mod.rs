//! What the `meddr` binary's test files share: the shared fixtures, a scratch folder, the dev MedDr model
//! (f32 GGUF written by the quantizer library) and running the binary.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use meddr_quantize::{quantize_checkpoint, FileType, Options};

/// `../shared` (or `$MEDDR_SHARED`).
pub fn shared() -> PathBuf {
    let shared = match std::env::var_os("MEDDR_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    assert!(
        shared.join("fixtures").is_dir(),
        "shared fixtures not found at {} (set MEDDR_SHARED)",
        shared.display()
    );
    shared
}

pub fn fixtures() -> PathBuf {
    shared().join("fixtures")
}

/// A scratch folder of this test process.
pub fn tmp() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("meddr-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The dev fixture checkpoint as an f32 GGUF, written once per test process.
pub fn model() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = tmp().join("dev-f32.gguf");
        let opts = Options {
            ftype: FileType::F32,
            vision_type: None,
            threads: None,
            force: true,
            progress: false,
        };
        quantize_checkpoint(&fixtures().join("checkpoints/dev"), &out, &opts)
            .expect("quantize dev checkpoint");
        out
    })
}

/// Runs `meddr` as a newcomer's shell would on a headless machine: no XDG_RUNTIME_DIR (whose absence used
/// to make a graphics library print errors on stderr; the tests check stderr holds only our own messages).
pub fn meddr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meddr"))
        .env_remove("XDG_RUNTIME_DIR")
        .args(args)
        .output()
        .expect("spawn meddr")
}

/// Runs `meddr` and parses its stdout as one JSON object (`--json` output); panics with stderr on failure.
pub fn ok_json(args: &[&str]) -> serde_json::Value {
    let out = meddr(args);
    assert!(
        out.status.success(),
        "meddr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Runs `meddr`, expecting a failure whose message holds every needle and says each thing once.
pub fn fails_with(args: &[&str], needles: &[&str]) {
    let out = meddr(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "meddr {args:?} should fail");
    assert!(!err.contains("panicked"), "panic: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    assert_says_each_thing_once(&err);
}

/// A failure's message says each thing once: no `": "`-separated part repeats (an error chain that printed a
/// cause both inside its parent's text and again as the parent's source did exactly that).
pub fn assert_says_each_thing_once(stderr: &str) {
    let parts: Vec<&str> = stderr
        .trim()
        .split(": ")
        .map(str::trim)
        .filter(|p| p.len() >= 8)
        .collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "{p:?} is said twice in: {stderr}"
        );
    }
}
