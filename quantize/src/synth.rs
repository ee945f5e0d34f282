//! Synthetic checkpoints in the exact upstream layout (PEFT-wrapped LLM names, bf16 shards with an index,
//! `config.json`, tokenizer files), at any scale up to MedDr's full 40B shape, streamed to disk. They feed tests,
//! the README's main job and benchmarks without downloading MedDr.

use crate::error::{io_err, QuantizeError, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde_json::{json, Value as Json};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const CONFIG_TEMPLATE: &str = include_str!("../assets/config-template.json");
/// The built-in tokenizer: the 2009-token SentencePiece model of the reference fixtures (same special ids and
/// structure as MedDr's Yi tokenizer, much smaller vocabulary).
const TOKENIZER_FILES: [(&str, &[u8]); 4] = [
    (
        "tokenizer.model",
        include_bytes!("../assets/tokenizer/tokenizer.model"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../assets/tokenizer/tokenizer_config.json"),
    ),
    (
        "added_tokens.json",
        include_bytes!("../assets/tokenizer/added_tokens.json"),
    ),
    (
        "special_tokens_map.json",
        include_bytes!("../assets/tokenizer/special_tokens_map.json"),
    ),
];
pub const BUILTIN_VOCAB: usize = 2009;

#[derive(Debug, Clone, PartialEq)]
pub struct SynthShape {
    pub vit_hidden: usize,
    pub vit_heads: usize,
    pub vit_mlp: usize,
    pub vit_layers: usize,
    pub llm_hidden: usize,
    pub llm_heads: usize,
    pub llm_kv_heads: usize,
    pub llm_ffn: usize,
    pub llm_layers: usize,
    pub vocab: usize,
}

impl SynthShape {
    /// The reference fixture's shapes (2.7 M parameters).
    pub fn dev() -> Self {
        SynthShape {
            vit_hidden: 96,
            vit_heads: 6,
            vit_mlp: 384,
            vit_layers: 3,
            llm_hidden: 192,
            llm_heads: 6,
            llm_kv_heads: 2,
            llm_ffn: 512,
            llm_layers: 3,
            vocab: BUILTIN_VOCAB,
        }
    }
    /// MedDr's real shapes (InternViT-6B + Yi-34B); the vocabulary is the built-in tokenizer's.
    pub fn full() -> Self {
        SynthShape {
            vit_hidden: 3200,
            vit_heads: 25,
            vit_mlp: 12800,
            vit_layers: 45,
            llm_hidden: 7168,
            llm_heads: 56,
            llm_kv_heads: 8,
            llm_ffn: 20480,
            llm_layers: 60,
            vocab: BUILTIN_VOCAB,
        }
    }
    /// MedDr's exact shape: [`SynthShape::full`] with Yi-34B's 64,000-row vocabulary (the built-in tokenizer
    /// padded with `[PAD{id}]` tokens, as the quantizer pads any checkpoint whose embedding has extra rows).
    pub fn meddr_40b() -> Self {
        SynthShape {
            vocab: 64_000,
            ..Self::full()
        }
    }
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "dev" => Ok(Self::dev()),
            "full" => Ok(Self::full()),
            "40b" => Ok(Self::meddr_40b()),
            other => Err(QuantizeError::Usage(format!(
                "unknown preset {other:?}: expected dev, full or 40b"
            ))),
        }
    }
    pub fn tensors(&self, lora_rank: usize) -> Vec<(String, Vec<usize>, Init)> {
        let (c, m, h, f) = (self.vit_hidden, self.vit_mlp, self.llm_hidden, self.llm_ffn);
        let hd = h / self.llm_heads;
        let kv = self.llm_kv_heads * hd;
        let mut t: Vec<(String, Vec<usize>, Init)> = Vec::new();
        let e = "vision_model.embeddings.";
        t.push((
            format!("{e}class_embedding"),
            vec![1, 1, c],
            Init::Normal(1.0),
        ));
        t.push((
            format!("{e}patch_embedding.weight"),
            vec![c, 3, 14, 14],
            Init::Linear(588),
        ));
        t.push((
            format!("{e}patch_embedding.bias"),
            vec![c],
            Init::Normal(0.08),
        ));
        t.push((
            format!("{e}position_embedding"),
            vec![1, 1025, c],
            Init::Normal(0.5),
        ));
        for i in 0..self.vit_layers {
            let p = format!("vision_model.encoder.layers.{i}.");
            t.push((
                format!("{p}attn.qkv.weight"),
                vec![3 * c, c],
                Init::Linear(c),
            ));
            t.push((format!("{p}attn.q_norm.weight"), vec![c], Init::Gain));
            t.push((format!("{p}attn.k_norm.weight"), vec![c], Init::Gain));
            t.push((format!("{p}attn.proj.weight"), vec![c, c], Init::Linear(c)));
            t.push((format!("{p}attn.proj.bias"), vec![c], Init::Normal(0.08)));
            t.push((format!("{p}mlp.fc1.weight"), vec![m, c], Init::Linear(c)));
            t.push((format!("{p}mlp.fc1.bias"), vec![m], Init::Normal(0.08)));
            t.push((format!("{p}mlp.fc2.weight"), vec![c, m], Init::Linear(m)));
            t.push((format!("{p}mlp.fc2.bias"), vec![c], Init::Normal(0.08)));
            t.push((format!("{p}norm1.weight"), vec![c], Init::Gain));
            t.push((format!("{p}norm2.weight"), vec![c], Init::Gain));
            t.push((format!("{p}ls1"), vec![c], Init::Scale));
            t.push((format!("{p}ls2"), vec![c], Init::Scale));
        }
        t.push(("mlp1.0.weight".into(), vec![4 * c], Init::Gain));
        t.push(("mlp1.0.bias".into(), vec![4 * c], Init::Normal(0.08)));
        t.push(("mlp1.1.weight".into(), vec![h, 4 * c], Init::Linear(4 * c)));
        t.push(("mlp1.1.bias".into(), vec![h], Init::Normal(0.08)));
        t.push(("mlp1.3.weight".into(), vec![h, h], Init::Linear(h)));
        t.push(("mlp1.3.bias".into(), vec![h], Init::Normal(0.08)));
        let lm = if lora_rank > 0 {
            "language_model.base_model.model."
        } else {
            "language_model."
        };
        t.push((
            format!("{lm}model.embed_tokens.weight"),
            vec![self.vocab, h],
            Init::Normal(1.0),
        ));
        for i in 0..self.llm_layers {
            let p = format!("{lm}model.layers.{i}.");
            t.push((format!("{p}input_layernorm.weight"), vec![h], Init::Gain));
            t.push((
                format!("{p}post_attention_layernorm.weight"),
                vec![h],
                Init::Gain,
            ));
            for (module, out, inp) in [
                ("self_attn.q_proj", h, h),
                ("self_attn.k_proj", kv, h),
                ("self_attn.v_proj", kv, h),
                ("self_attn.o_proj", h, h),
                ("mlp.gate_proj", f, h),
                ("mlp.up_proj", f, h),
                ("mlp.down_proj", h, f),
            ] {
                if lora_rank > 0 {
                    t.push((
                        format!("{p}{module}.base_layer.weight"),
                        vec![out, inp],
                        Init::Linear(inp),
                    ));
                    t.push((
                        format!("{p}{module}.lora_A.default.weight"),
                        vec![lora_rank, inp],
                        Init::Linear(inp),
                    ));
                    t.push((
                        format!("{p}{module}.lora_B.default.weight"),
                        vec![out, lora_rank],
                        Init::Normal(0.02),
                    ));
                } else {
                    t.push((
                        format!("{p}{module}.weight"),
                        vec![out, inp],
                        Init::Linear(inp),
                    ));
                }
            }
        }
        t.push((format!("{lm}model.norm.weight"), vec![h], Init::Gain));
        t.push((
            format!("{lm}lm_head.weight"),
            vec![self.vocab, h],
            Init::Linear(h / 16),
        ));
        t
    }
}

/// How values are drawn (uniform with the given standard deviation: cheap, and the quantizer does not care).
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Normal(f32),
    /// std 1/√fan_in
    Linear(usize),
    /// norm gains around 1
    Gain,
    /// layer scales around 0.5
    Scale,
}

impl Init {
    fn params(self) -> (f32, f32) {
        match self {
            Init::Normal(s) => (0.0, s),
            Init::Linear(fan_in) => (0.0, 1.0 / (fan_in.max(1) as f32).sqrt()),
            Init::Gain => (1.0, 0.2),
            Init::Scale => (0.5, 0.25),
        }
    }
}

pub struct SynthOptions {
    pub shape: SynthShape,
    pub lora_rank: usize,
    pub shard_bytes: u64,
    pub seed: u64,
    /// Tokenizer directory to copy; None = the built-in one.
    pub tokenizer_dir: Option<PathBuf>,
    pub force: bool,
    /// Headers only: each shard gets its declared length with no bytes written (a hole that reads as
    /// zeros), for [`crate::write_layout`], which never reads weights. The full 40B shape then takes a few
    /// MB of disk instead of 80 GB.
    pub layout_only: bool,
}

pub fn config_json(shape: &SynthShape, lora_rank: usize) -> Result<Json> {
    let mut cfg: Json = serde_json::from_str(CONFIG_TEMPLATE)
        .map_err(|e| QuantizeError::Config(format!("built-in template: {e}")))?;
    let v = &mut cfg["vision_config"];
    v["hidden_size"] = json!(shape.vit_hidden);
    v["num_attention_heads"] = json!(shape.vit_heads);
    v["intermediate_size"] = json!(shape.vit_mlp);
    v["num_hidden_layers"] = json!(shape.vit_layers);
    let l = &mut cfg["llm_config"];
    l["hidden_size"] = json!(shape.llm_hidden);
    l["num_attention_heads"] = json!(shape.llm_heads);
    l["num_key_value_heads"] = json!(shape.llm_kv_heads);
    l["intermediate_size"] = json!(shape.llm_ffn);
    l["num_hidden_layers"] = json!(shape.llm_layers);
    l["vocab_size"] = json!(shape.vocab);
    cfg["use_llm_lora"] = json!(lora_rank);
    Ok(cfg)
}

/// Writes the checkpoint into `out` (a new directory). The files are written into a temporary sibling directory
/// renamed at the end, so an interrupted run leaves no half-written checkpoint behind.
pub fn write_checkpoint(
    out: &Path,
    opts: &SynthOptions,
    mut on_bytes: impl FnMut(u64),
) -> Result<u64> {
    let s = &opts.shape;
    if s.vit_hidden % s.vit_heads != 0
        || s.llm_hidden % s.llm_heads != 0
        || s.llm_heads % s.llm_kv_heads.max(1) != 0
    {
        return Err(QuantizeError::Usage(format!("inconsistent shape: {s:?}")));
    }
    if out.exists() {
        if !opts.force {
            return Err(QuantizeError::OutputExists {
                path: out.to_path_buf(),
            });
        }
        std::fs::remove_dir_all(out).map_err(io_err(out))?;
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        out.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = write_into(&tmp, opts, &mut on_bytes);
    match result {
        Ok(total) => {
            std::fs::rename(&tmp, out).map_err(io_err(out))?;
            Ok(total)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn write_into(dir: &Path, opts: &SynthOptions, on_bytes: &mut impl FnMut(u64)) -> Result<u64> {
    let tensors = opts.shape.tensors(opts.lora_rank);
    // Greedy assignment to shards in order, like save_pretrained's max_shard_size.
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut cur = 0u64;
    for (i, (_, shape, _)) in tensors.iter().enumerate() {
        let bytes = shape.iter().product::<usize>() as u64 * 2;
        if cur > 0 && cur + bytes > opts.shard_bytes {
            shards.push(Vec::new());
            cur = 0;
        }
        shards.last_mut().map(|s| s.push(i));
        cur += bytes;
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    let mut total = 0u64;
    for (si, members) in shards.iter().enumerate() {
        let fname = format!("model-{:05}-of-{:05}.safetensors", si + 1, n);
        let path = dir.join(&fname);
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut off = 0u64;
        for &i in members {
            let (name, shape, _) = &tensors[i];
            let bytes = shape.iter().product::<usize>() as u64 * 2;
            header.insert(
                name.clone(),
                json!({"dtype": "BF16", "shape": shape, "data_offsets": [off, off + bytes]}),
            );
            off += bytes;
            weight_map.insert(name.clone(), json!(fname));
        }
        let mut hbytes = serde_json::to_vec(&Json::Object(header))
            .map_err(|e| QuantizeError::Config(e.to_string()))?;
        while hbytes.len() % 8 != 0 {
            hbytes.push(b' ');
        }
        let file = std::fs::File::create(&path).map_err(io_err(&path))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        w.write_all(&(hbytes.len() as u64).to_le_bytes())
            .map_err(io_err(&path))?;
        w.write_all(&hbytes).map_err(io_err(&path))?;
        if opts.layout_only {
            w.flush().map_err(io_err(&path))?;
            let len = 8 + hbytes.len() as u64 + off;
            w.get_ref().set_len(len).map_err(io_err(&path))?;
            total += off;
            continue;
        }
        for &i in members {
            let (_, shape, init) = &tensors[i];
            let n_el = shape.iter().product::<usize>();
            write_random_bf16(
                &mut w,
                n_el,
                *init,
                opts.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                &path,
                on_bytes,
            )?;
            total += n_el as u64 * 2;
        }
        w.flush().map_err(io_err(&path))?;
        w.get_ref().sync_all().map_err(io_err(&path))?;
    }
    let total_size: u64 = tensors
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>() as u64 * 2)
        .sum();
    let index = json!({"metadata": {"total_size": total_size}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)?;
    write_json(
        &dir.join("config.json"),
        &config_json(&opts.shape, opts.lora_rank)?,
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"_from_model_config": true, "transformers_version": "4.37.2"}),
    )?;
    match &opts.tokenizer_dir {
        None => {
            for (name, bytes) in TOKENIZER_FILES {
                let p = dir.join(name);
                std::fs::write(&p, bytes).map_err(io_err(&p))?;
            }
        }
        Some(src) => {
            for name in [
                "tokenizer.model",
                "tokenizer_config.json",
                "added_tokens.json",
                "special_tokens_map.json",
                "tokenizer.json",
            ] {
                let from = src.join(name);
                if from.exists() {
                    std::fs::copy(&from, dir.join(name)).map_err(io_err(&from))?;
                }
            }
        }
    }
    Ok(total)
}

fn write_json(path: &Path, v: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| QuantizeError::Config(e.to_string()))?;
    std::fs::write(path, text).map_err(io_err(path))
}

/// Generates in parallel 8 MiB pieces, each from its own seeded generator, so output is deterministic.
fn write_random_bf16(
    w: &mut impl Write,
    n: usize,
    init: Init,
    seed: u64,
    path: &Path,
    on_bytes: &mut impl FnMut(u64),
) -> Result<()> {
    const PIECE: usize = 1 << 20;
    const BATCH: usize = 16;
    let (mean, std) = init.params();
    let a = std * 3f32.sqrt();
    let pieces = n.div_ceil(PIECE);
    let mut buf: Vec<u8> = Vec::new();
    let mut p0 = 0;
    while p0 < pieces {
        let p1 = (p0 + BATCH).min(pieces);
        let len = (p1 * PIECE).min(n) - p0 * PIECE;
        buf.resize(len * 2, 0);
        buf.par_chunks_mut(PIECE * 2)
            .enumerate()
            .for_each(|(k, out)| {
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_add((p0 + k) as u64));
                for b in out.chunks_exact_mut(2) {
                    let x = mean + a * (rng.random::<f32>() * 2.0 - 1.0);
                    let bits = (half::bf16::from_f32(x)).to_bits();
                    b.copy_from_slice(&bits.to_le_bytes());
                }
            });
        w.write_all(&buf).map_err(io_err(path))?;
        on_bytes(buf.len() as u64);
        p0 = p1;
    }
    Ok(())
}
