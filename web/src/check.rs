//! Checks on a parsed header before any weight byte is read, so a wrong file or an undersized device is
//! reported in milliseconds instead of after a multi-GB upload.

use meddr_engine::QuantType;
use meddr_gguf::{GgmlType, GgufHeader, ParseOutcome, TensorInfo};
use serde::Serialize;

use crate::error::{Result, WebError};

/// First slice read for the header; a dev model's header fits, a real one needs about 2 MiB (vocabulary).
pub const FIRST_HEADER_SLICE: u64 = 64 << 10;

/// What the UI shows about a model before and after loading.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSummary {
    pub name: String,
    pub file_bytes: u64,
    pub header_bytes: u64,
    pub tensor_bytes: u64,
    pub n_tensors: usize,
    pub file_type: Option<u32>,
    pub llm_layers: u32,
    pub hidden: u32,
    pub vocab: u64,
    pub vision_layers: u32,
    pub vision_width: u32,
    /// Largest single tensor row span that must fit one storage binding (a whole row).
    pub largest_row_bytes: u64,
    pub largest_tensor_bytes: u64,
}

/// Next step of incremental header parsing: either the header or how many leading bytes to have next.
/// Asking for at least double the current prefix keeps the number of `Blob.slice` round trips logarithmic.
pub fn next_header_step(
    prefix: &[u8],
    file_len: u64,
) -> Result<std::result::Result<GgufHeader, u64>> {
    if prefix.len() >= 4 && &prefix[..4] != b"GGUF" {
        return Err(WebError::NotGguf {
            found: prefix[..4].to_vec(),
        });
    }
    match GgufHeader::parse_with_len(prefix, Some(file_len))? {
        ParseOutcome::Complete(h) => Ok(Ok(h)),
        ParseOutcome::NeedMore { at_least } => {
            let want = at_least
                .max((prefix.len() as u64).saturating_mul(2))
                .min(file_len);
            if want <= prefix.len() as u64 {
                return Err(WebError::Truncated {
                    file_len,
                    header_len: at_least,
                });
            }
            Ok(Err(want))
        }
    }
}

fn need<T>(r: meddr_gguf::Result<T>, key: &str) -> Result<T> {
    r.map_err(|e| WebError::NotMedDr {
        why: format!("metadata {key}: {e}"),
    })
}

/// Accepts MedDr files written to `docs/gguf-layout.md` (llama LLM + InternViT + `meddr.*` keys) and plain
/// llama.cpp `llama` GGUFs (no `meddr.*` keys: text only, their own chat template; the output head may be
/// tied to `token_embd.weight`).
pub fn check_meddr(h: &GgufHeader, file_len: u64) -> Result<ModelSummary> {
    h.validate_against_len(file_len)?;
    let arch = need(h.get_str("general.architecture"), "general.architecture")?;
    if arch != "llama" {
        return Err(WebError::NotMedDr {
            why: format!("general.architecture is {arch:?}, expected \"llama\""),
        });
    }
    let meddr = h.get("meddr.format_version").is_some();
    if meddr {
        let version = need(h.get_u32("meddr.format_version"), "meddr.format_version")?;
        if version != 1 {
            return Err(WebError::NotMedDr {
                why: format!("meddr.format_version is {version}, this build reads 1"),
            });
        }
    }
    let required: &[&str] = if meddr {
        &[
            "token_embd.weight",
            "output.weight",
            "v.patch_embd.weight",
            "mm.model.mlp.1.weight",
        ]
    } else {
        &["token_embd.weight"]
    };
    for &t in required {
        if meddr && t.starts_with(['v', 'm']) && !meddr_gguf::has_vision_tower(h) {
            return Err(WebError::NotMedDr {
                why:
                    "this is MedDr's language model alone; its vision tower is in the mmproj file \
                      (<name>.mmproj.gguf): choose both files"
                        .into(),
            });
        }
        if h.tensor(t).is_none() {
            return Err(WebError::NotMedDr {
                why: format!("tensor {t:?} is missing"),
            });
        }
    }
    let mut tensor_bytes = 0u64;
    let mut largest_row = 0u64;
    let mut largest = 0u64;
    for t in &h.tensors {
        let size = t.try_byte_size()?;
        tensor_bytes = tensor_bytes.saturating_add(size);
        largest = largest.max(size);
        largest_row = largest_row.max(t.row_bytes());
        weight_type(t)?;
    }
    let vocab = h.tensor("token_embd.weight").map_or(0, |t| t.n_rows());
    Ok(ModelSummary {
        name: h.get_str("general.name").unwrap_or("").to_string(),
        file_bytes: file_len,
        header_bytes: h.data_offset,
        tensor_bytes,
        n_tensors: h.tensors.len(),
        file_type: h.get_u32("general.file_type").ok(),
        llm_layers: need(h.get_u32("llama.block_count"), "llama.block_count")?,
        hidden: need(
            h.get_u32("llama.embedding_length"),
            "llama.embedding_length",
        )?,
        vocab,
        vision_layers: if meddr {
            need(
                h.get_u32("clip.vision.block_count"),
                "clip.vision.block_count",
            )?
        } else {
            0
        },
        vision_width: if meddr {
            need(
                h.get_u32("clip.vision.embedding_length"),
                "clip.vision.embedding_length",
            )?
        } else {
            0
        },
        largest_row_bytes: largest_row,
        largest_tensor_bytes: largest,
    })
}

/// The engine's block type for a tensor, or a typed refusal.
pub fn weight_type(t: &TensorInfo) -> Result<QuantType> {
    let id = ggml_id(t.ty);
    QuantType::from_ggml_id(id).ok_or_else(|| WebError::UnsupportedTensorType {
        tensor: t.name.clone(),
        ty: format!("{:?}", t.ty),
    })
}

fn ggml_id(ty: GgmlType) -> u32 {
    ty.id()
}

/// Weights are split across bindings by whole rows, so only a single row must fit one binding.
pub fn check_device_limits(h: &GgufHeader, max_binding_bytes: u64) -> Result<()> {
    for t in &h.tensors {
        let row = t.row_bytes();
        if row > max_binding_bytes {
            return Err(WebError::ExceedsDeviceLimit {
                tensor: t.name.clone(),
                needed: row,
                limit: max_binding_bytes,
            });
        }
    }
    Ok(())
}

/// Two GGUFs as one model (llama.cpp's layout: a language model and its `mmproj`), in either order: returns
/// the merged header ([`meddr_gguf::merge_mmproj`]), whether `a` is the language model, where the mmproj's
/// byte 0 sits in the merged byte space, and that space's length (pass it where one file's length went).
///
/// # Errors
/// [`WebError::Gguf`] with [`meddr_gguf::GgufError::SplitMismatch`] when neither or both are mmproj files, or
/// they cannot be one model.
pub fn pair_headers(
    a: (&GgufHeader, u64, &str),
    b: (&GgufHeader, u64, &str),
) -> Result<PairedHeader> {
    let a_is_text = !meddr_gguf::is_mmproj(a.0);
    let (text, proj) = if a_is_text { (a, b) } else { (b, a) };
    let (header, mmproj_base) = meddr_gguf::merge_mmproj(text.0, text.1, proj.0, (text.2, proj.2))?;
    let merged_len = mmproj_base
        .checked_add(proj.1)
        .ok_or_else(|| WebError::Other("model files too large".into()))?;
    header.validate_against_len(merged_len)?;
    Ok(PairedHeader {
        header,
        first_is_model: a_is_text,
        mmproj_base,
        merged_len,
    })
}

/// [`pair_headers`]' result.
#[derive(Debug, Clone)]
pub struct PairedHeader {
    pub header: GgufHeader,
    /// The first file given is the language model (else the mmproj).
    pub first_is_model: bool,
    /// Merged offsets at or past this are the mmproj file's, at `offset - mmproj_base`.
    pub mmproj_base: u64,
    pub merged_len: u64,
}
