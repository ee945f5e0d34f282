//! Weights and hyper-parameters straight from a MedDr GGUF (`docs/gguf-layout.md`).
//!
//! Every tensor type the quantizer can write is dequantised to f32 on request, so the reference measures what a
//! quantised file actually computes (the GPU engine's ground truth for q8_0 / q4_k_m files as well as f32).

use meddr_gguf::{GgufError, GgufFile, GgufHeader, TensorInfo};
use meddr_quants::QuantType;
use thiserror::Error;

use crate::error::RefError;
use crate::model::{LlmConfig, ModelConfig, Tensor, VisionConfig, WeightStore};

/// Largest tensor this store will dequantise (in f32 elements): 4 Gi elements = 16 GiB, far above MedDr's
/// largest tensor (lm_head of the 34B LLM: 0.46 G elements), so a corrupt dims field cannot trigger a huge
/// allocation.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 32;

/// Why a GGUF header could not be turned into a [`ModelConfig`].
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GgufConfigError {
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("GGUF metadata key `{key}` is unusable: {reason}")]
    BadKey { key: String, reason: String },
    #[error("GGUF metadata describe an invalid model: {0}")]
    Invalid(#[from] RefError),
}

fn key_err(key: &str, e: GgufError) -> GgufConfigError {
    match e {
        GgufError::MissingKey { .. } => GgufConfigError::MissingKey { key: key.into() },
        other => GgufConfigError::BadKey {
            key: key.into(),
            reason: other.to_string(),
        },
    }
}

fn u(h: &GgufHeader, key: &str) -> Result<usize, GgufConfigError> {
    let v = h.get_u32(key).map_err(|e| key_err(key, e))?;
    usize::try_from(v).map_err(|_| GgufConfigError::BadKey {
        key: key.into(),
        reason: format!("{v} does not fit in usize"),
    })
}

fn f(h: &GgufHeader, key: &str) -> Result<f32, GgufConfigError> {
    h.get_f32(key).map_err(|e| key_err(key, e))
}

fn bad(key: &str, reason: String) -> GgufConfigError {
    GgufConfigError::BadKey {
        key: key.into(),
        reason,
    }
}

impl ModelConfig {
    /// Reads the `llama.*`, `clip.*` and `meddr.*` keys the quantizer writes; the vision part is read only when
    /// `clip.has_vision_encoder` is true. The result is validated before it is returned.
    pub fn from_gguf(h: &GgufHeader) -> Result<ModelConfig, GgufConfigError> {
        let hidden = u(h, "llama.embedding_length")?;
        let heads = u(h, "llama.attention.head_count")?;
        let head_dim = match h.get("llama.rope.dimension_count") {
            Some(_) => u(h, "llama.rope.dimension_count")?,
            None if heads > 0 => hidden / heads,
            None => return Err(bad("llama.attention.head_count", "0 heads".into())),
        };
        let vocab = match h.get("llama.vocab_size") {
            Some(_) => u(h, "llama.vocab_size")?,
            None => {
                // Older llama GGUFs omit the key; the embedding's row count is authoritative anyway.
                let t =
                    h.tensor("token_embd.weight")
                        .ok_or_else(|| GgufConfigError::MissingKey {
                            key: "llama.vocab_size".into(),
                        })?;
                usize::try_from(t.n_rows())
                    .map_err(|_| bad("llama.vocab_size", format!("{} rows", t.n_rows())))?
            }
        };
        let llm = LlmConfig {
            hidden,
            layers: u(h, "llama.block_count")?,
            heads,
            kv_heads: u(h, "llama.attention.head_count_kv")?,
            head_dim,
            ffn: u(h, "llama.feed_forward_length")?,
            eps: f(h, "llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: f(h, "llama.rope.freq_base")?,
            vocab,
            context_length: u(h, "llama.context_length")?,
        };
        let has_vision = match h.get("clip.has_vision_encoder") {
            Some(_) => h
                .get_bool("clip.has_vision_encoder")
                .map_err(|e| key_err("clip.has_vision_encoder", e))?,
            None => false,
        };
        let vision = if has_vision {
            if let Ok(p) = h.get_str("clip.projector_type") {
                if p != "internvl" {
                    return Err(bad(
                        "clip.projector_type",
                        format!("{p:?} (only \"internvl\" is supported)"),
                    ));
                }
            }
            if h.get("meddr.vision.pixel_shuffle_version").is_some() {
                let v = u(h, "meddr.vision.pixel_shuffle_version")?;
                if v != 1 {
                    return Err(bad(
                        "meddr.vision.pixel_shuffle_version",
                        format!("{v} (only 1 is supported)"),
                    ));
                }
            }
            Some(VisionConfig {
                image_size: u(h, "clip.vision.image_size")?,
                patch_size: u(h, "clip.vision.patch_size")?,
                hidden: u(h, "clip.vision.embedding_length")?,
                heads: u(h, "clip.vision.attention.head_count")?,
                mlp: u(h, "clip.vision.feed_forward_length")?,
                layers: u(h, "clip.vision.block_count")?,
                eps: f(h, "clip.vision.attention.layer_norm_epsilon")?,
                proj_ln_eps: f(h, "meddr.projector.layer_norm_epsilon")?,
                llm_hidden: u(h, "clip.vision.projection_dim")?,
                downsample_ratio: f(h, "meddr.vision.downsample_ratio")?,
            })
        } else {
            None
        };
        let num_image_tokens = u(h, "meddr.image.num_tokens")?;
        let image_context_token_id = h
            .get_u32("meddr.image.context_token_id")
            .map_err(|e| key_err("meddr.image.context_token_id", e))?;
        let cfg = ModelConfig {
            vision,
            llm,
            image_context_token_id,
            num_image_tokens,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

enum Backing {
    #[cfg(not(target_arch = "wasm32"))]
    File(GgufFile),
    Bytes {
        header: GgufHeader,
        bytes: Vec<u8>,
    },
}

/// A [`WeightStore`] over one GGUF file: each request dequantises the named tensor to f32.
pub struct GgufStore {
    backing: Backing,
}

impl GgufStore {
    /// Memory-maps `path` (header and tensor ranges are checked by `meddr-gguf`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, GgufError> {
        Ok(GgufStore {
            backing: Backing::File(GgufFile::open(path)?),
        })
    }

    /// Wraps an already opened file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_file(file: GgufFile) -> Self {
        GgufStore {
            backing: Backing::File(file),
        }
    }

    /// A whole GGUF file held in memory (the path without a file system).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        let header = GgufHeader::from_bytes(&bytes)?;
        header.validate_against_len(bytes.len() as u64)?;
        Ok(GgufStore {
            backing: Backing::Bytes { header, bytes },
        })
    }

    pub fn header(&self) -> &GgufHeader {
        match &self.backing {
            #[cfg(not(target_arch = "wasm32"))]
            Backing::File(f) => &f.header,
            Backing::Bytes { header, .. } => header,
        }
    }

    fn raw(&self, t: &TensorInfo) -> Result<&[u8], RefError> {
        let store = |reason: String| RefError::Store {
            name: t.name.clone(),
            reason,
        };
        match &self.backing {
            #[cfg(not(target_arch = "wasm32"))]
            Backing::File(f) => f.try_tensor_data(t).map_err(|e| store(e.to_string())),
            Backing::Bytes { header, bytes } => {
                let r = header.tensor_range(t).map_err(|e| store(e.to_string()))?;
                let (s, e) = (usize::try_from(r.start), usize::try_from(r.end));
                match (s, e) {
                    (Ok(s), Ok(e)) if s <= e && e <= bytes.len() => Ok(&bytes[s..e]),
                    _ => Err(store(format!(
                        "byte range {r:?} is outside the {} bytes held",
                        bytes.len()
                    ))),
                }
            }
        }
    }
}

impl WeightStore for GgufStore {
    fn tensor(&self, name: &str) -> Result<Tensor, RefError> {
        let t = self
            .header()
            .tensor(name)
            .ok_or_else(|| RefError::MissingTensor { name: name.into() })?;
        let store = |reason: String| RefError::Store {
            name: name.into(),
            reason,
        };
        let qt = QuantType::from_ggml_id(t.ty.id())
            .ok_or_else(|| store(format!("tensor type {} cannot be dequantised", t.ty.name())))?;
        let n = t.n_elements();
        if n > MAX_TENSOR_ELEMENTS {
            return Err(store(format!(
                "{n} elements exceed the cap of {MAX_TENSOR_ELEMENTS}"
            )));
        }
        let dims = t
            .dims
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| store(format!("dim {d} does not fit in usize")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let raw = self.raw(t)?;
        let mut data = vec![0f32; n as usize];
        meddr_quants::dequantize(qt, raw, &mut data).map_err(|e| store(e.to_string()))?;
        Ok(Tensor { dims, data })
    }
}
