//! Maps the upstream tensors to the GGUF layout of `docs/gguf-layout.md`: names, shapes, LoRA pairing,
//! q/k row permutation, dropped ViT layers and the per-tensor quantization type. Everything is checked against
//! `config.json` before a single weight byte is read.

use crate::checkpoint::{CheckpointConfig, ShardSet, SourceTensor};
use crate::error::{QuantizeError, Result};
use crate::recipe::{self, FileType, Role};
use meddr_gguf::GgmlType;
use std::collections::{BTreeMap, BTreeSet};

/// How output rows relate to source rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    Same,
    /// llama.cpp's q/k permutation: within each head of `head_dim` rows, output row `2i + j` is source row
    /// `j·head_dim/2 + i`, so that RoPE on adjacent pairs equals HF's rotate-half.
    RopePairs {
        head_dim: usize,
    },
}

/// Where an output tensor's values come from.
#[derive(Debug, Clone)]
pub enum Source {
    Plain(String),
    /// `base + scale · B·A` (PEFT LoRA), merged in f32.
    Lora {
        base: String,
        a: String,
        b: String,
        scale: f32,
    },
}

#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    pub source: Source,
    /// Rows × row_len view of the source (row_len contiguous).
    pub rows: usize,
    pub row_len: usize,
    /// GGUF dims, ggml order (dims[0] = row_len).
    pub dims: Vec<u64>,
    pub order: RowOrder,
    pub ty: GgmlType,
    /// What the recipe asked for; differs from `ty` when the row length forced a fallback.
    pub wanted: GgmlType,
}

#[derive(Debug, Clone)]
pub struct LoraInfo {
    pub rank: usize,
    pub alpha: f32,
}

pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    pub lora: Option<LoraInfo>,
    pub vocab: usize,
    pub vision_layers_kept: usize,
    /// Bytes of source data the plan reads (dropped ViT layers excluded).
    pub input_bytes: u64,
}

impl Plan {
    /// Tensors whose recipe type did not fit their rows and fell back (k-quants need rows of a multiple of
    /// 256 values), in file order.
    pub fn fallbacks(&self) -> Vec<&PlannedTensor> {
        self.tensors.iter().filter(|t| t.ty != t.wanted).collect()
    }

    /// The fallbacks as llama-quantize reports them, grouped: `None` when there are none. Counts language-model
    /// matrices (`token_embd`, `output`, `blk.*`) and their share of the language model's matrix parameters.
    pub fn fallback_report(&self) -> Option<String> {
        let fb = self.fallbacks();
        if fb.is_empty() {
            return None;
        }
        let llm_matrix = |t: &PlannedTensor| {
            t.dims.len() == 2
                && (t.name.starts_with("blk.")
                    || t.name == "token_embd.weight"
                    || t.name == "output.weight")
        };
        let elems = |t: &PlannedTensor| (t.rows as u64) * (t.row_len as u64);
        let all: Vec<&PlannedTensor> = self.tensors.iter().filter(|t| llm_matrix(t)).collect();
        let fell: Vec<&PlannedTensor> = fb.iter().copied().filter(|t| llm_matrix(t)).collect();
        let share = fell.iter().map(|t| elems(t)).sum::<u64>() as f64
            / all.iter().map(|t| elems(t)).sum::<u64>().max(1) as f64;
        let mut groups: std::collections::BTreeMap<
            (String, String),
            (usize, std::collections::BTreeSet<usize>),
        > = Default::default();
        for t in &fb {
            let g = groups
                .entry((t.wanted.name().to_string(), t.ty.name().to_string()))
                .or_default();
            g.0 += 1;
            g.1.insert(t.row_len);
        }
        let mut s = format!(
            "{} of {} tensors fell back to another type because their rows are not a multiple of the type's block \
             ({} of {} language-model matrices, {:.0} % of their parameters):",
            fb.len(),
            self.tensors.len(),
            fell.len(),
            all.len(),
            100.0 * share
        );
        for ((w, g), (n, rows)) in groups {
            let rows: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
            s.push_str(&format!(
                "\n  {w} -> {g}: {n} tensors (rows of {})",
                rows.join(", ")
            ));
        }
        Some(s)
    }
}

const LLM_WRAPPED: &str = "language_model.base_model.model.";
const LLM_PLAIN: &str = "language_model.";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum LoraPart {
    Weight,
    Base,
    A(String),
    B(String),
}

/// Splits an LLM linear's name into its module path and which LoRA part it is.
fn split_lora(rest: &str) -> Option<(String, LoraPart)> {
    if let Some(m) = rest.strip_suffix(".base_layer.weight") {
        return Some((m.to_string(), LoraPart::Base));
    }
    for (tag, is_a) in [(".lora_A.", true), (".lora_B.", false)] {
        if let Some(pos) = rest.find(tag) {
            let module = &rest[..pos];
            let adapter = rest[pos + tag.len()..].strip_suffix(".weight")?;
            let part = if is_a {
                LoraPart::A(adapter.to_string())
            } else {
                LoraPart::B(adapter.to_string())
            };
            return Some((module.to_string(), part));
        }
    }
    rest.strip_suffix(".weight")
        .map(|m| (m.to_string(), LoraPart::Weight))
}

fn bad(name: &str, reason: String) -> QuantizeError {
    QuantizeError::Tensor {
        name: name.to_string(),
        reason,
    }
}

pub fn build(
    cfg: &CheckpointConfig,
    shards: &ShardSet,
    ftype: FileType,
    vision_type: GgmlType,
) -> Result<Plan> {
    let l = &cfg.llm;
    let v = &cfg.vision;
    let hd = l.head_dim();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut skipped_bytes = 0u64;

    // ---- LLM: group PEFT parts per module ----
    let mut modules: BTreeMap<String, BTreeMap<LoraPart, String>> = BTreeMap::new();
    let mut wrapped = None;
    for name in shards.tensors.keys() {
        let (rest, is_wrapped) = if let Some(r) = name.strip_prefix(LLM_WRAPPED) {
            (r, true)
        } else if let Some(r) = name.strip_prefix(LLM_PLAIN) {
            (r, false)
        } else {
            continue;
        };
        match wrapped {
            None => wrapped = Some(is_wrapped),
            Some(w) if w != is_wrapped => {
                return Err(QuantizeError::Lora(format!(
                    "{name} mixes PEFT-wrapped ({LLM_WRAPPED}) and plain ({LLM_PLAIN}) language-model names"
                )))
            }
            _ => {}
        }
        let (module, part) =
            split_lora(rest).ok_or_else(|| bad(name, "unknown language-model tensor".into()))?;
        if let Some(prev) = modules
            .entry(module.clone())
            .or_default()
            .insert(part.clone(), name.clone())
        {
            return Err(bad(name, format!("clashes with {prev}")));
        }
    }

    let expected_rank = cfg.llm_lora_rank;
    let mut lora_seen: Option<usize> = None;
    let mut any_lora = false;
    // (module path without the wrapper) → resolved source
    let mut llm_sources: BTreeMap<String, (Source, String)> = BTreeMap::new();
    for (module, parts) in &modules {
        let has = |p: &LoraPart| parts.contains_key(p);
        let a: Vec<_> = parts
            .iter()
            .filter(|(k, _)| matches!(k, LoraPart::A(_)))
            .collect();
        let b: Vec<_> = parts
            .iter()
            .filter(|(k, _)| matches!(k, LoraPart::B(_)))
            .collect();
        if a.len() > 1 || b.len() > 1 {
            return Err(QuantizeError::Lora(format!(
                "{module}: more than one adapter ({} A, {} B); merge to one first",
                a.len(),
                b.len()
            )));
        }
        let base = parts.get(&LoraPart::Base);
        let plain = parts.get(&LoraPart::Weight);
        match (base, plain) {
            (Some(_), Some(p)) => {
                return Err(QuantizeError::Lora(format!(
                    "{module}: both base_layer.weight and {p}"
                )))
            }
            (None, None) => {
                return Err(QuantizeError::Lora(format!(
                    "{module}: LoRA tensors ({}) without a base_layer.weight",
                    parts.values().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
            _ => {}
        }
        let base_name = base.or(plain).cloned().unwrap_or_default();
        let src = match (a.first(), b.first()) {
            (None, None) => {
                if base.is_some() {
                    return Err(QuantizeError::Lora(format!(
                        "{module}: base_layer.weight without lora_A/lora_B"
                    )));
                }
                Source::Plain(base_name.clone())
            }
            (Some((_, an)), None) => {
                return Err(QuantizeError::Lora(format!("{an} has no matching lora_B")))
            }
            (None, Some((_, bn))) => {
                return Err(QuantizeError::Lora(format!("{bn} has no matching lora_A")))
            }
            (Some((ak, an)), Some((bk, bn))) => {
                if let (LoraPart::A(x), LoraPart::B(y)) = (ak, bk) {
                    if x != y {
                        return Err(QuantizeError::Lora(format!(
                            "{module}: adapter names differ: {x} vs {y}"
                        )));
                    }
                }
                if !has(&LoraPart::Base) {
                    return Err(QuantizeError::Lora(format!(
                        "{module}: LoRA on a plain weight (expected base_layer.weight)"
                    )));
                }
                let ta = &shards.tensors[*an];
                let tb = &shards.tensors[*bn];
                let tw = &shards.tensors[&base_name];
                if ta.shape.len() != 2 || tb.shape.len() != 2 || tw.shape.len() != 2 {
                    return Err(QuantizeError::Lora(format!(
                        "{module}: LoRA and base must be 2-D"
                    )));
                }
                let r = ta.shape[0];
                if tb.shape[1] != r || ta.shape[1] != tw.shape[1] || tb.shape[0] != tw.shape[0] {
                    return Err(QuantizeError::Lora(format!(
                        "{module}: shapes do not compose: base {:?}, A {:?}, B {:?}",
                        tw.shape, ta.shape, tb.shape
                    )));
                }
                if let Some(prev) = lora_seen {
                    if prev != r {
                        return Err(QuantizeError::Lora(format!(
                            "{module}: rank {r} differs from rank {prev} elsewhere"
                        )));
                    }
                }
                lora_seen = Some(r);
                if r != expected_rank {
                    return Err(QuantizeError::Lora(format!(
                        "{module}: rank {r} but config.json use_llm_lora = {expected_rank}"
                    )));
                }
                any_lora = true;
                // Upstream wraps with lora_alpha = 2r, so alpha / r = 2.
                Source::Lora {
                    base: base_name.clone(),
                    a: (*an).clone(),
                    b: (*bn).clone(),
                    scale: 2.0,
                }
            }
        };
        llm_sources.insert(module.clone(), (src, base_name));
    }
    if wrapped == Some(true) && !any_lora && expected_rank > 0 {
        return Err(QuantizeError::Lora(format!(
            "config.json use_llm_lora = {expected_rank} and names are PEFT-wrapped, but no lora_A/lora_B tensors were found"
        )));
    }
    if wrapped == Some(false) && expected_rank > 0 {
        eprintln!("note: use_llm_lora = {expected_rank} but the language model has plain names: treating it as already merged");
    }

    let mut take_llm = |module: &str| -> Result<(Source, SourceTensor)> {
        let (src, base) = llm_sources.remove(module).ok_or_else(|| {
            bad(
                &format!(
                    "{}{module}.weight",
                    if wrapped == Some(false) {
                        LLM_PLAIN
                    } else {
                        LLM_WRAPPED
                    }
                ),
                "missing".into(),
            )
        })?;
        match &src {
            Source::Plain(n) => {
                used.insert(n.clone());
            }
            Source::Lora { base, a, b, .. } => {
                used.insert(base.clone());
                used.insert(a.clone());
                used.insert(b.clone());
            }
        }
        Ok((src, shards.tensors[&base].clone()))
    };

    let embed = take_llm("model.embed_tokens")?;
    let vocab = *embed.1.shape.first().unwrap_or(&0);
    if vocab == 0 || vocab > (1 << 22) {
        return Err(bad(
            &embed.1.name,
            format!("vocabulary size {vocab} is out of range"),
        ));
    }

    let mut tensors = Vec::new();
    let mut push = |name: String,
                    (src, t): (Source, SourceTensor),
                    expect: &[usize],
                    order: RowOrder,
                    role: Role|
     -> Result<()> {
        if t.shape != expect {
            return Err(bad(
                &t.name,
                format!(
                    "shape {:?} contradicts config.json (expected {expect:?})",
                    t.shape
                ),
            ));
        }
        let (rows, row_len) = rows_view(expect);
        let dims = gguf_dims(expect);
        let wanted = recipe::wanted(ftype, vision_type, role);
        let ty = recipe::fallback(wanted, row_len);
        tensors.push(PlannedTensor {
            name,
            source: src,
            rows,
            row_len,
            dims,
            order,
            ty,
            wanted,
        });
        Ok(())
    };

    let h = l.hidden;
    push(
        "token_embd.weight".into(),
        embed,
        &[vocab, h],
        RowOrder::Same,
        Role::TokenEmbd,
    )?;
    for i in 0..l.layers {
        let p = format!("model.layers.{i}.");
        let n_layers = l.layers;
        push(
            format!("blk.{i}.attn_norm.weight"),
            take_llm(&format!("{p}input_layernorm"))?,
            &[h],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("blk.{i}.attn_q.weight"),
            take_llm(&format!("{p}self_attn.q_proj"))?,
            &[l.heads * hd, h],
            RowOrder::RopePairs { head_dim: hd },
            Role::AttnQ,
        )?;
        push(
            format!("blk.{i}.attn_k.weight"),
            take_llm(&format!("{p}self_attn.k_proj"))?,
            &[l.kv_heads * hd, h],
            RowOrder::RopePairs { head_dim: hd },
            Role::AttnK,
        )?;
        push(
            format!("blk.{i}.attn_v.weight"),
            take_llm(&format!("{p}self_attn.v_proj"))?,
            &[l.kv_heads * hd, h],
            RowOrder::Same,
            Role::AttnV { layer: i, n_layers },
        )?;
        push(
            format!("blk.{i}.attn_output.weight"),
            take_llm(&format!("{p}self_attn.o_proj"))?,
            &[h, l.heads * hd],
            RowOrder::Same,
            Role::AttnOutput,
        )?;
        push(
            format!("blk.{i}.ffn_norm.weight"),
            take_llm(&format!("{p}post_attention_layernorm"))?,
            &[h],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("blk.{i}.ffn_gate.weight"),
            take_llm(&format!("{p}mlp.gate_proj"))?,
            &[l.ffn, h],
            RowOrder::Same,
            Role::FfnGateUp,
        )?;
        push(
            format!("blk.{i}.ffn_up.weight"),
            take_llm(&format!("{p}mlp.up_proj"))?,
            &[l.ffn, h],
            RowOrder::Same,
            Role::FfnGateUp,
        )?;
        push(
            format!("blk.{i}.ffn_down.weight"),
            take_llm(&format!("{p}mlp.down_proj"))?,
            &[h, l.ffn],
            RowOrder::Same,
            Role::FfnDown { layer: i, n_layers },
        )?;
    }
    push(
        "output_norm.weight".into(),
        take_llm("model.norm")?,
        &[h],
        RowOrder::Same,
        Role::Norm,
    )?;
    push(
        "output.weight".into(),
        take_llm("lm_head")?,
        &[vocab, h],
        RowOrder::Same,
        Role::Output,
    )?;
    if let Some((module, (_, base))) = llm_sources.into_iter().next() {
        return Err(bad(
            &base,
            format!("unknown language-model tensor (module {module})"),
        ));
    }

    // ---- vision tower and projector ----
    let c = v.hidden;
    let g = cfg.grid();
    let p = v.patch_size;
    let mut plain = |name: &str| -> Result<(Source, SourceTensor)> {
        let t = shards
            .tensors
            .get(name)
            .ok_or_else(|| bad(name, "missing".into()))?;
        used.insert(name.to_string());
        Ok((Source::Plain(name.to_string()), t.clone()))
    };
    let e = "vision_model.embeddings.";
    push(
        "v.class_embd".into(),
        plain(&format!("{e}class_embedding"))?,
        &[1, 1, c],
        RowOrder::Same,
        Role::VisionEmbd,
    )?;
    push(
        "v.patch_embd.weight".into(),
        plain(&format!("{e}patch_embedding.weight"))?,
        &[c, 3, p, p],
        RowOrder::Same,
        Role::VisionEmbd,
    )?;
    push(
        "v.patch_embd.bias".into(),
        plain(&format!("{e}patch_embedding.bias"))?,
        &[c],
        RowOrder::Same,
        Role::Norm,
    )?;
    push(
        "v.position_embd.weight".into(),
        plain(&format!("{e}position_embedding"))?,
        &[1, g * g + 1, c],
        RowOrder::Same,
        Role::VisionEmbd,
    )?;
    let kept = cfg.vision_layers_kept();
    for i in 0..kept {
        let q = format!("vision_model.encoder.layers.{i}.");
        let b = format!("v.blk.{i}.");
        push(
            format!("{b}attn_qkv.weight"),
            plain(&format!("{q}attn.qkv.weight"))?,
            &[3 * c, c],
            RowOrder::Same,
            Role::VisionMatrix,
        )?;
        push(
            format!("{b}attn_q_norm.weight"),
            plain(&format!("{q}attn.q_norm.weight"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}attn_k_norm.weight"),
            plain(&format!("{q}attn.k_norm.weight"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}attn_out.weight"),
            plain(&format!("{q}attn.proj.weight"))?,
            &[c, c],
            RowOrder::Same,
            Role::VisionMatrix,
        )?;
        push(
            format!("{b}attn_out.bias"),
            plain(&format!("{q}attn.proj.bias"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ffn_up.weight"),
            plain(&format!("{q}mlp.fc1.weight"))?,
            &[v.mlp, c],
            RowOrder::Same,
            Role::VisionMatrix,
        )?;
        push(
            format!("{b}ffn_up.bias"),
            plain(&format!("{q}mlp.fc1.bias"))?,
            &[v.mlp],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ffn_down.weight"),
            plain(&format!("{q}mlp.fc2.weight"))?,
            &[c, v.mlp],
            RowOrder::Same,
            Role::VisionMatrix,
        )?;
        push(
            format!("{b}ffn_down.bias"),
            plain(&format!("{q}mlp.fc2.bias"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ln1.weight"),
            plain(&format!("{q}norm1.weight"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ln2.weight"),
            plain(&format!("{q}norm2.weight"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ls1"),
            plain(&format!("{q}ls1"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
        push(
            format!("{b}ls2"),
            plain(&format!("{q}ls2"))?,
            &[c],
            RowOrder::Same,
            Role::Norm,
        )?;
    }
    push(
        "mm.model.mlp.0.weight".into(),
        plain("mlp1.0.weight")?,
        &[4 * c],
        RowOrder::Same,
        Role::Norm,
    )?;
    push(
        "mm.model.mlp.0.bias".into(),
        plain("mlp1.0.bias")?,
        &[4 * c],
        RowOrder::Same,
        Role::Norm,
    )?;
    push(
        "mm.model.mlp.1.weight".into(),
        plain("mlp1.1.weight")?,
        &[h, 4 * c],
        RowOrder::Same,
        Role::VisionMatrix,
    )?;
    push(
        "mm.model.mlp.1.bias".into(),
        plain("mlp1.1.bias")?,
        &[h],
        RowOrder::Same,
        Role::Norm,
    )?;
    push(
        "mm.model.mlp.3.weight".into(),
        plain("mlp1.3.weight")?,
        &[h, h],
        RowOrder::Same,
        Role::VisionMatrix,
    )?;
    push(
        "mm.model.mlp.3.bias".into(),
        plain("mlp1.3.bias")?,
        &[h],
        RowOrder::Same,
        Role::Norm,
    )?;

    // Every other tensor must be a ViT layer that select_layer drops, with a known name.
    const LAYER_PARTS: [&str; 13] = [
        "attn.qkv.weight",
        "attn.q_norm.weight",
        "attn.k_norm.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
        "norm1.weight",
        "norm2.weight",
        "ls1",
        "ls2",
    ];
    for (name, t) in &shards.tensors {
        if used.contains(name) {
            continue;
        }
        let dropped = name
            .strip_prefix("vision_model.encoder.layers.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, part)| Some((i.parse::<usize>().ok()?, part)))
            .filter(|(i, part)| *i >= kept && *i < v.layers && LAYER_PARTS.contains(part));
        if dropped.is_some() {
            skipped_bytes += t.n_bytes;
        } else {
            return Err(bad(
                name,
                "unknown tensor (not part of MedDr's layout)".into(),
            ));
        }
    }
    for i in kept..v.layers {
        for part in LAYER_PARTS {
            let n = format!("vision_model.encoder.layers.{i}.{part}");
            if !shards.tensors.contains_key(&n) {
                return Err(bad(&n, "missing".into()));
            }
        }
    }

    let input_bytes = shards.total_bytes() - skipped_bytes;
    let lora = if any_lora {
        lora_seen.map(|r| LoraInfo {
            rank: r,
            alpha: 2.0 * r as f32,
        })
    } else {
        None
    };
    Ok(Plan {
        tensors,
        lora,
        vocab,
        vision_layers_kept: kept,
        input_bytes,
    })
}

/// HF shape → rows × contiguous row length.
fn rows_view(shape: &[usize]) -> (usize, usize) {
    match shape {
        [n] => (1, *n),
        [1, 1, n] => (1, *n),
        [1, r, n] => (*r, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
        [] => (1, 1),
    }
}

/// HF shape → GGUF dims (ggml order, size-1 leading axes dropped).
fn gguf_dims(shape: &[usize]) -> Vec<u64> {
    let (rows, row_len) = rows_view(shape);
    if rows == 1 && shape.len() != 2 {
        vec![row_len as u64]
    } else {
        vec![row_len as u64, rows as u64]
    }
}
