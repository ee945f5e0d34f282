//! What a runtime needs to know about a MedDr GGUF besides the weights (`docs/gguf-layout.md`).

use meddr_gguf::{GgufError, GgufHeader};
use meddr_tokenizer::{GgufBpeParts, GgufVocabKind, MedDrTokenizer, TokenizerSpec};

use crate::error::{Result, RuntimeError};

/// Image preprocessing as the file describes it (`meddr.vision.*`, `clip.vision.*`); mirrors
/// `meddr_image::PreprocessConfig` without depending on the decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocessing {
    pub image_size: u32,
    pub pad2square: bool,
    pub pad_color: [u8; 3],
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ImagePreprocessing {
    /// The settings as `meddr_image::preprocess` takes them.
    pub fn config(&self) -> meddr_image::PreprocessConfig {
        meddr_image::PreprocessConfig {
            image_size: self.image_size,
            pad2square: self.pad2square,
            pad_color: self.pad_color,
            mean: self.mean,
            std: self.std,
            max_pixels: meddr_image::MAX_PIXELS,
        }
    }
}

/// How a question becomes the prompt's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFormat {
    /// A MedDr file: upstream's Hermes-2 template with the file's system message ([`crate::build_prompt`]).
    MedDr,
    /// A plain llama.cpp GGUF (no `meddr.*` keys) without `tokenizer.chat_template`: the question is completed
    /// as raw text, with BOS as the file's `tokenizer.ggml.add_bos_token` says.
    Raw,
    /// A plain llama.cpp GGUF with `tokenizer.chat_template`: questions and histories are rendered with it
    /// ([`crate::render_chat_template`]), as llama.cpp's Jinja path and transformers do.
    Template,
}

/// Model facts for prompting, stopping and preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: Option<String>,
    /// `meddr.format_version`; 0 for a plain llama GGUF.
    pub format_version: u32,
    pub prompt_format: PromptFormat,
    pub context_length: usize,
    pub vocab_size: usize,
    /// `meddr.chat.eos_token_id`: the only token upstream stops on.
    pub eos_token_id: u32,
    /// `meddr.chat.stop_token_ids`: the Hermes-2 template's list (optional stop policy).
    pub stop_token_ids: Vec<u32>,
    pub system_message: String,
    pub chat_template: String,
    /// `None` for a text-only file (no `clip.has_vision_encoder`).
    pub vision: Option<VisionInfo>,
}

/// Image-related ids and preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionInfo {
    pub num_image_tokens: usize,
    pub context_token_id: u32,
    pub start_token_id: u32,
    pub end_token_id: u32,
    pub preprocessing: ImagePreprocessing,
}

fn key_err(key: &str, e: GgufError) -> RuntimeError {
    match e {
        GgufError::MissingKey { .. } => RuntimeError::MissingKey { key: key.into() },
        other => RuntimeError::BadKey {
            key: key.into(),
            reason: other.to_string(),
        },
    }
}

fn u32_key(h: &GgufHeader, key: &str) -> Result<u32> {
    h.get_u32(key).map_err(|e| key_err(key, e))
}

fn usize_key(h: &GgufHeader, key: &str) -> Result<usize> {
    let v = u32_key(h, key)?;
    usize::try_from(v).map_err(|_| RuntimeError::BadKey {
        key: key.into(),
        reason: format!("{v} does not fit in usize"),
    })
}

/// `llama.vocab_size`, else the length of `tokenizer.ggml.tokens`.
fn vocab_size(h: &GgufHeader) -> Result<usize> {
    match h.get("llama.vocab_size") {
        Some(_) => usize_key(h, "llama.vocab_size"),
        None => Ok(h
            .get_str_array("tokenizer.ggml.tokens")
            .map_err(|e| key_err("tokenizer.ggml.tokens", e))?
            .len()),
    }
}

fn f32x3(h: &GgufHeader, key: &str) -> Result<[f32; 3]> {
    let v = h.get_f32_array(key).map_err(|e| key_err(key, e))?;
    <[f32; 3]>::try_from(v.as_slice()).map_err(|_| RuntimeError::BadKey {
        key: key.into(),
        reason: format!("expected 3 values, found {}", v.len()),
    })
}

impl ModelInfo {
    /// The `<IMG_CONTEXT>` id: the file's `meddr.image.context_token_id`, else the vocabulary's (a text-only
    /// file may still have the token); `None` when neither has one.
    pub fn image_context_id(&self, tokenizer: &meddr_tokenizer::MedDrTokenizer) -> Option<u32> {
        self.vision
            .as_ref()
            .map(|v| v.context_token_id)
            .or_else(|| tokenizer.token_to_id(crate::IMG_CONTEXT))
    }

    /// Reads a llama GGUF's facts: a MedDr file (`meddr.format_version` present) fully checked, else a plain
    /// llama.cpp file ([`PromptFormat::Raw`]). Any other architecture is one clear error before anything
    /// else is read.
    pub fn from_gguf_header(h: &GgufHeader) -> Result<ModelInfo> {
        let arch = match h.get_str("general.architecture") {
            Ok(a) => a,
            Err(GgufError::MissingKey { .. }) => {
                return Err(RuntimeError::NotMedDr {
                    reason: "general.architecture is missing".into(),
                })
            }
            Err(e) => {
                return Err(RuntimeError::NotMedDr {
                    reason: format!("general.architecture is unusable: {e}"),
                })
            }
        };
        if arch != "llama" {
            return Err(RuntimeError::NotMedDr {
                reason: format!("general.architecture is {arch:?}, expected \"llama\""),
            });
        }
        let format_version = match h.get("meddr.format_version") {
            None => return Self::plain_llama(h),
            Some(_) => u32_key(h, "meddr.format_version")?,
        };
        if format_version != 1 {
            return Err(RuntimeError::BadKey {
                key: "meddr.format_version".into(),
                reason: format!("{format_version} is not supported (this build reads version 1)"),
            });
        }
        let vocab_size = vocab_size(h)?;
        let has_vision = match h.get("clip.has_vision_encoder") {
            Some(_) => h
                .get_bool("clip.has_vision_encoder")
                .map_err(|e| key_err("clip.has_vision_encoder", e))?,
            None => false,
        };
        let vision = if has_vision {
            let pad = h
                .get_u32_array("meddr.vision.pad_color")
                .map_err(|e| key_err("meddr.vision.pad_color", e))?;
            let pad_color = match pad.as_slice() {
                &[r, g, b] if r <= 255 && g <= 255 && b <= 255 => [r as u8, g as u8, b as u8],
                _ => {
                    return Err(RuntimeError::BadKey {
                        key: "meddr.vision.pad_color".into(),
                        reason: format!("{pad:?} is not three values in 0..=255"),
                    })
                }
            };
            let resize = h
                .get_str("meddr.vision.resize")
                .map_err(|e| key_err("meddr.vision.resize", e))?;
            if resize != "pillow_bicubic_u8" {
                return Err(RuntimeError::BadKey {
                    key: "meddr.vision.resize".into(),
                    reason: format!("{resize:?} is not supported (only \"pillow_bicubic_u8\")"),
                });
            }
            let tiles = u32_key(h, "meddr.vision.tiles")?;
            if tiles != 1 {
                return Err(RuntimeError::BadKey {
                    key: "meddr.vision.tiles".into(),
                    reason: format!("{tiles} is not supported (only one 448 tile)"),
                });
            }
            Some(VisionInfo {
                num_image_tokens: usize_key(h, "meddr.image.num_tokens")?,
                context_token_id: u32_key(h, "meddr.image.context_token_id")?,
                start_token_id: u32_key(h, "meddr.image.start_token_id")?,
                end_token_id: u32_key(h, "meddr.image.end_token_id")?,
                preprocessing: ImagePreprocessing {
                    image_size: u32_key(h, "clip.vision.image_size")?,
                    pad2square: h
                        .get_bool("meddr.vision.pad2square")
                        .map_err(|e| key_err("meddr.vision.pad2square", e))?,
                    pad_color,
                    mean: f32x3(h, "clip.vision.image_mean")?,
                    std: f32x3(h, "clip.vision.image_std")?,
                },
            })
        } else {
            None
        };
        let stop_token_ids = match h.get("meddr.chat.stop_token_ids") {
            Some(_) => h
                .get_u32_array("meddr.chat.stop_token_ids")
                .map_err(|e| key_err("meddr.chat.stop_token_ids", e))?,
            None => Vec::new(),
        };
        Ok(ModelInfo {
            name: h.get_str("general.name").ok().map(str::to_owned),
            format_version,
            prompt_format: PromptFormat::MedDr,
            context_length: usize_key(h, "llama.context_length")?,
            vocab_size,
            eos_token_id: u32_key(h, "meddr.chat.eos_token_id")?,
            stop_token_ids,
            system_message: h
                .get_str("meddr.chat.system_message")
                .map_err(|e| key_err("meddr.chat.system_message", e))?
                .to_owned(),
            chat_template: h
                .get_str("meddr.chat.template")
                .map_err(|e| key_err("meddr.chat.template", e))?
                .to_owned(),
            vision,
        })
    }

    /// A llama GGUF without MedDr metadata (llama.cpp's own files): text only, raw-text prompts, and the stop
    /// token is the tokenizer's EOS (plus `tokenizer.ggml.eot_token_id` in the template stop list).
    fn plain_llama(h: &GgufHeader) -> Result<ModelInfo> {
        let eos = u32_key(h, "tokenizer.ggml.eos_token_id")?;
        let mut stop_token_ids = vec![eos];
        if h.get("tokenizer.ggml.eot_token_id").is_some() {
            let eot = u32_key(h, "tokenizer.ggml.eot_token_id")?;
            if eot != eos {
                stop_token_ids.push(eot);
            }
        }
        let chat_template = h
            .get_str("tokenizer.chat_template")
            .unwrap_or_default()
            .to_owned();
        Ok(ModelInfo {
            name: h.get_str("general.name").ok().map(str::to_owned),
            format_version: 0,
            prompt_format: if chat_template.is_empty() {
                PromptFormat::Raw
            } else {
                PromptFormat::Template
            },
            context_length: usize_key(h, "llama.context_length")?,
            vocab_size: vocab_size(h)?,
            eos_token_id: eos,
            stop_token_ids,
            system_message: String::new(),
            chat_template,
            vision: None,
        })
    }

    /// The token ids generation stops on under `policy`.
    pub fn stop_ids(&self, policy: crate::StopPolicy) -> Vec<u32> {
        match policy {
            crate::StopPolicy::UpstreamEos => vec![self.eos_token_id],
            crate::StopPolicy::TemplateStopList => self.stop_token_ids.clone(),
            crate::StopPolicy::IgnoreEos => Vec::new(),
        }
    }
}

/// The tokenizer stored in the file, by `tokenizer.ggml.model`:
/// - `"llama"` (or no key; SentencePiece): `tokenizer.huggingface.json` when present (exact), otherwise rebuilt
///   from the `tokenizer.ggml.*` arrays (scores required);
/// - `"gpt2"` (byte-level BPE, as llama.cpp's `llama-vocab.cpp` reads it): tokens, merges, `tokenizer.ggml.pre`
///   (see [`meddr_tokenizer::BpePreTokenizer`]), optional token types and scores, BOS/EOS ids and flags.
///
/// Errors: a missing or ill-typed key ([`RuntimeError::MissingKey`] / [`RuntimeError::BadKey`]); any other
/// model or an unsupported pre type ([`meddr_tokenizer::TokenizerError::UnsupportedGguf`], naming key and
/// value); malformed arrays (a tokenizer error naming the key and the offending entry).
pub fn tokenizer_from_gguf_header(h: &GgufHeader) -> Result<MedDrTokenizer> {
    let opt_str = |key: &str| -> Result<Option<&str>> {
        match h.get(key) {
            Some(_) => h.get_str(key).map(Some).map_err(|e| key_err(key, e)),
            None => Ok(None),
        }
    };
    let kind = GgufVocabKind::from_gguf(opt_str("tokenizer.ggml.model")?)?;
    if kind == GgufVocabKind::ByteLevelBpe {
        return byte_level_tokenizer(h, opt_str("tokenizer.ggml.pre")?);
    }
    let hf_json = match h.get("tokenizer.huggingface.json") {
        Some(_) => Some(
            h.get_str("tokenizer.huggingface.json")
                .map_err(|e| key_err("tokenizer.huggingface.json", e))?
                .to_owned(),
        ),
        None => None,
    };
    let tokens: Vec<String> = h
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(|e| key_err("tokenizer.ggml.tokens", e))?
        .into_iter()
        .map(str::to_owned)
        .collect();
    let scores = h
        .get_f32_array("tokenizer.ggml.scores")
        .map_err(|e| key_err("tokenizer.ggml.scores", e))?;
    let types = h
        .get_i32_array("tokenizer.ggml.token_type")
        .map_err(|e| key_err("tokenizer.ggml.token_type", e))?;
    let opt_u32 = |key: &str| -> Result<Option<u32>> {
        match h.get(key) {
            Some(_) => u32_key(h, key).map(Some),
            None => Ok(None),
        }
    };
    let opt_bool = |key: &str, default: bool| -> Result<bool> {
        match h.get(key) {
            Some(_) => h.get_bool(key).map_err(|e| key_err(key, e)),
            None => Ok(default),
        }
    };
    let spec = TokenizerSpec::from_gguf_parts(
        tokens,
        scores,
        types,
        u32_key(h, "tokenizer.ggml.bos_token_id")?,
        u32_key(h, "tokenizer.ggml.eos_token_id")?,
        opt_u32("tokenizer.ggml.unknown_token_id")?.unwrap_or(0),
        opt_u32("tokenizer.ggml.padding_token_id")?,
        opt_bool("tokenizer.ggml.add_bos_token", true)?,
        opt_bool("tokenizer.ggml.add_eos_token", false)?,
        opt_bool("tokenizer.ggml.add_space_prefix", true)?,
        hf_json,
    )?;
    Ok(MedDrTokenizer::from_spec(&spec)?)
}

/// `tokenizer.ggml.model = "gpt2"`: the arrays and keys llama.cpp reads for byte-level BPE.
fn byte_level_tokenizer(h: &GgufHeader, pre: Option<&str>) -> Result<MedDrTokenizer> {
    // Refuse an unsupported pre type before reading the (large) arrays.
    meddr_tokenizer::BpePreTokenizer::from_gguf(pre)?;
    let str_array = |key: &str| -> Result<Vec<String>> {
        Ok(h.get_str_array(key)
            .map_err(|e| key_err(key, e))?
            .into_iter()
            .map(str::to_owned)
            .collect())
    };
    let opt_u32 = |key: &str| -> Result<Option<u32>> {
        match h.get(key) {
            Some(_) => u32_key(h, key).map(Some),
            None => Ok(None),
        }
    };
    let opt_bool = |key: &str| -> Result<Option<bool>> {
        match h.get(key) {
            Some(_) => h.get_bool(key).map(Some).map_err(|e| key_err(key, e)),
            None => Ok(None),
        }
    };
    let token_types = match h.get("tokenizer.ggml.token_type") {
        Some(_) => Some(
            h.get_i32_array("tokenizer.ggml.token_type")
                .map_err(|e| key_err("tokenizer.ggml.token_type", e))?,
        ),
        None => None,
    };
    let scores = match h.get("tokenizer.ggml.scores") {
        Some(_) => Some(
            h.get_f32_array("tokenizer.ggml.scores")
                .map_err(|e| key_err("tokenizer.ggml.scores", e))?,
        ),
        None => None,
    };
    let spec = TokenizerSpec::from_gguf_byte_level(GgufBpeParts {
        tokens: str_array("tokenizer.ggml.tokens")?,
        token_types,
        scores,
        merges: str_array("tokenizer.ggml.merges")?,
        pre: pre.map(str::to_owned),
        bos_id: opt_u32("tokenizer.ggml.bos_token_id")?,
        eos_id: opt_u32("tokenizer.ggml.eos_token_id")?,
        unk_id: opt_u32("tokenizer.ggml.unknown_token_id")?,
        pad_id: opt_u32("tokenizer.ggml.padding_token_id")?,
        add_bos: opt_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: opt_bool("tokenizer.ggml.add_eos_token")?,
    })?;
    Ok(MedDrTokenizer::from_spec(&spec)?)
}
