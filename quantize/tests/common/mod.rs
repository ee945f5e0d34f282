#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn shared() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"))
}

pub fn dev_checkpoint() -> PathBuf {
    let p = shared().join("fixtures/checkpoints/dev");
    assert!(
        p.join("config.json").exists(),
        "fixture checkpoint not found at {} (set MEDDR_SHARED)",
        p.display()
    );
    p
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "python venv not found at {} (run tests/setup.sh or set MEDDR_PYTHON)",
        p.display()
    );
    p
}

pub fn quantize_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meddr-quantize"))
}

pub fn synth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meddr-synth-checkpoint"))
}

/// Copies a checkpoint directory (files only) so a test can damage it.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    // Fixture files are read-only; copies must be writable.
    for e in std::fs::read_dir(dst).unwrap() {
        let p = e.unwrap().path();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&p, perm).unwrap();
    }
}

pub struct Run {
    pub code: i32,
    pub stderr: String,
}

pub fn run_quantize(args: &[&str]) -> Run {
    let out = Command::new(quantize_bin())
        .args(args)
        .output()
        .expect("run meddr-quantize");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Files left in a directory (to prove nothing partial stays behind).
pub fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
