//! Test-side, independent weight path: the upstream HF safetensors checkpoint converted to the GGUF naming and
//! layout contract (bf16 → f32, LoRA merged in f32, q/k rows permuted like llama.cpp's converter, names renamed).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use meddr_reference::{
    LlmConfig, ModelConfig, RefError, ReferenceModel, Tensor, VisionConfig, WeightStore,
};
use ndarray::{Array1, Array2, Array3};
use ndarray_npy::NpzReader;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// `MEDDR_SHARED`, or `<workspace root>/../shared`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("MEDDR_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

pub fn fixtures() -> PathBuf {
    let d = shared_dir().join("fixtures");
    assert!(
        d.is_dir(),
        "shared fixtures not found at {} (set MEDDR_SHARED)",
        d.display()
    );
    d
}

fn read_json(p: &Path) -> Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

fn as_usize(v: &Value, what: &str) -> usize {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what} is not an unsigned integer: {v}")) as usize
}

fn as_f32(v: &Value, what: &str) -> f32 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}")) as f32
}

/// A weight store holding every converted tensor in memory.
pub struct HfStore {
    pub tensors: HashMap<String, Tensor>,
}

impl WeightStore for HfStore {
    fn tensor(&self, name: &str) -> Result<Tensor, RefError> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| RefError::MissingTensor { name: name.into() })
    }
}

struct Raw {
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn read_shards(dir: &Path) -> HashMap<String, Raw> {
    let index = read_json(&dir.join("model.safetensors.index.json"));
    let files: HashSet<String> = index["weight_map"]
        .as_object()
        .expect("weight_map")
        .values()
        .map(|v| v.as_str().expect("shard name").to_string())
        .collect();
    let mut out = HashMap::new();
    for f in files {
        let bytes =
            std::fs::read(dir.join(&f)).unwrap_or_else(|e| panic!("reading shard {f}: {e}"));
        let st =
            SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("parsing shard {f}: {e}"));
        for (name, view) in st.tensors() {
            let b = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::BF16 => b
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F16 => b
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F32 => b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                d => panic!("tensor {name}: unsupported dtype {d:?}"),
            };
            out.insert(
                name,
                Raw {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
    }
    out
}

/// llama.cpp's q/k row permutation: `[n_head·hd, in]` viewed as `(n_head, 2, hd/2, in)`, axes 1 and 2 swapped.
pub fn permute_rows(w: &[f32], n_head: usize, head_dim: usize, in_dim: usize) -> Vec<f32> {
    assert_eq!(w.len(), n_head * head_dim * in_dim);
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * head_dim + 2 * i + j;
                let src = h * head_dim + j * half + i;
                out[dst * in_dim..(dst + 1) * in_dim]
                    .copy_from_slice(&w[src * in_dim..(src + 1) * in_dim]);
            }
        }
    }
    out
}

/// The model config read from the HF `config.json` + `added_tokens.json`, as the quantizer would write it.
pub fn hf_config(dir: &Path, vocab: usize) -> ModelConfig {
    let cfg = read_json(&dir.join("config.json"));
    let added = read_json(&dir.join("added_tokens.json"));
    let v = &cfg["vision_config"];
    let l = &cfg["llm_config"];
    let image_size = as_usize(&cfg["force_image_size"], "force_image_size");
    let patch = as_usize(&v["patch_size"], "patch_size");
    let vit_layers = as_usize(&v["num_hidden_layers"], "vision num_hidden_layers");
    let select = cfg["select_layer"].as_i64().expect("select_layer");
    assert!(select < 0, "select_layer {select} must be negative");
    let ratio = as_f32(&cfg["downsample_ratio"], "downsample_ratio");
    let grid = image_size / patch;
    let hidden = as_usize(&l["hidden_size"], "hidden_size");
    let heads = as_usize(&l["num_attention_heads"], "num_attention_heads");
    ModelConfig {
        vision: Some(VisionConfig {
            image_size,
            patch_size: patch,
            hidden: as_usize(&v["hidden_size"], "vision hidden_size"),
            heads: as_usize(&v["num_attention_heads"], "vision heads"),
            mlp: as_usize(&v["intermediate_size"], "vision intermediate_size"),
            layers: (vit_layers as i64 + select + 1) as usize,
            eps: as_f32(&v["layer_norm_eps"], "layer_norm_eps"),
            proj_ln_eps: 1e-5,
            llm_hidden: hidden,
            downsample_ratio: ratio,
        }),
        llm: LlmConfig {
            hidden,
            layers: as_usize(&l["num_hidden_layers"], "num_hidden_layers"),
            heads,
            kv_heads: as_usize(&l["num_key_value_heads"], "num_key_value_heads"),
            head_dim: hidden / heads,
            ffn: as_usize(&l["intermediate_size"], "intermediate_size"),
            eps: as_f32(&l["rms_norm_eps"], "rms_norm_eps"),
            rope_theta: as_f32(&l["rope_theta"], "rope_theta"),
            vocab,
            context_length: as_usize(&l["max_position_embeddings"], "max_position_embeddings"),
        },
        image_context_token_id: Some(as_usize(&added["<IMG_CONTEXT>"], "<IMG_CONTEXT>") as u32),
        num_image_tokens: ((grid as f32 * ratio) as usize).pow(2),
    }
}

/// Converts the HF checkpoint in `dir` to GGUF names and layouts.
pub fn load_hf_checkpoint(dir: &Path) -> (HfStore, ModelConfig) {
    let mut raw = read_shards(dir);
    let cfg_json = read_json(&dir.join("config.json"));
    let lora_r = cfg_json["use_llm_lora"].as_u64().unwrap_or(0) as usize;
    // Upstream wraps the LLM with lora_alpha = 2r.
    let lora_scale = if lora_r > 0 {
        (2 * lora_r) as f32 / lora_r as f32
    } else {
        0.0
    };

    let prefix = if raw
        .keys()
        .any(|k| k.starts_with("language_model.base_model.model."))
    {
        "language_model.base_model.model."
    } else {
        "language_model."
    };
    let vocab = raw[&format!("{prefix}model.embed_tokens.weight")].shape[0];
    let config = hf_config(dir, vocab);
    let l = config.llm.clone();
    let v = config.vision.clone().expect("vision config");

    let mut out = HashMap::new();
    let mut put = |name: String, dims: Vec<usize>, data: Vec<f32>| {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "{name}");
        out.insert(name, Tensor { dims, data });
    };
    // 2-D HF [out, in] → ggml dims [in, out]; the bytes stay as they are.
    let ggml2 = |r: &Raw| vec![r.shape[1], r.shape[0]];

    // Vision tower.
    let e = "vision_model.embeddings.";
    let c = v.hidden;
    let r = take(&mut raw, &format!("{e}class_embedding"));
    put("v.class_embd".into(), vec![c], r.data);
    let r = take(&mut raw, &format!("{e}patch_embedding.weight"));
    assert_eq!(r.shape, vec![c, 3, v.patch_size, v.patch_size]);
    put(
        "v.patch_embd.weight".into(),
        vec![3 * v.patch_size * v.patch_size, c],
        r.data,
    );
    put(
        "v.patch_embd.bias".into(),
        vec![c],
        take(&mut raw, &format!("{e}patch_embedding.bias")).data,
    );
    let r = take(&mut raw, &format!("{e}position_embedding"));
    put("v.position_embd.weight".into(), vec![c, r.shape[1]], r.data);
    for i in 0..v.layers {
        let hf = |s: &str| format!("vision_model.encoder.layers.{i}.{s}");
        let gg = |s: &str| format!("v.blk.{i}.{s}");
        for (h, g) in [
            ("attn.qkv.weight", "attn_qkv.weight"),
            ("attn.proj.weight", "attn_out.weight"),
            ("mlp.fc1.weight", "ffn_up.weight"),
            ("mlp.fc2.weight", "ffn_down.weight"),
        ] {
            let r = take(&mut raw, &hf(h));
            put(gg(g), ggml2(&r), r.data);
        }
        for (h, g) in [
            ("attn.q_norm.weight", "attn_q_norm.weight"),
            ("attn.k_norm.weight", "attn_k_norm.weight"),
            ("attn.proj.bias", "attn_out.bias"),
            ("mlp.fc1.bias", "ffn_up.bias"),
            ("mlp.fc2.bias", "ffn_down.bias"),
            ("norm1.weight", "ln1.weight"),
            ("norm2.weight", "ln2.weight"),
            ("ls1", "ls1"),
            ("ls2", "ls2"),
        ] {
            let r = take(&mut raw, &hf(h));
            put(gg(g), vec![r.data.len()], r.data);
        }
    }
    for n in ["0", "1", "3"] {
        let r = take(&mut raw, &format!("mlp1.{n}.weight"));
        let dims = if r.shape.len() == 2 {
            ggml2(&r)
        } else {
            vec![r.data.len()]
        };
        put(format!("mm.model.mlp.{n}.weight"), dims, r.data);
        let r = take(&mut raw, &format!("mlp1.{n}.bias"));
        put(format!("mm.model.mlp.{n}.bias"), vec![r.data.len()], r.data);
    }

    // Language model.
    let r = take(&mut raw, &format!("{prefix}model.embed_tokens.weight"));
    put("token_embd.weight".into(), ggml2(&r), r.data);
    put(
        "output_norm.weight".into(),
        vec![l.hidden],
        take(&mut raw, &format!("{prefix}model.norm.weight")).data,
    );
    let r = take(&mut raw, &format!("{prefix}lm_head.weight"));
    put("output.weight".into(), ggml2(&r), r.data);
    for i in 0..l.layers {
        let hf = |s: &str| format!("{prefix}model.layers.{i}.{s}");
        put(
            format!("blk.{i}.attn_norm.weight"),
            vec![l.hidden],
            take(&mut raw, &hf("input_layernorm.weight")).data,
        );
        put(
            format!("blk.{i}.ffn_norm.weight"),
            vec![l.hidden],
            take(&mut raw, &hf("post_attention_layernorm.weight")).data,
        );
        for (h, g) in [
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ] {
            let base_name = hf(&format!("{h}.base_layer.weight"));
            let mut w = if raw.contains_key(&base_name) {
                let mut base = take(&mut raw, &base_name);
                let a = take(&mut raw, &hf(&format!("{h}.lora_A.default.weight")));
                let b = take(&mut raw, &hf(&format!("{h}.lora_B.default.weight")));
                let (out_dim, in_dim) = (base.shape[0], base.shape[1]);
                assert_eq!(
                    a.shape,
                    vec![lora_r, in_dim],
                    "{h}: lora_A shape vs use_llm_lora = {lora_r}"
                );
                assert_eq!(
                    b.shape,
                    vec![out_dim, lora_r],
                    "{h}: lora_B shape vs use_llm_lora = {lora_r}"
                );
                for o in 0..out_dim {
                    for ii in 0..in_dim {
                        let mut delta = 0.0_f32;
                        for k in 0..lora_r {
                            delta += b.data[o * lora_r + k] * a.data[k * in_dim + ii];
                        }
                        base.data[o * in_dim + ii] += delta * lora_scale;
                    }
                }
                base
            } else {
                take(&mut raw, &hf(&format!("{h}.weight")))
            };
            if g == "attn_q" {
                w.data = permute_rows(&w.data, l.heads, l.head_dim, l.hidden);
            } else if g == "attn_k" {
                w.data = permute_rows(&w.data, l.kv_heads, l.head_dim, l.hidden);
            }
            put(format!("blk.{i}.{g}.weight"), ggml2(&w), w.data);
        }
    }
    assert!(
        raw.is_empty(),
        "unconverted checkpoint tensors: {:?}",
        raw.keys().collect::<Vec<_>>()
    );
    (HfStore { tensors: out }, config)
}

fn take(raw: &mut HashMap<String, Raw>, name: &str) -> Raw {
    raw.remove(name)
        .unwrap_or_else(|| panic!("checkpoint lacks {name}"))
}

pub fn expected() -> &'static Value {
    static E: OnceLock<Value> = OnceLock::new();
    E.get_or_init(|| read_json(&fixtures().join("expected/dev/expected.json")))
}

pub fn samples() -> &'static [Value] {
    expected()["samples"].as_array().expect("samples")
}

pub fn model() -> &'static ReferenceModel {
    static M: OnceLock<ReferenceModel> = OnceLock::new();
    M.get_or_init(|| {
        let (store, config) = load_hf_checkpoint(&fixtures().join("checkpoints/dev"));
        ReferenceModel::load(&store, config).expect("loading the reference model")
    })
}

pub fn npz() -> NpzReader<File> {
    let p = fixtures().join("expected/dev/arrays.npz");
    NpzReader::new(File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("arrays.npz")
}

pub fn array1(key: &str) -> Vec<f32> {
    let a: Array1<f32> = npz()
        .by_name(&format!("{key}.npy"))
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    a.to_vec()
}

pub fn array2(key: &str) -> (Vec<f32>, [usize; 2]) {
    let a: Array2<f32> = npz()
        .by_name(&format!("{key}.npy"))
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    let s = [a.shape()[0], a.shape()[1]];
    (a.as_standard_layout().iter().copied().collect(), s)
}

/// The model input for an image sample: the `pad2square` transform of its image.
pub fn pixel_values(image: &str) -> Vec<f32> {
    let index = read_json(&fixtures().join("transforms/index.json"));
    let entry = index["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["image"].as_str() == Some(image) && e["pad2square"].as_bool() == Some(true))
        .unwrap_or_else(|| panic!("no pad2square transform for {image}"));
    let p = fixtures()
        .join("transforms")
        .join(entry["file"].as_str().expect("file"));
    let mut r = NpzReader::new(File::open(&p).expect("transform npz")).expect("transform npz");
    let a: Array3<f32> = r.by_name("pixel_values.npy").expect("pixel_values");
    assert_eq!(a.shape(), &[3, 448, 448]);
    a.as_standard_layout().iter().copied().collect()
}

pub fn ids(sample: &Value) -> Vec<u32> {
    sample["input_ids"]
        .as_array()
        .expect("input_ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect()
}

pub fn u32_list(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_u64().expect("u32") as u32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// ViT hidden state, pixel-shuffled tokens and projected features of one image sample, computed once.
pub struct VisionRun {
    pub vit: Vec<f32>,
    pub shuffled: Vec<f32>,
    pub features: Vec<f32>,
}

pub fn vision_run(sample_index: usize) -> Option<&'static VisionRun> {
    static RUNS: [OnceLock<Option<VisionRun>>; 8] = [const { OnceLock::new() }; 8];
    RUNS[sample_index]
        .get_or_init(|| {
            let s = &samples()[sample_index];
            let image = s["image"].as_str()?;
            let m = model();
            let vit = m.vit_last_hidden_state(&pixel_values(image)).expect("ViT");
            let shuffled = m.shuffle_hidden_state(&vit).expect("shuffle");
            let features = m.project(&shuffled).expect("projector");
            Some(VisionRun {
                vit,
                shuffled,
                features,
            })
        })
        .as_ref()
}
