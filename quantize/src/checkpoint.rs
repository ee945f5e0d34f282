//! Reading an upstream InternVL-Chat checkpoint directory: `config.json`, the safetensors index and the shards'
//! headers. Tensor bytes are read later, by positioned reads, so memory stays flat whatever the model size.

use crate::error::{io_err, QuantizeError, Result};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct VisionHparams {
    pub hidden: usize,
    pub heads: usize,
    pub mlp: usize,
    pub layers: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub channels: usize,
    pub eps: f32,
    pub qk_normalization: bool,
    pub qkv_bias: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlmHparams {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub eps: f32,
    pub rope_theta: f32,
    pub max_positions: usize,
    pub vocab: usize,
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: Option<u32>,
}

impl LlmHparams {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

/// What the quantizer needs from `config.json` (`model_type: internvl_chat`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointConfig {
    pub vision: VisionHparams,
    pub llm: LlmHparams,
    pub select_layer: i32,
    pub downsample_ratio: f32,
    pub force_image_size: usize,
    pub pad2square: bool,
    pub template: String,
    /// `use_llm_lora`: the LoRA rank upstream wrapped the LLM with (0 = none).
    pub llm_lora_rank: usize,
}

impl CheckpointConfig {
    /// ViT layers whose output `select_layer` reads: the rest are never computed upstream.
    pub fn vision_layers_kept(&self) -> usize {
        let l = self.vision.layers as i64;
        let s = self.select_layer as i64;
        (if s < 0 { l + 1 + s } else { s }) as usize
    }
    pub fn grid(&self) -> usize {
        self.force_image_size / self.vision.patch_size
    }
    pub fn num_image_tokens(&self) -> usize {
        let g = self.grid();
        let k = (1.0 / self.downsample_ratio).round() as usize;
        (g / k) * (g / k)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let json: Json = serde_json::from_str(&text).map_err(|cause| QuantizeError::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_json(&json)
    }

    pub fn from_json(j: &Json) -> Result<Self> {
        let model_type = get_str(j, "model_type")?;
        if model_type != "internvl_chat" {
            return Err(cfg(format!(
                "unsupported model_type {model_type:?} (expected \"internvl_chat\")"
            )));
        }
        let v = j
            .get("vision_config")
            .ok_or_else(|| cfg("missing vision_config".into()))?;
        let l = j
            .get("llm_config")
            .ok_or_else(|| cfg("missing llm_config".into()))?;
        let vt = get_str(v, "model_type").unwrap_or_else(|_| "intern_vit_6b".into());
        if vt != "intern_vit_6b" {
            return Err(cfg(format!(
                "unsupported vision_config.model_type {vt:?} (expected \"intern_vit_6b\")"
            )));
        }
        let lt = get_str(l, "model_type")?;
        if lt != "llama" {
            return Err(cfg(format!(
                "unsupported llm_config.model_type {lt:?} (expected \"llama\")"
            )));
        }
        let act = get_str(v, "hidden_act").unwrap_or_else(|_| "gelu".into());
        if act != "gelu" {
            return Err(cfg(format!(
                "vision_config.hidden_act {act:?} is not supported (expected \"gelu\")"
            )));
        }
        let act = get_str(l, "hidden_act").unwrap_or_else(|_| "silu".into());
        if act != "silu" {
            return Err(cfg(format!(
                "llm_config.hidden_act {act:?} is not supported (expected \"silu\")"
            )));
        }
        if let Some(rs) = l.get("rope_scaling") {
            if !rs.is_null() {
                return Err(cfg(format!(
                    "llm_config.rope_scaling {rs} is not supported"
                )));
            }
        }
        if get_bool_or(l, "attention_bias", false)? {
            return Err(cfg("llm_config.attention_bias true is not supported".into()));
        }
        if get_bool_or(l, "tie_word_embeddings", false)? {
            return Err(cfg("llm_config.tie_word_embeddings true is not supported (MedDr has an untied lm_head)".into()));
        }
        let vision = VisionHparams {
            hidden: get_usize(v, "hidden_size")?,
            heads: get_usize(v, "num_attention_heads")?,
            mlp: get_usize(v, "intermediate_size")?,
            layers: get_usize(v, "num_hidden_layers")?,
            image_size: get_usize(v, "image_size")?,
            patch_size: get_usize(v, "patch_size")?,
            channels: get_usize_or(v, "num_channels", 3)?,
            eps: get_f64(v, "layer_norm_eps")? as f32,
            qk_normalization: get_bool_or(v, "qk_normalization", false)?,
            qkv_bias: get_bool_or(v, "qkv_bias", false)?,
        };
        let eos = get_usize(l, "eos_token_id").map_err(|_| {
            cfg("llm_config.eos_token_id must be one integer (upstream stops on it alone)".into())
        })?;
        let llm = LlmHparams {
            hidden: get_usize(l, "hidden_size")?,
            layers: get_usize(l, "num_hidden_layers")?,
            heads: get_usize(l, "num_attention_heads")?,
            kv_heads: get_usize_or(
                l,
                "num_key_value_heads",
                get_usize(l, "num_attention_heads")?,
            )?,
            ffn: get_usize(l, "intermediate_size")?,
            eps: get_f64(l, "rms_norm_eps")? as f32,
            rope_theta: get_f64_or(l, "rope_theta", 10000.0)? as f32,
            max_positions: get_usize(l, "max_position_embeddings")?,
            vocab: get_usize(l, "vocab_size")?,
            bos: opt_u32(l, "bos_token_id")?,
            eos: u32::try_from(eos)
                .map_err(|_| cfg(format!("llm_config.eos_token_id {eos} out of range")))?,
            pad: opt_u32(l, "pad_token_id")?,
        };
        let c = CheckpointConfig {
            select_layer: get_i64_or(j, "select_layer", -1)? as i32,
            downsample_ratio: get_f64_or(j, "downsample_ratio", 0.5)? as f32,
            force_image_size: get_usize_or(j, "force_image_size", vision.image_size)?,
            pad2square: get_bool_or(j, "pad2square", false)?,
            template: get_str(j, "template")?,
            llm_lora_rank: get_usize_or(j, "use_llm_lora", 0)?,
            vision,
            llm,
        };
        if get_usize_or(j, "use_backbone_lora", 0)? != 0 {
            return Err(cfg(
                "use_backbone_lora != 0 (LoRA on the vision tower) is not supported".into(),
            ));
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let v = &self.vision;
        let l = &self.llm;
        let nonzero = [
            ("vision_config.hidden_size", v.hidden),
            ("vision_config.num_attention_heads", v.heads),
            ("vision_config.intermediate_size", v.mlp),
            ("vision_config.num_hidden_layers", v.layers),
            ("vision_config.patch_size", v.patch_size),
            ("llm_config.hidden_size", l.hidden),
            ("llm_config.num_hidden_layers", l.layers),
            ("llm_config.num_attention_heads", l.heads),
            ("llm_config.num_key_value_heads", l.kv_heads),
            ("llm_config.intermediate_size", l.ffn),
            ("llm_config.vocab_size", l.vocab),
        ];
        for (k, n) in nonzero {
            if n == 0 || n > (1 << 24) {
                return Err(cfg(format!("{k} = {n} is out of range")));
            }
        }
        if v.hidden % v.heads != 0 {
            return Err(cfg(format!(
                "vision hidden_size {} not divisible by num_attention_heads {}",
                v.hidden, v.heads
            )));
        }
        if l.hidden % l.heads != 0 || (l.hidden / l.heads) % 2 != 0 {
            return Err(cfg(format!(
                "llm hidden_size {} / num_attention_heads {} must be an even head_dim",
                l.hidden, l.heads
            )));
        }
        if l.heads % l.kv_heads != 0 {
            return Err(cfg(format!(
                "llm num_attention_heads {} not divisible by num_key_value_heads {}",
                l.heads, l.kv_heads
            )));
        }
        if v.channels != 3 {
            return Err(cfg(format!(
                "vision num_channels {} (expected 3)",
                v.channels
            )));
        }
        if self.force_image_size % v.patch_size != 0 || self.force_image_size > 8192 {
            return Err(cfg(format!(
                "force_image_size {} is not a multiple of patch_size {}",
                self.force_image_size, v.patch_size
            )));
        }
        if self.downsample_ratio != 0.5 {
            return Err(cfg(format!(
                "downsample_ratio {} is not supported (MedDr uses 0.5)",
                self.downsample_ratio
            )));
        }
        if self.grid() % 2 != 0 {
            return Err(cfg(format!(
                "patch grid {} is odd: pixel shuffle 0.5 needs an even grid",
                self.grid()
            )));
        }
        if self.template != "Hermes-2" {
            return Err(cfg(format!(
                "template {:?} is not supported (MedDr uses \"Hermes-2\")",
                self.template
            )));
        }
        let kept = self.vision_layers_kept();
        if kept == 0 || kept > v.layers {
            return Err(cfg(format!(
                "select_layer {} is out of range for {} vision layers",
                self.select_layer, v.layers
            )));
        }
        if !v.qk_normalization {
            return Err(cfg(
                "vision qk_normalization false is not supported (MedDr's InternViT-6B uses it)"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn cfg(msg: String) -> QuantizeError {
    QuantizeError::Config(msg)
}
fn get_str(j: &Json, k: &str) -> Result<String> {
    match j.get(k) {
        Some(Json::String(s)) => Ok(s.clone()),
        Some(other) => Err(cfg(format!("{k} should be a string, found {other}"))),
        None => Err(cfg(format!("missing key {k}"))),
    }
}
fn get_usize(j: &Json, k: &str) -> Result<usize> {
    match j.get(k) {
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| cfg(format!("{k} should be a non-negative integer, found {v}"))),
        None => Err(cfg(format!("missing key {k}"))),
    }
}
fn get_usize_or(j: &Json, k: &str, d: usize) -> Result<usize> {
    match j.get(k) {
        None | Some(Json::Null) => Ok(d),
        Some(_) => get_usize(j, k),
    }
}
fn get_i64_or(j: &Json, k: &str, d: i64) -> Result<i64> {
    match j.get(k) {
        None | Some(Json::Null) => Ok(d),
        Some(v) => v
            .as_i64()
            .ok_or_else(|| cfg(format!("{k} should be an integer, found {v}"))),
    }
}
fn get_f64(j: &Json, k: &str) -> Result<f64> {
    match j.get(k) {
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| cfg(format!("{k} should be a finite number, found {v}"))),
        None => Err(cfg(format!("missing key {k}"))),
    }
}
fn get_f64_or(j: &Json, k: &str, d: f64) -> Result<f64> {
    match j.get(k) {
        None | Some(Json::Null) => Ok(d),
        Some(_) => get_f64(j, k),
    }
}
fn get_bool_or(j: &Json, k: &str, d: bool) -> Result<bool> {
    match j.get(k) {
        None | Some(Json::Null) => Ok(d),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| cfg(format!("{k} should be a boolean, found {v}"))),
    }
}
fn opt_u32(j: &Json, k: &str) -> Result<Option<u32>> {
    match j.get(k) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| cfg(format!("{k} should be a token id, found {v}"))),
    }
}

/// Element type of a source tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceDtype {
    BF16,
    F16,
    F32,
}

impl SourceDtype {
    pub fn size(self) -> usize {
        match self {
            SourceDtype::BF16 | SourceDtype::F16 => 2,
            SourceDtype::F32 => 4,
        }
    }
}

/// One tensor in a shard: where its bytes are, nothing read yet.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub shard: usize,
    pub dtype: SourceDtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the shard file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The shards of a checkpoint, opened for positioned reads.
pub struct ShardSet {
    pub paths: Vec<PathBuf>,
    files: Vec<File>,
    pub tensors: BTreeMap<String, SourceTensor>,
}

impl ShardSet {
    /// Opens `model.safetensors.index.json` and every shard it names, or a single `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let mut shard_names: Vec<String> = Vec::new();
        let mut weight_map: Option<HashMap<String, String>> = None;
        if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
            let json: Json = serde_json::from_str(&text).map_err(|cause| QuantizeError::Json {
                path: index_path.clone(),
                cause,
            })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| QuantizeError::Shard {
                    path: index_path.clone(),
                    reason: "no \"weight_map\" object".into(),
                })?;
            let mut wm = HashMap::new();
            for (k, v) in map {
                let s = v.as_str().ok_or_else(|| QuantizeError::Shard {
                    path: index_path.clone(),
                    reason: format!("weight_map[{k:?}] is not a file name: {v}"),
                })?;
                if s.contains('/') || s.contains("..") {
                    return Err(QuantizeError::Shard {
                        path: index_path.clone(),
                        reason: format!(
                            "weight_map[{k:?}] names a file outside the directory: {s:?}"
                        ),
                    });
                }
                if !shard_names.iter().any(|n| n == s) {
                    shard_names.push(s.to_string());
                }
                wm.insert(k.clone(), s.to_string());
            }
            shard_names.sort();
            weight_map = Some(wm);
        } else if dir.join("model.safetensors").exists() {
            shard_names.push("model.safetensors".into());
        } else {
            return Err(QuantizeError::Shard {
                path: dir.to_path_buf(),
                reason: "neither model.safetensors.index.json nor model.safetensors found".into(),
            });
        }

        let mut set = ShardSet {
            paths: Vec::new(),
            files: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for (shard_idx, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let file = File::open(&path).map_err(io_err(&path))?;
            let len = file.metadata().map_err(io_err(&path))?.len();
            for t in read_shard_header(&path, &file, len, shard_idx)? {
                if let Some(wm) = &weight_map {
                    match wm.get(&t.name) {
                        Some(s) if s == name => {}
                        Some(s) => {
                            return Err(QuantizeError::Shard {
                                path: path.clone(),
                                reason: format!("holds {} but the index puts it in {s}", t.name),
                            })
                        }
                        None => {
                            return Err(QuantizeError::Shard {
                                path: path.clone(),
                                reason: format!("holds {} which the index does not list", t.name),
                            })
                        }
                    }
                }
                if set.tensors.contains_key(&t.name) {
                    return Err(QuantizeError::Shard {
                        path: path.clone(),
                        reason: format!("duplicate tensor {}", t.name),
                    });
                }
                set.tensors.insert(t.name.clone(), t);
            }
            set.paths.push(path);
            set.files.push(file);
        }
        if let Some(wm) = &weight_map {
            let mut missing: Vec<&String> = wm
                .keys()
                .filter(|k| !set.tensors.contains_key(*k))
                .collect();
            missing.sort();
            if let Some(first) = missing.first() {
                return Err(QuantizeError::Shard {
                    path: index_path,
                    reason: format!(
                        "{} tensor(s) listed but absent from their shard, first: {first} (in {})",
                        missing.len(),
                        wm[*first]
                    ),
                });
            }
        }
        Ok(set)
    }

    /// Total bytes of tensor data, for progress and throughput.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.n_bytes).sum()
    }

    /// Reads `count` elements starting at element `start` of `t`, converted to f32, into `out`.
    pub fn read_f32(
        &self,
        t: &SourceTensor,
        start: usize,
        count: usize,
        scratch: &mut Vec<u8>,
        out: &mut [f32],
    ) -> Result<()> {
        assert_eq!(out.len(), count);
        let es = t.dtype.size();
        let end = start.checked_add(count).filter(|&e| e <= t.n_elements());
        if end.is_none() {
            return Err(QuantizeError::Tensor {
                name: t.name.clone(),
                reason: format!("read of {count} elements at {start} is out of range"),
            });
        }
        scratch.resize(count * es, 0);
        let off = t.offset + (start * es) as u64;
        let path = &self.paths[t.shard];
        self.files[t.shard]
            .read_exact_at(scratch, off)
            .map_err(io_err(path))?;
        match t.dtype {
            SourceDtype::BF16 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
                }
            }
            SourceDtype::F16 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
                }
            }
            SourceDtype::F32 => {
                for (o, b) in out.iter_mut().zip(scratch.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Ok(())
    }

    pub fn read_all_f32(&self, t: &SourceTensor) -> Result<Vec<f32>> {
        let n = t.n_elements();
        let mut out = vec![0f32; n];
        let mut scratch = Vec::new();
        self.read_f32(t, 0, n, &mut scratch, &mut out)?;
        Ok(out)
    }
}

/// Parses one shard's header with the `safetensors` crate, which checks offsets, sizes and that the file is
/// complete. Only the header pages are touched: the file is memory-mapped for this check and unmapped after.
fn read_shard_header(
    path: &Path,
    file: &File,
    len: u64,
    shard: usize,
) -> Result<Vec<SourceTensor>> {
    if len < 8 {
        return Err(QuantizeError::Shard {
            path: path.to_path_buf(),
            reason: format!("file is {len} bytes, too short for a header"),
        });
    }
    // SAFETY: read-only mapping of a file we do not modify; only the header pages are touched.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(io_err(path))?;
    parse_shard_header(&map, path, shard)
}

/// The tensors of a whole safetensors shard held in `map` (header and data: the header's offsets are checked
/// against the data's length), as shard number `shard`; `path` names it in errors. Untrusted input: every
/// failure is a [`QuantizeError::Shard`] or [`QuantizeError::Tensor`] naming the offending value
/// (`tests/fuzz` target `safetensors`).
pub fn parse_shard_header(map: &[u8], path: &Path, shard: usize) -> Result<Vec<SourceTensor>> {
    let shard_err = |reason: String| QuantizeError::Shard {
        path: path.to_path_buf(),
        reason,
    };
    let len = map.len() as u64;
    if len < 8 {
        return Err(shard_err(format!(
            "file is {len} bytes, too short for a header"
        )));
    }
    let (n, meta) = safetensors::SafeTensors::read_metadata(map).map_err(|e| {
        let data_len = u64::from_le_bytes(map[..8].try_into().unwrap_or([0; 8]));
        match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                shard_err(format!("truncated or padded: file is {len} bytes, header size {data_len}, data does not match the header"))
            }
            other => shard_err(format!("{other}")),
        }
    })?;
    let base = 8 + n as u64;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            safetensors::Dtype::BF16 => SourceDtype::BF16,
            safetensors::Dtype::F16 => SourceDtype::F16,
            safetensors::Dtype::F32 => SourceDtype::F32,
            other => {
                return Err(QuantizeError::Tensor {
                    name,
                    reason: format!("dtype {other:?} is not supported (bf16, f16, f32)"),
                })
            }
        };
        let (b, e) = info.data_offsets;
        out.push(SourceTensor {
            name,
            shard,
            dtype,
            shape: info.shape.clone(),
            offset: base + b as u64,
            n_bytes: (e - b) as u64,
        });
    }
    Ok(out)
}
