//! `meddr run` with no model: the whole pipeline in one command on the built-in default. A synthetic MedDr
//! checkpoint (random weights, upstream's exact layout) is built and quantized once into the user's cache,
//! then asked about the bundled example image (upstream's retinography demo image).

use std::path::PathBuf;

use anyhow::{Context, Result};
use meddr_quantize::synth::{write_checkpoint, SynthOptions, SynthShape};
use meddr_quantize::{quantize_checkpoint, FileType, Options};

/// Upstream MedDr's demo image (`examples/test1.jpg`, MIT licence), carried in the binary so the demo works
/// from any directory.
pub(crate) const EXAMPLE_IMAGE: &[u8] = include_bytes!("../../../docs/examples/retina.jpg");
pub(crate) const EXAMPLE_IMAGE_NAME: &str = "retina.jpg (bundled example)";
pub(crate) const EXAMPLE_QUESTION: &str = "Describe the image.";

/// Where the demo model is kept: `$MEDDR_CACHE`, else `$XDG_CACHE_HOME/meddr`, else `~/.cache/meddr`.
fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("MEDDR_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("meddr"));
    }
    let home = std::env::var_os("HOME").filter(|d| !d.is_empty()).context(
        "no cache folder for the demo model: set MEDDR_CACHE (or XDG_CACHE_HOME / HOME), or pass -m MODEL.gguf",
    )?;
    Ok(PathBuf::from(home).join(".cache/meddr"))
}

/// The demo model's path, building it first if the cache does not hold it yet (the GGUF writer is atomic:
/// an interrupted build leaves no file, and the next run builds again).
pub(crate) fn demo_model() -> Result<PathBuf> {
    let dir = cache_dir()?;
    let model = dir.join("meddr-demo-dev-q4_k_m.gguf");
    // Two files since the mmproj split; a language model alone (or an older single-file build) is rebuilt.
    let mmproj = meddr_gguf::mmproj_path_for(&model);
    if model.is_file() && mmproj.is_file() {
        eprintln!(
            "meddr: no model given: using the demo model {} (synthetic, random weights)",
            model.display()
        );
        return Ok(model);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the cache folder {}", dir.display()))?;
    eprintln!(
        "meddr: no model given: building the demo model once into {} (a synthetic MedDr checkpoint with random \
         weights in upstream's layout, quantized to q4_k_m)",
        model.display()
    );
    let tmp = tempfile::Builder::new()
        .prefix(".meddr-demo-checkpoint-")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temporary folder in {}", dir.display()))?;
    let ck = tmp.path().join("synthetic-dev");
    let so = SynthOptions {
        shape: SynthShape::preset("dev")?,
        lora_rank: 16,
        shard_bytes: 4_000_000_000,
        seed: 177,
        tokenizer_dir: None,
        force: false,
        layout_only: false,
    };
    write_checkpoint(&ck, &so, |_| {}).context("writing the synthetic checkpoint")?;
    let opts = Options {
        ftype: FileType::Q4KM,
        vision_type: None,
        threads: None,
        force: model.exists() || mmproj.exists(),
        progress: true,
    };
    match quantize_checkpoint(&ck, &model, &opts) {
        Ok(_) => Ok(model),
        // Another `meddr run` built it at the same time: its files are as good as ours.
        Err(_) if model.is_file() && mmproj.is_file() => Ok(model),
        Err(e) => Err(e).context("quantizing the demo model"),
    }
}
