#![allow(dead_code)]
use std::path::PathBuf;

/// Workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn shared_dir() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared"))
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("MEDDR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "Python for the Pillow cross-check not found at {} (set MEDDR_PYTHON; it needs numpy and pillow==10.2.0)",
        p.display()
    );
    p
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
