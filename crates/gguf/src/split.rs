//! llama.cpp's split of a vision-language model into two GGUFs: the language model (`general.architecture =
//! llama`, what llama.cpp, LM Studio and ollama load as a text model) and an `mmproj` file with the vision tower
//! and projector (`general.architecture = clip`, `clip.*` keys, `v.*`/`mm.*` tensors; llama.cpp
//! `tools/mtmd/clip.cpp`). Readers here see the pair as one file: [`merge_mmproj`] builds one header whose
//! tensor offsets address a virtual concatenation of the two files, so the engine, the CPU reference and the
//! browser read tensors by (offset, length) exactly as from a single file.

use std::path::{Path, PathBuf};

use crate::error::{GgufError, Result};
use crate::header::{GgufHeader, TensorInfo};
use crate::value::{Array, Value};

/// `general.architecture` of an mmproj file.
pub const MMPROJ_ARCHITECTURE: &str = "clip";

/// Metadata key (bool, in both files of a pair) of a model whose tensors were declared but never written
/// (`GgufWriter::skip_tensor`: zeros, holes on disk): MedDr's full layout for memory plans without its
/// 24 GB of weights. Loaders refuse it; `meddr info` reads it like any file.
pub const LAYOUT_ONLY_KEY: &str = "meddr.layout_only";

/// Where a model's mmproj is looked for, in order: `<stem>.mmproj.gguf` (what `meddr-quantize` writes) and
/// `mmproj-<stem>.gguf` (the Hugging Face / llama.cpp naming), both beside `model`.
pub fn mmproj_candidates(model: &Path) -> Vec<PathBuf> {
    let dir = model.parent().unwrap_or(Path::new(""));
    let stem = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".gguf").unwrap_or(&stem).to_string();
    vec![
        dir.join(format!("{stem}.mmproj.gguf")),
        dir.join(format!("mmproj-{stem}.gguf")),
    ]
}

/// The mmproj path `meddr-quantize` writes beside `model`: `<stem>.mmproj.gguf`.
pub fn mmproj_path_for(model: &Path) -> PathBuf {
    mmproj_candidates(model).swap_remove(0)
}

/// True when the header is an mmproj file (`general.architecture = clip`).
pub fn is_mmproj(h: &GgufHeader) -> bool {
    matches!(h.get("general.architecture"), Some(Value::String(a)) if a == MMPROJ_ARCHITECTURE)
}

/// True when the header already holds a vision tower (a single-file MedDr GGUF from before the split).
pub fn has_vision_tower(h: &GgufHeader) -> bool {
    h.get("clip.has_vision_encoder").is_some()
        || h.tensors.iter().any(|t| is_vision_tensor(&t.name))
}

/// The tensors that go to the mmproj file: llama.cpp's `v.*` (vision tower) and `mm.*` (projector).
pub fn is_vision_tensor(name: &str) -> bool {
    name.starts_with("v.") || name.starts_with("mm.")
}

/// One header for a language model (`text`, a file of `text_len` bytes) and its mmproj, plus the virtual
/// offset at which the mmproj file's byte 0 sits (`base`: `text_len` rounded up to both alignments).
///
/// Metadata: the text file's, then the mmproj's keys the text file lacks; string lists under
/// `meddr.quantize.*` (what the quantizer did to each file) are joined. Any other key in both files (other than
/// `general.*`, which describe each file) must have the same value — that is how a mismatched pair is caught
/// (`meddr.image.num_tokens`, `meddr.format_version`). Tensor offsets of the mmproj are rebased so that
/// `data_offset + offset` is `base` + the tensor's absolute offset in the mmproj file.
///
/// # Errors
/// [`GgufError::SplitMismatch`] when `mmproj` is not a `clip` file, `text` is one or already has a vision
/// tower, a shared key disagrees or a tensor name is in both; [`GgufError::Overflow`] on offsets past `u64`.
pub fn merge_mmproj(
    text: &GgufHeader,
    text_len: u64,
    mmproj: &GgufHeader,
    names: (&str, &str),
) -> Result<(GgufHeader, u64)> {
    let mismatch = |reason: String| GgufError::SplitMismatch {
        text: names.0.to_string(),
        mmproj: names.1.to_string(),
        reason,
    };
    let arch = |h: &GgufHeader| match h.get("general.architecture") {
        Some(Value::String(a)) => a.clone(),
        Some(v) => format!("{v:?}"),
        None => "(none)".to_string(),
    };
    if !is_mmproj(mmproj) {
        return Err(mismatch(format!(
            "its general.architecture is {:?}, not {MMPROJ_ARCHITECTURE:?}",
            arch(mmproj)
        )));
    }
    if is_mmproj(text) {
        return Err(mismatch(format!(
            "{} is itself an mmproj file (general.architecture {MMPROJ_ARCHITECTURE:?}); pass the language model",
            names.0
        )));
    }
    if has_vision_tower(text) {
        return Err(mismatch(format!(
            "{} already holds a vision tower",
            names.0
        )));
    }
    let mut metadata = text.metadata.clone();
    for (k, v) in &mmproj.metadata {
        if k.starts_with("general.") {
            continue;
        }
        // Per-file lists of what the quantizer did (`meddr.quantize.fallbacks`): the pair's is both files'.
        if k.starts_with("meddr.quantize.") {
            if let (
                Some((_, Value::Array(Array::String(mine)))),
                Value::Array(Array::String(theirs)),
            ) = (metadata.iter_mut().find(|(tk, _)| tk == k), v)
            {
                mine.extend(theirs.iter().cloned());
                continue;
            }
        }
        match text.get(k) {
            None => metadata.push((k.clone(), v.clone())),
            Some(tv) if tv == v => {}
            Some(tv) => {
                return Err(mismatch(format!(
                    "{k} is {} there but {} in the language model",
                    short(v),
                    short(tv)
                )))
            }
        }
    }
    let align = text.alignment.max(mmproj.alignment);
    let base = text_len
        .checked_next_multiple_of(align)
        .ok_or_else(|| GgufError::overflow("mmproj base offset"))?;
    let mut tensors = text.tensors.clone();
    tensors.reserve(mmproj.tensors.len());
    for t in &mmproj.tensors {
        if text.tensor(&t.name).is_some() {
            return Err(mismatch(format!("tensor {:?} is in both files", t.name)));
        }
        let offset = base
            .checked_add(mmproj.data_offset)
            .and_then(|o| o.checked_add(t.offset))
            .and_then(|o| o.checked_sub(text.data_offset))
            .ok_or_else(|| GgufError::overflow(format!("merged offset of tensor {:?}", t.name)))?;
        tensors.push(TensorInfo {
            offset,
            ..t.clone()
        });
    }
    let merged = GgufHeader {
        version: text.version,
        metadata,
        tensors,
        // Every rebased offset is a multiple of the smaller alignment (both data sections and `base` are).
        alignment: text.alignment.min(mmproj.alignment),
        data_offset: text.data_offset,
    };
    merged.validate_layout()?;
    Ok((merged, base))
}

fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}
