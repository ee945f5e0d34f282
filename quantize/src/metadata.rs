//! GGUF metadata for a MedDr file: every key is documented in `docs/gguf-layout.md`.

use crate::checkpoint::CheckpointConfig;
use crate::plan::Plan;
use crate::recipe::FileType;
use meddr_gguf::{Array, Value};
use meddr_tokenizer::TokenizerSpec;

/// MedDr's system message (upstream `conversation.py`, Hermes-2 template as MedDr sets it).
pub const SYSTEM_MESSAGE: &str = "Answer the questions.";
/// The Hermes-2 template's stop list; upstream generation never uses it (it stops on `eos_token_id` only).
pub const HERMES2_STOP_TOKENS: [&str; 4] =
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|im_sep|>"];

/// Jinja form of upstream's Hermes-2 prompt with MedDr's system message. Note: no newline after `<|im_end|>`.
pub fn chat_template() -> String {
    format!(
        "{{% for message in messages %}}{{% if loop.first and message['role'] != 'system' %}}<|im_start|>system\n{SYSTEM_MESSAGE}<|im_end|>{{% endif %}}<|im_start|>{{{{ message['role'] }}}}\n{{{{ message['content'] }}}}<|im_end|>{{% endfor %}}{{% if add_generation_prompt %}}<|im_start|>assistant\n{{% endif %}}"
    )
}

/// Written to both files of a pair: a hash of everything the run writes but the weights' values (both files'
/// metadata and tensor directories) and of the checkpoint files' sizes and modification times. The two
/// files are renamed into place one after the other, so a run killed between the renames leaves a new file
/// beside an old one; their ids differ and the pair is refused when opened (`meddr_gguf::merge_mmproj`),
/// instead of a vision tower from one run driving a language model from another. Two runs on the same
/// inputs write the same id (and the same bytes).
pub const SPLIT_ID_KEY: &str = "meddr.split.id";

/// Keys that describe the vision tower and projector: they go to the mmproj file only.
fn is_vision_key(k: &str) -> bool {
    k.starts_with("clip.") || k.starts_with("meddr.vision.") || k.starts_with("meddr.projector.")
}

/// Keys both files carry: each file names itself, and a shared key that disagrees when the pair is opened
/// means the two files are not one model (`meddr_gguf::merge_mmproj`).
fn is_shared_key(k: &str) -> bool {
    matches!(
        k,
        "general.name"
            | "general.alignment"
            | "meddr.format_version"
            | "meddr.image.num_tokens"
            | meddr_gguf::LAYOUT_ONLY_KEY
            | SPLIT_ID_KEY
    )
}

/// Metadata for llama.cpp's two-file layout (`docs/gguf-layout.md`): the language model (`general.type
/// model`, everything llama.cpp's text loader reads, plus MedDr's prompt keys) and the mmproj (`general.
/// architecture clip`, `general.type mmproj`, the `clip.*` keys llama.cpp's `clip.cpp` reads and ours).
/// `meddr.quantize.fallbacks` is split by tensor: `v.*`/`mm.*` entries to the mmproj.
pub fn split(all: Vec<(String, Value)>) -> (Vec<(String, Value)>, Vec<(String, Value)>) {
    let mut text = Vec::new();
    let mut proj = vec![
        (
            "general.architecture".to_string(),
            s(meddr_gguf::MMPROJ_ARCHITECTURE),
        ),
        ("general.type".to_string(), s("mmproj")),
    ];
    for (k, v) in all {
        if k == "general.architecture" {
            text.push((k, v));
            text.push(("general.type".to_string(), s("model")));
        } else if k == "meddr.quantize.fallbacks" {
            let Value::Array(Array::String(list)) = v else {
                text.push((k, v));
                continue;
            };
            let (vision, llm): (Vec<String>, Vec<String>) = list
                .into_iter()
                .partition(|e| meddr_gguf::is_vision_tensor(e));
            text.push((k.clone(), Value::Array(Array::String(llm))));
            proj.push((k, Value::Array(Array::String(vision))));
        } else if is_vision_key(&k) {
            proj.push((k, v));
        } else if is_shared_key(&k) {
            proj.push((k.clone(), v.clone()));
            text.push((k, v));
        } else {
            text.push((k, v));
        }
    }
    (text, proj)
}

pub struct MetadataInput<'a> {
    pub name: &'a str,
    pub cfg: &'a CheckpointConfig,
    pub plan: &'a Plan,
    pub ftype: FileType,
    pub tokenizer: &'a TokenizerSpec,
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}
fn u(v: usize) -> Value {
    Value::U32(v as u32)
}

pub fn build(m: &MetadataInput) -> Result<Vec<(String, Value)>, String> {
    let c = m.cfg;
    let l = &c.llm;
    let v = &c.vision;
    let tok = m.tokenizer;
    let id_of = |t: &str| -> Result<u32, String> {
        tok.tokens
            .iter()
            .position(|x| x == t)
            .map(|i| i as u32)
            .ok_or_else(|| format!("tokenizer has no {t:?} token, which MedDr's prompt needs"))
    };
    let stop_ids: Vec<u32> = HERMES2_STOP_TOKENS
        .iter()
        .filter_map(|t| id_of(t).ok())
        .collect();
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s("llama")),
        ("general.name".into(), s(m.name)),
        ("general.alignment".into(), Value::U32(32)),
        (
            "general.file_type".into(),
            Value::U32(m.ftype.llama_ftype()),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        ("llama.context_length".into(), u(l.max_positions)),
        ("llama.embedding_length".into(), u(l.hidden)),
        ("llama.block_count".into(), u(l.layers)),
        ("llama.feed_forward_length".into(), u(l.ffn)),
        ("llama.attention.head_count".into(), u(l.heads)),
        ("llama.attention.head_count_kv".into(), u(l.kv_heads)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(l.eps),
        ),
        ("llama.rope.freq_base".into(), Value::F32(l.rope_theta)),
        ("llama.rope.dimension_count".into(), u(l.head_dim())),
        ("llama.vocab_size".into(), u(m.plan.vocab)),
        ("clip.has_vision_encoder".into(), Value::Bool(true)),
        ("clip.projector_type".into(), s("internvl")),
        ("clip.vision.image_size".into(), u(c.force_image_size)),
        ("clip.vision.patch_size".into(), u(v.patch_size)),
        ("clip.vision.embedding_length".into(), u(v.hidden)),
        ("clip.vision.feed_forward_length".into(), u(v.mlp)),
        (
            "clip.vision.block_count".into(),
            u(m.plan.vision_layers_kept),
        ),
        ("clip.vision.attention.head_count".into(), u(v.heads)),
        (
            "clip.vision.attention.layer_norm_epsilon".into(),
            Value::F32(v.eps),
        ),
        ("clip.vision.projection_dim".into(), u(l.hidden)),
        (
            "clip.vision.image_mean".into(),
            Value::Array(Array::F32(vec![0.485, 0.456, 0.406])),
        ),
        (
            "clip.vision.image_std".into(),
            Value::Array(Array::F32(vec![0.229, 0.224, 0.225])),
        ),
        ("clip.use_gelu".into(), Value::Bool(true)),
        ("meddr.format_version".into(), Value::U32(1)),
        // Every fallback, so a file says what it really holds (llama-quantize only prints them).
        (
            "meddr.quantize.fallbacks".into(),
            Value::Array(meddr_gguf::Array::String(
                m.plan
                    .fallbacks()
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {} -> {} (row of {})",
                            t.name,
                            t.wanted.name(),
                            t.ty.name(),
                            t.row_len
                        )
                    })
                    .collect(),
            )),
        ),
        (
            "meddr.vision.select_layer".into(),
            Value::I32(c.select_layer),
        ),
        ("meddr.vision.norm_type".into(), s("rms_norm")),
        (
            "meddr.vision.qk_normalization".into(),
            Value::Bool(v.qk_normalization),
        ),
        ("meddr.vision.qkv_bias".into(), Value::Bool(v.qkv_bias)),
        ("meddr.vision.layer_scale".into(), Value::Bool(true)),
        ("meddr.vision.pixel_shuffle_version".into(), Value::U32(1)),
        (
            "meddr.vision.downsample_ratio".into(),
            Value::F32(c.downsample_ratio),
        ),
        ("meddr.vision.tiles".into(), Value::U32(1)),
        ("meddr.vision.pad2square".into(), Value::Bool(c.pad2square)),
        (
            "meddr.vision.pad_color".into(),
            Value::Array(Array::U32(vec![123, 116, 103])),
        ),
        ("meddr.vision.resize".into(), s("pillow_bicubic_u8")),
        (
            "meddr.projector.layer_norm_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("meddr.image.num_tokens".into(), u(c.num_image_tokens())),
        (
            "meddr.image.context_token_id".into(),
            Value::U32(id_of("<IMG_CONTEXT>")?),
        ),
        (
            "meddr.image.start_token_id".into(),
            Value::U32(id_of("<img>")?),
        ),
        (
            "meddr.image.end_token_id".into(),
            Value::U32(id_of("</img>")?),
        ),
        ("meddr.chat.template".into(), s("Hermes-2")),
        ("meddr.chat.system_message".into(), s(SYSTEM_MESSAGE)),
        ("meddr.chat.eos_token_id".into(), Value::U32(l.eos)),
        (
            "meddr.chat.stop_token_ids".into(),
            Value::Array(Array::U32(stop_ids)),
        ),
        (
            "meddr.lora.merged".into(),
            Value::Bool(m.plan.lora.is_some()),
        ),
    ];
    if let Some(lora) = &m.plan.lora {
        md.push(("meddr.lora.rank".into(), u(lora.rank)));
        md.push(("meddr.lora.alpha".into(), Value::F32(lora.alpha)));
    }
    md.extend([
        ("tokenizer.ggml.model".into(), s("llama")),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tok.tokens.clone())),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(Array::F32(tok.scores.clone())),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(tok.token_types.clone())),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(tok.bos_id)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(tok.eos_id)),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            Value::U32(tok.unk_id),
        ),
    ]);
    if let Some(pad) = tok.pad_id {
        md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(pad)));
    }
    md.extend([
        (
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(tok.add_bos),
        ),
        (
            "tokenizer.ggml.add_eos_token".into(),
            Value::Bool(tok.add_eos),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            Value::Bool(tok.add_space_prefix),
        ),
        ("tokenizer.chat_template".into(), s(&chat_template())),
        ("tokenizer.huggingface.json".into(), s(&tok.hf_json)),
    ]);
    Ok(md)
}
