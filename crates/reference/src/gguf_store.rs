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
    Invalid(RefError),
    #[error(transparent)]
    Config(meddr_config::ConfigError),
}

// By hand rather than `#[from]`: the cause's text is already in the message (no `source()` to print twice).
impl From<RefError> for GgufConfigError {
    fn from(e: RefError) -> Self {
        GgufConfigError::Invalid(e)
    }
}

impl From<meddr_config::ConfigError> for GgufConfigError {
    fn from(e: meddr_config::ConfigError) -> Self {
        use meddr_config::ConfigError as C;
        match e {
            C::MissingKey { key } => GgufConfigError::MissingKey { key },
            C::BadKey { key, reason } => GgufConfigError::BadKey { key, reason },
            other => GgufConfigError::Config(other),
        }
    }
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

impl ModelConfig {
    /// The hyper-parameters as `meddr-config` reads them (the same reader the GPU engine uses, so both accept
    /// and refuse the same files), in the reference's own types. A text-only file still names its image
    /// token ids (`meddr.image.*`). The result is validated before it is returned.
    pub fn from_gguf(h: &GgufHeader) -> Result<ModelConfig, GgufConfigError> {
        let l = meddr_config::LlmConfig::from_header(h)?;
        let v = meddr_config::VisionConfig::from_header(h, l.hidden)?;
        let z = |x: u32| x as usize;
        let llm = LlmConfig {
            hidden: z(l.hidden),
            layers: z(l.layers),
            heads: z(l.n_heads),
            kv_heads: z(l.n_kv_heads),
            head_dim: z(l.head_dim),
            ffn: z(l.ff),
            eps: l.eps,
            rope_theta: l.rope_theta,
            vocab: z(l.vocab),
            context_length: z(l.context_length),
        };
        let (vision, num_image_tokens, image_context_token_id) = match v {
            Some(v) => (
                Some(VisionConfig {
                    image_size: z(v.image_size),
                    patch_size: z(v.patch),
                    hidden: z(v.hidden),
                    heads: z(v.n_heads),
                    mlp: z(v.ff),
                    layers: z(v.layers),
                    eps: v.eps,
                    proj_ln_eps: v.proj_eps,
                    llm_hidden: z(l.hidden),
                    // meddr-config accepts pixel-shuffle version 1 at ratio 0.5 only.
                    downsample_ratio: 0.5,
                }),
                z(v.n_image_tokens),
                Some(v.context_token_id),
            ),
            // A plain llama.cpp file (no meddr.* keys) has no image tokens at all.
            None if h.get("meddr.format_version").is_none() => (None, 1, None),
            None => (
                None,
                u(h, "meddr.image.num_tokens")?,
                Some(
                    h.get_u32("meddr.image.context_token_id")
                        .map_err(|e| key_err("meddr.image.context_token_id", e))?,
                ),
            ),
        };
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
    /// Memory-maps `path` and, beside it, its mmproj when it has one ([`GgufFile::open_model`]; header and
    /// tensor ranges are checked by `meddr-gguf`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, GgufError> {
        Ok(GgufStore {
            backing: Backing::File(GgufFile::open_model(path, None)?),
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
