//! MedDr's hyper-parameters as a GGUF states them (`docs/gguf-layout.md`): the one reader of the `llama.*`,
//! `clip.*` and model-shape `meddr.*` keys, shared by the GPU engine and the CPU reference so both accept and
//! refuse exactly the same files. Every value is checked before use; errors name the key and the value.

use meddr_gguf::{GgufError, GgufHeader};
use thiserror::Error;

/// Why a header does not describe a model this project can run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("GGUF metadata key `{key}` is unusable: {reason}")]
    BadKey { key: String, reason: String },
    #[error(
        "`general.architecture` is {found:?}; only `llama` (MedDr's language model) is supported"
    )]
    Architecture { found: String },
    #[error("tensor `{name}` is missing from the file")]
    MissingTensor { name: String },
    #[error("this file holds only a model's layout (written by `meddr-quantize --layout-only`: `{LAYOUT_ONLY_KEY}` is true and no weight was written); it serves `meddr info`'s memory plan, not answers")]
    LayoutOnly,
}

pub use meddr_gguf::LAYOUT_ONLY_KEY;

/// Whether the file was written with `meddr-quantize --layout-only`.
pub fn is_layout_only(h: &GgufHeader) -> bool {
    matches!(h.get(LAYOUT_ONLY_KEY), Some(meddr_gguf::Value::Bool(true)))
}

/// Refuses a layout-only file ([`LAYOUT_ONLY_KEY`]) where weights are about to be used.
pub fn check_has_weights(h: &GgufHeader) -> Result<()> {
    if is_layout_only(h) {
        return Err(ConfigError::LayoutOnly);
    }
    Ok(())
}

pub type Result<T> = std::result::Result<T, ConfigError>;

fn key_err(key: &str, e: GgufError) -> ConfigError {
    match e {
        GgufError::MissingKey { .. } => ConfigError::MissingKey { key: key.into() },
        other => ConfigError::BadKey {
            key: key.into(),
            reason: other.to_string(),
        },
    }
}

fn hparam(key: &str, value: impl std::fmt::Display, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::BadKey {
        key: key.into(),
        reason: format!("{value} {why}"),
    }
}

fn u32_key(h: &GgufHeader, key: &str) -> Result<u32> {
    h.get_u32(key).map_err(|e| key_err(key, e))
}

fn f32_key(h: &GgufHeader, key: &str) -> Result<f32> {
    h.get_f32(key).map_err(|e| key_err(key, e))
}

fn str_key<'a>(h: &'a GgufHeader, key: &str) -> Result<&'a str> {
    h.get_str(key).map_err(|e| key_err(key, e))
}

fn bool_key(h: &GgufHeader, key: &str) -> Result<bool> {
    h.get_bool(key).map_err(|e| key_err(key, e))
}

/// LLaMA hyper-parameters from `llama.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    pub vocab: u32,
    pub hidden: u32,
    pub layers: u32,
    pub ff: u32,
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub eps: f32,
    pub rope_theta: f32,
    pub context_length: u32,
    /// `output.weight` absent: the LM head is `token_embd.weight`.
    pub tied_embeddings: bool,
}

/// InternViT + projector hyper-parameters from `clip.*` / `meddr.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub image_size: u32,
    pub patch: u32,
    pub hidden: u32,
    pub ff: u32,
    pub layers: u32,
    pub n_heads: u32,
    pub eps: f32,
    pub proj_eps: f32,
    /// Tokens per image after the pixel shuffle (256 for 448/14 and ratio 0.5).
    pub n_image_tokens: u32,
    pub context_token_id: u32,
}

impl VisionConfig {
    pub fn grid(&self) -> u32 {
        self.image_size / self.patch
    }
    pub fn n_positions(&self) -> u32 {
        self.grid() * self.grid() + 1
    }
    /// Length of the `pixel_values` an image encoder takes (`[3, S, S]`).
    pub fn pixel_len(&self) -> usize {
        3 * self.image_size as usize * self.image_size as usize
    }
}

fn get_u32(h: &GgufHeader, key: &str) -> Result<u32> {
    let v = u32_key(h, key)?;
    if v == 0 {
        return Err(hparam(key, v, "must be positive"));
    }
    Ok(v)
}

fn get_f32(h: &GgufHeader, key: &str) -> Result<f32> {
    let v = f32_key(h, key)?;
    if !(v.is_finite() && v > 0.0) {
        return Err(hparam(key, v, "must be finite and positive"));
    }
    Ok(v)
}

impl LlmConfig {
    pub fn from_header(h: &GgufHeader) -> Result<LlmConfig> {
        let arch = str_key(h, "general.architecture")?;
        if arch != "llama" {
            return Err(ConfigError::Architecture {
                found: arch.to_string(),
            });
        }
        let hidden = get_u32(h, "llama.embedding_length")?;
        let n_heads = get_u32(h, "llama.attention.head_count")?;
        let n_kv_heads = match h.get("llama.attention.head_count_kv") {
            Some(_) => get_u32(h, "llama.attention.head_count_kv")?,
            None => n_heads,
        };
        if hidden % n_heads != 0 {
            return Err(hparam(
                "llama.embedding_length",
                hidden,
                format!("is not a multiple of head_count {n_heads}"),
            ));
        }
        let head_dim = hidden / n_heads;
        if n_heads % n_kv_heads != 0 {
            return Err(hparam(
                "llama.attention.head_count_kv",
                n_kv_heads,
                format!("must divide head_count {n_heads}"),
            ));
        }
        if head_dim % 2 != 0 || head_dim > 256 {
            return Err(hparam(
                "llama.attention.head_count",
                n_heads,
                format!("gives head_dim {head_dim}; must be even and ≤ 256"),
            ));
        }
        if h.get("llama.rope.dimension_count").is_some() {
            let rd = u32_key(h, "llama.rope.dimension_count")?;
            if rd != head_dim {
                return Err(hparam(
                    "llama.rope.dimension_count",
                    rd,
                    format!("partial RoPE is not supported (head_dim {head_dim})"),
                ));
            }
        }
        let vocab_rows = h
            .tensor("token_embd.weight")
            .ok_or_else(|| ConfigError::MissingTensor {
                name: "token_embd.weight".into(),
            })?
            .n_rows();
        let vocab = u32::try_from(vocab_rows)
            .map_err(|_| hparam("llama.vocab_size", vocab_rows, "does not fit u32"))?;
        if h.get("llama.vocab_size").is_some() {
            let v = u32_key(h, "llama.vocab_size")?;
            if v != vocab {
                return Err(hparam(
                    "llama.vocab_size",
                    v,
                    format!("disagrees with token_embd.weight's {vocab} rows"),
                ));
            }
        }
        Ok(LlmConfig {
            vocab,
            hidden,
            layers: get_u32(h, "llama.block_count")?,
            ff: get_u32(h, "llama.feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim,
            eps: get_f32(h, "llama.attention.layer_norm_rms_epsilon")?,
            rope_theta: match h.get("llama.rope.freq_base") {
                Some(_) => get_f32(h, "llama.rope.freq_base")?,
                None => 10_000.0,
            },
            context_length: get_u32(h, "llama.context_length")?,
            tied_embeddings: h.tensor("output.weight").is_none(),
        })
    }
}

impl VisionConfig {
    /// `None` when the file has no vision tower.
    pub fn from_header(h: &GgufHeader, llm_hidden: u32) -> Result<Option<VisionConfig>> {
        let has =
            h.get("clip.has_vision_encoder").is_some() && bool_key(h, "clip.has_vision_encoder")?;
        if !has {
            return Ok(None);
        }
        let pt = str_key(h, "clip.projector_type")?;
        if pt != "internvl" {
            return Err(hparam(
                "clip.projector_type",
                pt,
                "only `internvl` is supported",
            ));
        }
        if h.get("meddr.vision.pixel_shuffle_version").is_some() {
            let v = u32_key(h, "meddr.vision.pixel_shuffle_version")?;
            if v != 1 {
                return Err(hparam(
                    "meddr.vision.pixel_shuffle_version",
                    v,
                    "only 1 is supported",
                ));
            }
        }
        if h.get("meddr.vision.downsample_ratio").is_some() {
            let r = f32_key(h, "meddr.vision.downsample_ratio")?;
            if r != 0.5 {
                return Err(hparam(
                    "meddr.vision.downsample_ratio",
                    r,
                    "only 0.5 is supported",
                ));
            }
        }
        let image_size = get_u32(h, "clip.vision.image_size")?;
        let patch = get_u32(h, "clip.vision.patch_size")?;
        if image_size % patch != 0 || (image_size / patch) % 2 != 0 || image_size > 4096 {
            return Err(hparam(
                "clip.vision.image_size",
                image_size,
                format!("must be ≤ 4096 and an even multiple of patch_size {patch}"),
            ));
        }
        let hidden = get_u32(h, "clip.vision.embedding_length")?;
        let n_heads = get_u32(h, "clip.vision.attention.head_count")?;
        if hidden % n_heads != 0 || hidden / n_heads > 256 {
            return Err(hparam(
                "clip.vision.attention.head_count",
                n_heads,
                format!("must divide embedding_length {hidden} into heads of ≤ 256"),
            ));
        }
        let proj = get_u32(h, "clip.vision.projection_dim")?;
        if proj != llm_hidden {
            return Err(hparam(
                "clip.vision.projection_dim",
                proj,
                format!("must equal llama.embedding_length {llm_hidden}"),
            ));
        }
        let grid = image_size / patch;
        let n_image_tokens = grid * grid / 4;
        if h.get("meddr.image.num_tokens").is_some() {
            let n = u32_key(h, "meddr.image.num_tokens")?;
            if n != n_image_tokens {
                return Err(hparam(
                    "meddr.image.num_tokens",
                    n,
                    format!("the geometry gives {n_image_tokens}"),
                ));
            }
        }
        Ok(Some(VisionConfig {
            image_size,
            patch,
            hidden,
            ff: get_u32(h, "clip.vision.feed_forward_length")?,
            layers: get_u32(h, "clip.vision.block_count")?,
            n_heads,
            eps: get_f32(h, "clip.vision.attention.layer_norm_epsilon")?,
            proj_eps: match h.get("meddr.projector.layer_norm_epsilon") {
                Some(_) => get_f32(h, "meddr.projector.layer_norm_epsilon")?,
                None => 1e-5,
            },
            n_image_tokens,
            context_token_id: u32_key(h, "meddr.image.context_token_id")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meddr_gguf::{GgmlType, TensorInfo, Value};

    /// SmolLM2-like text model plus a small InternViT: every key the quantizer writes for the shapes.
    fn header() -> GgufHeader {
        let md: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::String("llama".into())),
            ("llama.embedding_length", Value::U32(64)),
            ("llama.block_count", Value::U32(2)),
            ("llama.feed_forward_length", Value::U32(128)),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.attention.head_count_kv", Value::U32(2)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.rope.freq_base", Value::F32(5e6)),
            ("llama.context_length", Value::U32(256)),
            ("clip.has_vision_encoder", Value::Bool(true)),
            ("clip.projector_type", Value::String("internvl".into())),
            ("clip.vision.image_size", Value::U32(56)),
            ("clip.vision.patch_size", Value::U32(14)),
            ("clip.vision.embedding_length", Value::U32(32)),
            ("clip.vision.feed_forward_length", Value::U32(64)),
            ("clip.vision.block_count", Value::U32(1)),
            ("clip.vision.attention.head_count", Value::U32(2)),
            ("clip.vision.attention.layer_norm_epsilon", Value::F32(1e-6)),
            ("clip.vision.projection_dim", Value::U32(64)),
            ("meddr.image.num_tokens", Value::U32(4)),
            ("meddr.image.context_token_id", Value::U32(90)),
        ];
        GgufHeader {
            version: 3,
            metadata: md.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensors: vec![TensorInfo {
                name: "token_embd.weight".into(),
                dims: vec![64, 100],
                ty: GgmlType::F16,
                offset: 0,
            }],
            alignment: 32,
            data_offset: 0,
        }
    }

    fn with(key: &str, v: Value) -> GgufHeader {
        let mut h = header();
        match h.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => h.metadata.push((key.to_string(), v)),
        }
        h
    }

    fn without(key: &str) -> GgufHeader {
        let mut h = header();
        h.metadata.retain(|(k, _)| k != key);
        h
    }

    fn bad_key(r: Result<impl std::fmt::Debug>, key: &str, value: &str) {
        match r {
            Err(ConfigError::BadKey { key: k, reason }) => {
                assert_eq!(k, key);
                assert!(reason.contains(value), "{reason}");
            }
            other => panic!("expected BadKey {key}, got {other:?}"),
        }
    }

    #[test]
    fn reads_every_field() {
        let h = header();
        let l = LlmConfig::from_header(&h).unwrap();
        assert_eq!(
            (
                l.vocab,
                l.hidden,
                l.layers,
                l.ff,
                l.n_heads,
                l.n_kv_heads,
                l.head_dim
            ),
            (100, 64, 2, 128, 4, 2, 16)
        );
        assert_eq!((l.eps, l.rope_theta, l.context_length), (1e-5, 5e6, 256));
        assert!(l.tied_embeddings);
        let v = VisionConfig::from_header(&h, l.hidden).unwrap().unwrap();
        assert_eq!(
            (v.image_size, v.patch, v.hidden, v.ff, v.layers, v.n_heads),
            (56, 14, 32, 64, 1, 2)
        );
        assert_eq!(
            (v.n_image_tokens, v.context_token_id, v.proj_eps),
            (4, 90, 1e-5)
        );
        assert_eq!(
            (v.grid(), v.n_positions(), v.pixel_len()),
            (4, 17, 3 * 56 * 56)
        );
    }

    #[test]
    fn optional_keys_take_llama_cpp_defaults() {
        let l = LlmConfig::from_header(&without("llama.attention.head_count_kv")).unwrap();
        assert_eq!(l.n_kv_heads, l.n_heads);
        let l = LlmConfig::from_header(&without("llama.rope.freq_base")).unwrap();
        assert_eq!(l.rope_theta, 10_000.0);
        let h = without("clip.has_vision_encoder");
        assert_eq!(VisionConfig::from_header(&h, 64).unwrap(), None);
    }

    #[test]
    fn errors_name_the_key_and_value() {
        assert_eq!(
            LlmConfig::from_header(&without("llama.block_count")).unwrap_err(),
            ConfigError::MissingKey {
                key: "llama.block_count".into()
            }
        );
        match LlmConfig::from_header(&with("general.architecture", Value::String("qwen2".into()))) {
            Err(e @ ConfigError::Architecture { .. }) => assert!(e.to_string().contains("qwen2")),
            other => panic!("{other:?}"),
        }
        let wrong_type =
            LlmConfig::from_header(&with("llama.block_count", Value::String("two".into())));
        assert!(
            matches!(wrong_type, Err(ConfigError::BadKey { ref key, .. }) if key == "llama.block_count")
        );
        bad_key(
            LlmConfig::from_header(&with("llama.block_count", Value::U32(0))),
            "llama.block_count",
            "0",
        );
        bad_key(
            LlmConfig::from_header(&with("llama.attention.head_count", Value::U32(5))),
            "llama.embedding_length",
            "64",
        );
        bad_key(
            LlmConfig::from_header(&with("llama.attention.head_count_kv", Value::U32(3))),
            "llama.attention.head_count_kv",
            "3",
        );
        bad_key(
            LlmConfig::from_header(&with("llama.rope.dimension_count", Value::U32(8))),
            "llama.rope.dimension_count",
            "8",
        );
        bad_key(
            LlmConfig::from_header(&with("llama.vocab_size", Value::U32(99))),
            "llama.vocab_size",
            "99",
        );
        bad_key(
            LlmConfig::from_header(&with(
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(f32::NAN),
            )),
            "llama.attention.layer_norm_rms_epsilon",
            "NaN",
        );
        let mut no_embd = header();
        no_embd.tensors.clear();
        assert!(matches!(
            LlmConfig::from_header(&no_embd),
            Err(ConfigError::MissingTensor { .. })
        ));

        let v = |h: GgufHeader| VisionConfig::from_header(&h, 64);
        bad_key(
            v(with("clip.projector_type", Value::String("mlp".into()))),
            "clip.projector_type",
            "mlp",
        );
        bad_key(
            v(with("clip.vision.image_size", Value::U32(70))),
            "clip.vision.image_size",
            "70",
        );
        bad_key(
            v(with("clip.vision.attention.head_count", Value::U32(3))),
            "clip.vision.attention.head_count",
            "3",
        );
        bad_key(
            v(with("clip.vision.projection_dim", Value::U32(32))),
            "clip.vision.projection_dim",
            "32",
        );
        bad_key(
            v(with("meddr.image.num_tokens", Value::U32(16))),
            "meddr.image.num_tokens",
            "16",
        );
        bad_key(
            v(with("meddr.vision.downsample_ratio", Value::F32(0.25))),
            "meddr.vision.downsample_ratio",
            "0.25",
        );
        bad_key(
            v(with("meddr.vision.pixel_shuffle_version", Value::U32(2))),
            "meddr.vision.pixel_shuffle_version",
            "2",
        );
        assert_eq!(
            v(without("meddr.image.context_token_id")).unwrap_err(),
            ConfigError::MissingKey {
                key: "meddr.image.context_token_id".into()
            }
        );
    }
}
