//! What the `meddr` binary's test files share: the shared fixtures, a scratch folder, the dev MedDr model
//! (f32 GGUF written by the quantizer library) and running the binary.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use meddr_quantize::{quantize_once, FileType};

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

/// A GSCo fixture folder (`fixtures/gsco/<name>`: timm specialist, MedMNIST data, expected.json).
pub fn gsco_fixture(name: &str) -> PathBuf {
    fixtures().join("gsco").join(name)
}

/// The PCam ResNet-18 (64 px) GSCo fixture.
pub fn pcam() -> PathBuf {
    gsco_fixture("pcam_resnet18_64")
}

/// `meddr gsco index` of the PCam fixture's `split` into `out` (CPU device, `--force`); its `--json` summary.
pub fn pcam_index(split: &str, out: &Path) -> serde_json::Value {
    let (spec, npz) = (pcam(), pcam().join("data.npz"));
    ok_json(&[
        "gsco",
        "index",
        "--specialist",
        spec.to_str().unwrap(),
        "--medmnist",
        npz.to_str().unwrap(),
        "--split",
        split,
        "-o",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--force",
        "--json",
    ])
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
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
        quantize_once(&fixtures().join("checkpoints/dev"), &tmp(), "dev", FileType::F32)
            .expect("quantize dev checkpoint")
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
/// `meddr chat -m <dev model> --device cpu ARGS` fed `script` on stdin, to its end; the run must succeed
/// without a panic. Returns (stdout, stderr).
pub fn chat_repl(args: &[&str], script: &str) -> (String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_meddr"))
        .args(["chat", "-m", model().to_str().unwrap(), "--device", "cpu"])
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meddr chat");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

pub fn ok_json(args: &[&str]) -> serde_json::Value {
    json_of(&meddr(args))
}

/// A successful run's stdout as one JSON object; panics with its stderr when it failed or panicked.
pub fn json_of(out: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "meddr failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A clean failure: exit status `code`, nothing on stdout, stderr holding each of `needles` and saying each
/// thing once, no panic. Our own errors (status 1) are one line; clap's usage errors (status 2) add its
/// "For more information, try '--help'" line.
pub fn assert_failed(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == 1 {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one line expected: {stderr}"
        );
    }
    for n in needles {
        assert!(stderr.contains(n), "expected {n:?} in: {stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_says_each_thing_once(&stderr);
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
