//! What the engine's integration tests share: where the fixtures are, the GPU context, the dev checkpoint
//! as GGUF (written by our quantizer), the fixture's samples, and greedy decoding on the GPU.
//! Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use meddr_engine::{ContextOptions, GpuContext, GpuModel, ModelError, Readback, StepInput};
use meddr_quantize::FileType;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `../shared` beside the repository, or `$MEDDR_SHARED`.
pub fn shared() -> PathBuf {
    std::env::var_os("MEDDR_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
}

/// A new context with `opts` (forced limits, no f16…).
pub fn new_ctx(opts: ContextOptions) -> Arc<GpuContext> {
    match GpuContext::new_blocking(opts) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!(
            "no usable GPU adapter: {e}. Install lavapipe: apt-get install -y mesa-vulkan-drivers libvulkan1"
        ),
    }
}

/// The process's default context, made once.
pub fn ctx() -> Arc<GpuContext> {
    static C: OnceLock<Arc<GpuContext>> = OnceLock::new();
    C.get_or_init(|| new_ctx(ContextOptions::default())).clone()
}

/// A folder of this process's own under cargo's scratch folder for tests (`target/tmp`, which CI removes).
pub fn tmp_dir() -> PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "meddr-engine-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The dev checkpoint quantized to `ft` by `meddr-quantize` (once per type per process; tests of one
/// binary run in parallel threads and share it read-only).
pub fn dev_gguf(ft: FileType) -> PathBuf {
    meddr_quantize::quantize_once(&shared().join("fixtures/checkpoints/dev"), &tmp_dir(), "dev", ft)
        .unwrap_or_else(|e| panic!("quantizing the dev checkpoint to {}: {e}", ft.name()))
}

/// One sample of the dev fixture's `expected.json` (what upstream PyTorch computed).
pub struct Sample {
    pub id: String,
    /// File name under `fixtures/images`; `None` for the text-only sample.
    pub image: Option<String>,
    pub input_ids: Vec<u32>,
    /// Upstream's 24 greedy tokens.
    pub greedy: Vec<u32>,
}

/// Every sample of the dev fixture.
pub fn samples() -> Vec<Sample> {
    let p = shared().join("fixtures/expected/dev/expected.json");
    let j: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    j["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Sample {
            id: s["id"].as_str().unwrap().to_string(),
            image: s["image"].as_str().map(str::to_string),
            input_ids: ids(&s["input_ids"]),
            greedy: ids(&s["greedy_tokens"]),
        })
        .collect()
}

/// The text-only sample: its prompt ids and upstream's greedy tokens.
pub fn text_sample() -> (Vec<u32>, Vec<u32>) {
    let s = samples()
        .into_iter()
        .find(|s| s.image.is_none())
        .expect("the dev fixture has a text-only sample");
    (s.input_ids, s.greedy)
}

/// `n` greedy tokens after `prompt`, each read back (a cache of `n` positions past the prompt).
pub fn greedy(m: &mut GpuModel, prompt: &[u32], n: usize) -> Result<Vec<u32>, ModelError> {
    let mut out = vec![m.prefill(prompt, None, n as u32, Readback::Token)?.token];
    while out.len() < n {
        out.push(m.decode_step(StepInput::Greedy, Readback::Token)?.token);
    }
    Ok(out)
}
