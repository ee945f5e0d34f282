//! The MedDr model assembled from [`crate::ops`]: InternViT → pixel shuffle → projector → LLaMA decoder.

use crate::error::RefError;
use crate::ops::{
    argmax, attention, gelu_erf, layer_norm, matmul_wt, patch_embed, pixel_shuffle_v1, rms_norm,
    rope_adjacent_pairs, silu,
};

/// A dense f32 tensor as a weight store hands it out.
///
/// `dims` are in ggml order (fastest-varying first), so a 2-D weight `[in, out]` is `out` rows of `in`
/// contiguous values. Trailing dims of size 1 are ignored when shapes are compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
}

/// Source of weights under their GGUF names (`docs/gguf-layout.md`), already dequantised to f32.
///
/// Decouples the model from the file format: a GGUF-backed store and the tests' safetensors converter both
/// implement it. Return [`RefError::MissingTensor`] for an unknown name.
pub trait WeightStore {
    fn tensor(&self, name: &str) -> Result<Tensor, RefError>;
}

/// InternViT and projector hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Square input side in pixels (`force_image_size`, 448).
    pub image_size: usize,
    pub patch_size: usize,
    /// ViT width C.
    pub hidden: usize,
    pub heads: usize,
    /// ViT MLP width.
    pub mlp: usize,
    /// Layers kept in the store (those `select_layer` uses); the output is the last one's hidden state.
    pub layers: usize,
    /// ViT RMSNorm epsilon (also used by q_norm / k_norm).
    pub eps: f32,
    /// Projector LayerNorm epsilon (1e-5, torch's default; not in upstream's config).
    pub proj_ln_eps: f32,
    /// Projector output width = LLM hidden size.
    pub llm_hidden: usize,
    /// Only 0.5 (upstream's value, pixel-shuffle version 1) is supported.
    pub downsample_ratio: f32,
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }
    /// ViT sequence length: patches plus CLS.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }
    /// Image tokens the projector emits per image.
    pub fn num_image_tokens(&self) -> usize {
        (self.grid() / 2) * (self.grid() / 2)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads.max(1)
    }
}

/// LLaMA decoder hyper-parameters (the `llama.*` GGUF keys).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub eps: f32,
    pub rope_theta: f32,
    pub vocab: usize,
    pub context_length: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `None` for a text-only model.
    pub vision: Option<VisionConfig>,
    pub llm: LlmConfig,
    /// Id of `<IMG_CONTEXT>`, whose embeddings are replaced by image features; `None` for a plain llama file
    /// (no `meddr.image.*` keys), whose prompts never carry image features.
    pub image_context_token_id: Option<u32>,
    /// Image tokens per image (256 for MedDr).
    pub num_image_tokens: usize,
}

fn bad(field: &'static str, value: impl std::fmt::Display, reason: &'static str) -> RefError {
    RefError::Config {
        field,
        value: value.to_string(),
        reason,
    }
}

fn mul(a: usize, b: usize, what: &'static str) -> Result<usize, RefError> {
    a.checked_mul(b).ok_or(RefError::Overflow { what })
}

impl ModelConfig {
    /// Checks that the numbers are consistent before any weight is read, so later arithmetic cannot overflow.
    pub fn validate(&self) -> Result<(), RefError> {
        let l = &self.llm;
        for (field, v) in [
            ("llm.hidden", l.hidden),
            ("llm.heads", l.heads),
            ("llm.kv_heads", l.kv_heads),
            ("llm.head_dim", l.head_dim),
            ("llm.ffn", l.ffn),
            ("llm.vocab", l.vocab),
            ("llm.context_length", l.context_length),
        ] {
            if v == 0 {
                return Err(bad(field, v, "must be positive"));
            }
        }
        if l.heads % l.kv_heads != 0 {
            return Err(bad("llm.kv_heads", l.kv_heads, "must divide llm.heads"));
        }
        if l.head_dim % 2 != 0 {
            return Err(bad("llm.head_dim", l.head_dim, "must be even for RoPE"));
        }
        if !(l.eps.is_finite() && l.eps >= 0.0) {
            return Err(bad("llm.eps", l.eps, "must be finite and non-negative"));
        }
        if !(l.rope_theta.is_finite() && l.rope_theta > 0.0) {
            return Err(bad(
                "llm.rope_theta",
                l.rope_theta,
                "must be finite and positive",
            ));
        }
        if l.context_length > (1 << 24) {
            return Err(bad(
                "llm.context_length",
                l.context_length,
                "positions above 2^24 are not exact in f32",
            ));
        }
        mul(l.vocab, l.hidden, "token_embd")?;
        mul(mul(l.heads, l.head_dim, "attn_q")?, l.hidden, "attn_q")?;
        mul(l.ffn, l.hidden, "ffn_up")?;
        mul(
            mul(l.context_length, l.kv_heads, "KV cache")?,
            l.head_dim,
            "KV cache",
        )?;
        if let Some(id) = self
            .image_context_token_id
            .filter(|&id| id as usize >= l.vocab)
        {
            return Err(bad("image_context_token_id", id, "must be below llm.vocab"));
        }
        if let Some(v) = &self.vision {
            for (field, x) in [
                ("vision.image_size", v.image_size),
                ("vision.patch_size", v.patch_size),
                ("vision.hidden", v.hidden),
                ("vision.heads", v.heads),
                ("vision.mlp", v.mlp),
            ] {
                if x == 0 {
                    return Err(bad(field, x, "must be positive"));
                }
            }
            if v.image_size % v.patch_size != 0 {
                return Err(bad(
                    "vision.image_size",
                    v.image_size,
                    "must be a multiple of vision.patch_size",
                ));
            }
            if v.image_size > 16384 {
                return Err(bad(
                    "vision.image_size",
                    v.image_size,
                    "must be at most 16384",
                ));
            }
            if v.grid() % 2 != 0 {
                return Err(bad(
                    "vision.image_size",
                    v.image_size,
                    "needs an even patch grid for pixel shuffle",
                ));
            }
            if v.hidden % v.heads != 0 {
                return Err(bad("vision.heads", v.heads, "must divide vision.hidden"));
            }
            if v.downsample_ratio != 0.5 {
                return Err(bad(
                    "vision.downsample_ratio",
                    v.downsample_ratio,
                    "only 0.5 is supported",
                ));
            }
            if v.llm_hidden != l.hidden {
                return Err(bad(
                    "vision.llm_hidden",
                    v.llm_hidden,
                    "must equal llm.hidden",
                ));
            }
            for (field, e) in [("vision.eps", v.eps), ("vision.proj_ln_eps", v.proj_ln_eps)] {
                if !(e.is_finite() && e >= 0.0) {
                    return Err(bad(field, e, "must be finite and non-negative"));
                }
            }
            if self.num_image_tokens != v.num_image_tokens() {
                return Err(bad(
                    "num_image_tokens",
                    self.num_image_tokens,
                    "must equal (grid/2)² of the vision tower",
                ));
            }
            mul(mul(v.num_positions(), v.mlp, "ViT MLP")?, 4, "ViT MLP")?;
            mul(
                mul(v.num_positions(), v.num_positions(), "ViT attention")?,
                v.heads,
                "ViT attention",
            )?;
            mul(mul(v.hidden, 4, "projector")?, v.llm_hidden, "projector")?;
        } else if self.num_image_tokens == 0 {
            // A text-only model still needs a non-zero count to reject image features cleanly.
            return Err(bad("num_image_tokens", 0, "must be positive"));
        }
        Ok(())
    }
}

/// Strips trailing unit dims so `[C]` and `[C, 1]` compare equal (GGUF readers differ in how they report rank).
fn squeeze(dims: &[usize]) -> &[usize] {
    let mut n = dims.len();
    while n > 1 && dims[n - 1] == 1 {
        n -= 1;
    }
    &dims[..n]
}

fn fetch<S: WeightStore + ?Sized>(
    store: &S,
    name: &str,
    dims: &[usize],
) -> Result<Vec<f32>, RefError> {
    let t = store.tensor(name)?;
    if squeeze(&t.dims) != squeeze(dims) {
        return Err(RefError::TensorShape {
            name: name.into(),
            expected: dims.to_vec(),
            got: t.dims,
        });
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or(RefError::Overflow {
            what: "tensor element count",
        })?;
    if t.data.len() != expected {
        return Err(RefError::TensorData {
            name: name.into(),
            dims: t.dims,
            expected,
            got: t.data.len(),
        });
    }
    Ok(t.data)
}

struct VitLayer {
    ln1: Vec<f32>,
    qkv: Vec<f32>,
    q_norm: Vec<f32>,
    k_norm: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
    ls1: Vec<f32>,
    ln2: Vec<f32>,
    up_w: Vec<f32>,
    up_b: Vec<f32>,
    down_w: Vec<f32>,
    down_b: Vec<f32>,
    ls2: Vec<f32>,
}

struct VisionWeights {
    class_embd: Vec<f32>,
    patch_w: Vec<f32>,
    patch_b: Vec<f32>,
    pos: Vec<f32>,
    layers: Vec<VitLayer>,
    mm0_w: Vec<f32>,
    mm0_b: Vec<f32>,
    mm1_w: Vec<f32>,
    mm1_b: Vec<f32>,
    mm3_w: Vec<f32>,
    mm3_b: Vec<f32>,
}

struct LlmLayer {
    attn_norm: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    ffn_norm: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
}

struct LlmWeights {
    token_embd: Vec<f32>,
    layers: Vec<LlmLayer>,
    output_norm: Vec<f32>,
    /// `None`: tied head (no `output.weight`, as SmolLM2 and many llama.cpp GGUFs): `token_embd` is the LM head,
    /// as llama.cpp and transformers' `tie_word_embeddings` do.
    output: Option<Vec<f32>>,
}

/// Per-layer keys and values of all positions processed so far (`[len, kv_heads * head_dim]` each).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    kv_width: usize,
}

impl KvCache {
    pub fn new(config: &LlmConfig) -> Self {
        KvCache {
            k: vec![Vec::new(); config.layers],
            v: vec![Vec::new(); config.layers],
            len: 0,
            kv_width: config.kv_heads * config.head_dim,
        }
    }
    /// Positions cached so far (the next `start_pos`).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Keeps the first `len` positions (no-op when fewer are cached): a conversation's next turn reuses the
    /// positions its prompt shares with what was cached.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            layer.truncate(len * self.kv_width);
        }
        self.len = len;
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Cached keys of `layer` after RoPE, `[len, kv_heads * head_dim]`.
    pub fn keys(&self, layer: usize) -> Option<&[f32]> {
        self.k.get(layer).map(Vec::as_slice)
    }
    pub fn values(&self, layer: usize) -> Option<&[f32]> {
        self.v.get(layer).map(Vec::as_slice)
    }
}

/// One greedy decoding step: the chosen token and the raw logits it was chosen from.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyStep {
    pub token: u32,
    pub logits: Vec<f32>,
}

/// MedDr with all weights in f32 memory.
pub struct ReferenceModel {
    config: ModelConfig,
    vision: Option<VisionWeights>,
    llm: LlmWeights,
}

impl ReferenceModel {
    /// Reads and shape-checks every tensor the config implies.
    pub fn load<S: WeightStore + ?Sized>(store: &S, config: ModelConfig) -> Result<Self, RefError> {
        config.validate()?;
        let l = &config.llm;
        let (h, q_w, kv_w) = (l.hidden, l.heads * l.head_dim, l.kv_heads * l.head_dim);
        let mut layers = Vec::with_capacity(l.layers.min(1024));
        for i in 0..l.layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(LlmLayer {
                attn_norm: fetch(store, &n("attn_norm.weight"), &[h])?,
                q: fetch(store, &n("attn_q.weight"), &[h, q_w])?,
                k: fetch(store, &n("attn_k.weight"), &[h, kv_w])?,
                v: fetch(store, &n("attn_v.weight"), &[h, kv_w])?,
                o: fetch(store, &n("attn_output.weight"), &[q_w, h])?,
                ffn_norm: fetch(store, &n("ffn_norm.weight"), &[h])?,
                gate: fetch(store, &n("ffn_gate.weight"), &[h, l.ffn])?,
                up: fetch(store, &n("ffn_up.weight"), &[h, l.ffn])?,
                down: fetch(store, &n("ffn_down.weight"), &[l.ffn, h])?,
            });
        }
        let llm = LlmWeights {
            token_embd: fetch(store, "token_embd.weight", &[h, l.vocab])?,
            layers,
            output_norm: fetch(store, "output_norm.weight", &[h])?,
            output: match store.tensor("output.weight") {
                Err(RefError::MissingTensor { .. }) => None,
                _ => Some(fetch(store, "output.weight", &[h, l.vocab])?),
            },
        };
        let vision = match &config.vision {
            None => None,
            Some(v) => {
                let c = v.hidden;
                let mut layers = Vec::with_capacity(v.layers.min(1024));
                for i in 0..v.layers {
                    let n = |s: &str| format!("v.blk.{i}.{s}");
                    layers.push(VitLayer {
                        ln1: fetch(store, &n("ln1.weight"), &[c])?,
                        qkv: fetch(store, &n("attn_qkv.weight"), &[c, 3 * c])?,
                        q_norm: fetch(store, &n("attn_q_norm.weight"), &[c])?,
                        k_norm: fetch(store, &n("attn_k_norm.weight"), &[c])?,
                        out_w: fetch(store, &n("attn_out.weight"), &[c, c])?,
                        out_b: fetch(store, &n("attn_out.bias"), &[c])?,
                        ls1: fetch(store, &n("ls1"), &[c])?,
                        ln2: fetch(store, &n("ln2.weight"), &[c])?,
                        up_w: fetch(store, &n("ffn_up.weight"), &[c, v.mlp])?,
                        up_b: fetch(store, &n("ffn_up.bias"), &[v.mlp])?,
                        down_w: fetch(store, &n("ffn_down.weight"), &[v.mlp, c])?,
                        down_b: fetch(store, &n("ffn_down.bias"), &[c])?,
                        ls2: fetch(store, &n("ls2"), &[c])?,
                    });
                }
                let p = 3 * v.patch_size * v.patch_size;
                Some(VisionWeights {
                    class_embd: fetch(store, "v.class_embd", &[c])?,
                    patch_w: fetch(store, "v.patch_embd.weight", &[p, c])?,
                    patch_b: fetch(store, "v.patch_embd.bias", &[c])?,
                    pos: fetch(store, "v.position_embd.weight", &[c, v.num_positions()])?,
                    layers,
                    mm0_w: fetch(store, "mm.model.mlp.0.weight", &[4 * c])?,
                    mm0_b: fetch(store, "mm.model.mlp.0.bias", &[4 * c])?,
                    mm1_w: fetch(store, "mm.model.mlp.1.weight", &[4 * c, v.llm_hidden])?,
                    mm1_b: fetch(store, "mm.model.mlp.1.bias", &[v.llm_hidden])?,
                    mm3_w: fetch(
                        store,
                        "mm.model.mlp.3.weight",
                        &[v.llm_hidden, v.llm_hidden],
                    )?,
                    mm3_b: fetch(store, "mm.model.mlp.3.bias", &[v.llm_hidden])?,
                })
            }
        };
        Ok(ReferenceModel {
            config,
            vision,
            llm,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn vision(&self) -> Result<(&VisionConfig, &VisionWeights), RefError> {
        match (&self.config.vision, &self.vision) {
            (Some(c), Some(w)) => Ok((c, w)),
            _ => Err(RefError::NoVision),
        }
    }

    /// InternViT output `[grid² + 1, C]` (row 0 = CLS) for CHW `pixel_values` `[3, image_size, image_size]`;
    /// the last kept layer's hidden state with no final norm (`select_layer −1`).
    pub fn vit_last_hidden_state(&self, pixel_values: &[f32]) -> Result<Vec<f32>, RefError> {
        let (cfg, w) = self.vision()?;
        let s = cfg.image_size;
        let expected = 3 * s * s;
        if pixel_values.len() != expected {
            return Err(RefError::Input {
                field: "pixel_values",
                value: format!("{} values", pixel_values.len()),
                reason: format!("expected [3, {s}, {s}] = {expected} values"),
            });
        }
        let c = cfg.hidden;
        let n = cfg.num_positions();
        let patches = patch_embed(pixel_values, s, cfg.patch_size, &w.patch_w, c, &w.patch_b);
        let mut x = Vec::with_capacity(n * c);
        x.extend_from_slice(&w.class_embd);
        x.extend_from_slice(&patches);
        for (v, &p) in x.iter_mut().zip(&w.pos) {
            *v += p;
        }
        for layer in &w.layers {
            x = vit_layer(cfg, layer, &x);
        }
        Ok(x)
    }

    /// Drop CLS and pixel-shuffle a ViT hidden state: `[grid² + 1, C]` → `[num_image_tokens, 4C]`.
    pub fn shuffle_hidden_state(&self, hidden: &[f32]) -> Result<Vec<f32>, RefError> {
        let (cfg, _) = self.vision()?;
        let c = cfg.hidden;
        if hidden.len() != cfg.num_positions() * c {
            return Err(RefError::Input {
                field: "hidden",
                value: format!("{} values", hidden.len()),
                reason: format!("expected [{}, {c}]", cfg.num_positions()),
            });
        }
        Ok(pixel_shuffle_v1(&hidden[c..], cfg.grid(), c))
    }

    /// The projector `mlp1`: LayerNorm(4C) → Linear → GELU → Linear, `[tokens, 4C]` → `[tokens, H]`.
    pub fn project(&self, shuffled: &[f32]) -> Result<Vec<f32>, RefError> {
        let (cfg, w) = self.vision()?;
        let width = 4 * cfg.hidden;
        if shuffled.is_empty() || shuffled.len() % width != 0 {
            return Err(RefError::Input {
                field: "shuffled",
                value: format!("{} values", shuffled.len()),
                reason: format!("expected a positive multiple of the width {width}"),
            });
        }
        let rows = shuffled.len() / width;
        let hd = cfg.llm_hidden;
        let x = layer_norm(shuffled, rows, width, &w.mm0_w, &w.mm0_b, cfg.proj_ln_eps);
        let x = matmul_wt(&x, rows, width, &w.mm1_w, hd, Some(&w.mm1_b));
        let x = gelu_erf(&x);
        Ok(matmul_wt(&x, rows, hd, &w.mm3_w, hd, Some(&w.mm3_b)))
    }

    /// ViT then pixel shuffle: the projector's input `[num_image_tokens, 4C]`.
    pub fn pixel_shuffled(&self, pixel_values: &[f32]) -> Result<Vec<f32>, RefError> {
        self.shuffle_hidden_state(&self.vit_last_hidden_state(pixel_values)?)
    }

    /// Upstream `extract_feature`: image features `[num_image_tokens, H]` for one image.
    pub fn encode_image(&self, pixel_values: &[f32]) -> Result<Vec<f32>, RefError> {
        self.project(&self.pixel_shuffled(pixel_values)?)
    }

    /// Embedding row of one token id.
    pub fn token_embedding(&self, id: u32) -> Result<&[f32], RefError> {
        let h = self.config.llm.hidden;
        let i = id as usize;
        if i >= self.config.llm.vocab {
            return Err(RefError::TokenOutOfRange {
                id,
                position: 0,
                vocab: self.config.llm.vocab,
            });
        }
        Ok(&self.llm.token_embd[i * h..(i + 1) * h])
    }

    /// Prompt embeddings `[ids.len(), H]`, with the rows at `<IMG_CONTEXT>` positions replaced in order by
    /// `image_features` (`[images · num_image_tokens, H]`, images concatenated).
    pub fn embed_prompt(
        &self,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, RefError> {
        let l = &self.config.llm;
        let h = l.hidden;
        if ids.len() > l.context_length {
            return Err(RefError::ContextOverflow {
                needed: ids.len(),
                limit: l.context_length,
            });
        }
        let feats = image_features.unwrap_or(&[]);
        if feats.len() % h != 0 {
            return Err(RefError::Input {
                field: "image_features",
                value: format!("{} values", feats.len()),
                reason: format!("not a whole number of rows of width {h}"),
            });
        }
        let rows = feats.len() / h;
        let per_image = self.config.num_image_tokens;
        // Without an `<IMG_CONTEXT>` id (plain llama files) no position takes a feature row.
        let token_id = self.config.image_context_token_id.unwrap_or(u32::MAX);
        let found = ids.iter().filter(|&&t| t == token_id).count();
        if found != rows || rows % per_image != 0 {
            return Err(RefError::ImageTokenCount {
                found,
                rows,
                per_image,
                token_id,
            });
        }
        let mut out = Vec::with_capacity(ids.len() * h);
        let mut next_row = 0;
        for (position, &id) in ids.iter().enumerate() {
            if id as usize >= l.vocab {
                return Err(RefError::TokenOutOfRange {
                    id,
                    position,
                    vocab: l.vocab,
                });
            }
            if id == token_id {
                out.extend_from_slice(&feats[next_row * h..(next_row + 1) * h]);
                next_row += 1;
            } else {
                out.extend_from_slice(&self.llm.token_embd[id as usize * h..(id as usize + 1) * h]);
            }
        }
        Ok(out)
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(&self.config.llm)
    }

    /// Runs the decoder on `embeddings` (`[n, H]`, positions `start_pos..start_pos+n`), appends their keys and
    /// values to `cache`, and returns the logits `[vocab]` of the last position.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        embeddings: &[f32],
        start_pos: usize,
    ) -> Result<Vec<f32>, RefError> {
        let l = &self.config.llm;
        let h = l.hidden;
        if embeddings.is_empty() || embeddings.len() % h != 0 {
            return Err(RefError::Input {
                field: "embeddings",
                value: format!("{} values", embeddings.len()),
                reason: format!("expected a positive multiple of the hidden size {h}"),
            });
        }
        let kv_w = l.kv_heads * l.head_dim;
        if cache.k.len() != l.layers || cache.kv_width != kv_w {
            return Err(RefError::Input {
                field: "cache",
                value: format!("{} layers × width {}", cache.k.len(), cache.kv_width),
                reason: format!("this model needs {} layers × width {kv_w}", l.layers),
            });
        }
        if start_pos != cache.len {
            return Err(RefError::CachePosition {
                start_pos,
                cached: cache.len,
            });
        }
        let n = embeddings.len() / h;
        let total = start_pos
            .checked_add(n)
            .ok_or(RefError::Overflow { what: "positions" })?;
        if total > l.context_length {
            return Err(RefError::ContextOverflow {
                needed: total,
                limit: l.context_length,
            });
        }
        let positions: Vec<usize> = (start_pos..total).collect();
        let q_w = l.heads * l.head_dim;
        let mut x = embeddings.to_vec();
        for (i, layer) in self.llm.layers.iter().enumerate() {
            let hn = rms_norm(&x, n, h, &layer.attn_norm, l.eps);
            let q = matmul_wt(&hn, n, h, &layer.q, q_w, None);
            let k = matmul_wt(&hn, n, h, &layer.k, kv_w, None);
            let v = matmul_wt(&hn, n, h, &layer.v, kv_w, None);
            let q = rope_adjacent_pairs(&q, n, l.heads, l.head_dim, &positions, l.rope_theta);
            let k = rope_adjacent_pairs(&k, n, l.kv_heads, l.head_dim, &positions, l.rope_theta);
            cache.k[i].extend_from_slice(&k);
            cache.v[i].extend_from_slice(&v);
            let a = attention(
                &q,
                &cache.k[i],
                &cache.v[i],
                n,
                total,
                l.heads,
                l.kv_heads,
                l.head_dim,
                Some(start_pos),
            );
            let o = matmul_wt(&a, n, q_w, &layer.o, h, None);
            add_assign(&mut x, &o);
            let hn = rms_norm(&x, n, h, &layer.ffn_norm, l.eps);
            let gate = silu(&matmul_wt(&hn, n, h, &layer.gate, l.ffn, None));
            let up = matmul_wt(&hn, n, h, &layer.up, l.ffn, None);
            let act: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| g * u).collect();
            let d = matmul_wt(&act, n, l.ffn, &layer.down, h, None);
            add_assign(&mut x, &d);
        }
        cache.len = total;
        let last = rms_norm(&x[(n - 1) * h..], 1, h, &self.llm.output_norm, l.eps);
        let head = self.llm.output.as_ref().unwrap_or(&self.llm.token_embd);
        Ok(matmul_wt(&last, 1, h, head, l.vocab, None))
    }

    /// Greedy decoding with a KV cache, like upstream `generate(do_sample=False)`.
    ///
    /// Returns at most `max_new_tokens` steps; stops after emitting `eos` (included) when given. Upstream stops on
    /// the LLM's `eos_token_id` only (7 for MedDr); pass `None` to always run the full length.
    pub fn generate_greedy(
        &self,
        ids: &[u32],
        image_features: Option<&[f32]>,
        max_new_tokens: usize,
        eos: Option<u32>,
    ) -> Result<Vec<GreedyStep>, RefError> {
        let mut steps = Vec::with_capacity(max_new_tokens.min(self.config.llm.context_length));
        if max_new_tokens == 0 {
            return Ok(steps);
        }
        let emb = self.embed_prompt(ids, image_features)?;
        let mut cache = self.new_cache();
        let mut logits = self.forward(&mut cache, &emb, 0)?;
        loop {
            // Logits are never empty (vocab > 0 is validated).
            let token = argmax(&logits).unwrap_or(0) as u32;
            steps.push(GreedyStep { token, logits });
            if Some(token) == eos || steps.len() == max_new_tokens {
                return Ok(steps);
            }
            let pos = cache.len();
            let emb = self.token_embedding(token)?.to_vec();
            logits = self.forward(&mut cache, &emb, pos)?;
        }
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

/// One InternViT layer: `x += ls1 ⊙ attn(norm1(x))`, then `x += ls2 ⊙ mlp(norm2(x))`.
fn vit_layer(cfg: &VisionConfig, w: &VitLayer, x: &[f32]) -> Vec<f32> {
    let c = cfg.hidden;
    let n = x.len() / c;
    let h = rms_norm(x, n, c, &w.ln1, cfg.eps);
    let qkv = matmul_wt(&h, n, c, &w.qkv, 3 * c, None);
    let (mut q, mut k, mut v) = (
        Vec::with_capacity(n * c),
        Vec::with_capacity(n * c),
        Vec::with_capacity(n * c),
    );
    for row in qkv.chunks_exact(3 * c) {
        q.extend_from_slice(&row[..c]);
        k.extend_from_slice(&row[c..2 * c]);
        v.extend_from_slice(&row[2 * c..]);
    }
    // q_norm / k_norm span all heads together (width C), before the split into heads.
    let q = rms_norm(&q, n, c, &w.q_norm, cfg.eps);
    let k = rms_norm(&k, n, c, &w.k_norm, cfg.eps);
    let a = attention(&q, &k, &v, n, n, cfg.heads, cfg.heads, cfg.head_dim(), None);
    let o = matmul_wt(&a, n, c, &w.out_w, c, Some(&w.out_b));
    let mut x: Vec<f32> = x
        .iter()
        .zip(&o)
        .enumerate()
        .map(|(i, (xv, ov))| xv + w.ls1[i % c] * ov)
        .collect();
    let h = rms_norm(&x, n, c, &w.ln2, cfg.eps);
    let f = gelu_erf(&matmul_wt(&h, n, c, &w.up_w, cfg.mlp, Some(&w.up_b)));
    let f = matmul_wt(&f, n, cfg.mlp, &w.down_w, c, Some(&w.down_b));
    for (i, (xv, fv)) in x.iter_mut().zip(&f).enumerate() {
        *xv += w.ls2[i % c] * fv;
    }
    x
}
