//! Whole-model forward passes on the GPU: MedDr (InternViT + pixel shuffle + MLP projector + LLaMA) from our
//! GGUF, or any plain llama.cpp `llama` text GGUF (e.g. SmolLM2, tied embeddings).
//!
//! Design:
//! * Weights go from the file into GPU buffers in bounded chunks ([`GpuWeight::upload_with`]) and stay in
//!   their packed block form; [`MemoryPlan`] reports file bytes next to GPU bytes per component.
//! * Every activation buffer is allocated once at load (prefill runs in chunks of at most
//!   [`LoadOptions::prefill_chunk`] tokens), so a decode step allocates nothing.
//! * A decode step is one submit: the embedding reads the previous step's GPU argmax from the token buffer,
//!   the step ends with a new argmax plus a copy of it (4 bytes; optionally the logits) into a mapped
//!   staging buffer. Nothing else is read back.

use std::sync::Arc;

pub use meddr_config::{ConfigError, LlmConfig, VisionConfig};
use meddr_gguf::{GgufError, GgufHeader, TensorInfo};

use crate::context::{BindGroupCache, GpuContext};
use crate::error::EngineError;
use crate::kv::{KvCache, RopeTable};
use crate::ops::AttnShape;
use crate::tensor::{DType, GpuBuffer, Rows};
use crate::weight::{GpuWeight, QuantType, WeightDesc};

/// Why loading or running a model failed; messages name the tensor, key or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("GGUF: {0}")]
    Gguf(GgufError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tensor `{name}` is missing from the file")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has {got_rows} rows of {got_row_len} elements (dims {dims:?}); expected {rows} rows of {row_len}")]
    Shape {
        name: String,
        dims: Vec<u64>,
        got_rows: u64,
        got_row_len: u64,
        rows: u64,
        row_len: u64,
    },
    #[error("tensor `{name}` has block type {ty}, which the engine cannot read here")]
    TensorType { name: String, ty: String },
    #[error("prompt of {prompt} tokens + max_new_tokens {max_new} exceeds the KV cache capacity of {capacity} positions (raise LoadOptions::context_length, at most `llama.context_length`)")]
    ContextOverflow {
        prompt: u64,
        max_new: u64,
        capacity: u32,
    },
    #[error("input `{field}` = {value} is invalid: {why}")]
    Input {
        field: &'static str,
        value: u64,
        why: String,
    },
    #[error("this model has no vision tower ({0})")]
    NoVision(&'static str),
    /// The caller's check ([`GpuModel::prefill_interruptible_async`]) said stop between two prompt chunks.
    #[error("stopped by the caller during the prompt, after {done} of its {total} tokens")]
    Interrupted { done: u32, total: u32 },
}

// By hand rather than `#[from]`: the GGUF error's text is already in the message (no `source()` to print twice).
impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}

pub type ModelResult<T> = std::result::Result<T, ModelError>;

fn input(field: &'static str, value: impl TryInto<u64>, why: impl Into<String>) -> ModelError {
    ModelError::Input {
        field,
        value: value.try_into().unwrap_or(u64::MAX),
        why: why.into(),
    }
}

/// Largest [`LoadOptions::prefill_chunk`].
pub const MAX_PREFILL_CHUNK: u32 = 4096;

/// Greedy steps that may be submitted ahead of the host reading their tokens.
pub const MAX_QUEUED_STEPS: usize = 2;

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// KV cache positions; `None` = `llama.context_length`. Larger values are capped at it.
    pub context_length: Option<u32>,
    /// Tokens per prefill chunk: bounds the prefill activations (`chunk × max(H, FF)` floats).
    pub prefill_chunk: u32,
    /// Load the vision tower and projector when the file has them (false: text-only use of a MedDr file).
    pub load_vision: bool,
    /// Keep the KV cache in f32 even with shader-f16 (exactness tests; twice the memory).
    pub kv_f32: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            context_length: None,
            prefill_chunk: 512,
            load_vision: true,
            kv_f32: false,
        }
    }
}

/// Bytes per component: what the file holds and what the GPU holds (equal up to ≤ 3 bytes of padding per
/// buffer, plus f16/bf16 norm vectors widened to f32 — none in our files).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    pub vit_file: u64,
    pub vit_gpu: u64,
    pub projector_file: u64,
    pub projector_gpu: u64,
    pub llm_file: u64,
    pub llm_gpu: u64,
    pub kv_cache: u64,
    /// Prefill/decode activations, logits and staging.
    pub llm_activations: u64,
    /// ViT/projector activations (released with the ViT).
    pub vision_activations: u64,
}

impl MemoryPlan {
    pub fn total_gpu(&self) -> u64 {
        self.vit_gpu
            + self.projector_gpu
            + self.llm_gpu
            + self.kv_cache
            + self.llm_activations
            + self.vision_activations
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        write!(
            f,
            "ViT {:.2} MiB, projector {:.2} MiB, LLM {:.2} MiB, KV cache {:.2} MiB, activations {:.2} MiB (LLM) + {:.2} MiB (vision); total {:.2} MiB",
            mb(self.vit_gpu),
            mb(self.projector_gpu),
            mb(self.llm_gpu),
            mb(self.kv_cache),
            mb(self.llm_activations),
            mb(self.vision_activations),
            mb(self.total_gpu())
        )
    }
}

/// The vision tower and projector alone, for GPUs that cannot hold them and the language model at once:
/// encode the image, drop the encoder (its weights and scratch are freed), then load the language model with
/// `load_vision: false` on the same context and prefill with the features. The peak is then the larger of
/// the two parts instead of their sum ([`MemoryPlan::peak_vision_only`], [`MemoryPlan::peak_language_only`]);
/// for MedDr at Q4_K_M that is what fits a 24 GB GPU.
pub struct VisionEncoder {
    ctx: Arc<GpuContext>,
    vision: Vision,
    llm_hidden: u32,
    plan: MemoryPlan,
}

impl VisionEncoder {
    /// Loads the vision tower and projector of a model (its mmproj part) and nothing else.
    ///
    /// Errors: no vision tower in the file ([`ModelError::NoVision`]), a layout-only file, and every
    /// loading error of [`GpuModel::load`] for these tensors.
    pub fn load(ctx: Arc<GpuContext>, file: &meddr_gguf::GgufFile) -> ModelResult<VisionEncoder> {
        Self::load_from(ctx, &file.header, |off, dst: &mut [u8]| {
            file.read_at(off, dst)
        })
    }

    /// [`VisionEncoder::load`] from any byte source, as [`GpuModel::load_from`].
    pub fn load_from<E: std::fmt::Display>(
        ctx: Arc<GpuContext>,
        header: &GgufHeader,
        read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> ModelResult<VisionEncoder> {
        meddr_config::check_has_weights(header)?;
        let cfg = LlmConfig::from_header(header)?;
        let vc = VisionConfig::from_header(header, cfg.hidden)?.ok_or(ModelError::NoVision(
            "the file has no `clip.has_vision_encoder`",
        ))?;
        let mut l = Loader {
            ctx: &ctx,
            header,
            read,
            file: 0,
            gpu: 0,
        };
        let (vision, (vf, vg), (pf, pg)) = GpuModel::load_vision(&ctx, &mut l, vc, cfg.hidden)?;
        let plan = MemoryPlan {
            vit_file: vf,
            vit_gpu: vg,
            projector_file: pf,
            projector_gpu: pg,
            vision_activations: vision.scratch_bytes(),
            ..Default::default()
        };
        Ok(VisionEncoder {
            ctx,
            vision,
            llm_hidden: cfg.hidden,
            plan,
        })
    }

    /// [`GpuModel::encode_image`]: the same kernels, features on this encoder's context (they outlive it).
    pub fn encode(&self, pixel_values: &[f32]) -> ModelResult<ImageFeatures> {
        self.vision.encode(&self.ctx, self.llm_hidden, pixel_values)
    }

    /// What this encoder holds on the GPU (the vision fields of [`MemoryPlan`]).
    pub fn memory_plan(&self) -> MemoryPlan {
        self.plan
    }

    /// Reads image features back (`[n_tokens, H]` row-major).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_features(&self, f: &ImageFeatures) -> ModelResult<Vec<f32>> {
        Ok(self.ctx.read_f32_blocking(&f.buffer)?)
    }
}

/// Projected image tokens `[n_image_tokens, H]`, resident on the GPU until spliced into a prompt.
pub struct ImageFeatures {
    pub buffer: GpuBuffer,
    pub n_tokens: u32,
    pub width: u32,
}

/// What the next decode step consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepInput {
    /// The previous forward's GPU argmax, read on the GPU (greedy decoding: no host round trip needed).
    Greedy,
    /// A host-chosen token (CPU sampling, teacher forcing).
    Token(u32),
}

/// What a forward reads back besides the greedy token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readback {
    /// The argmax only: 4 bytes.
    Token,
    /// Also the full logits row (CPU sampling with temperature/top-p, log-probs, tests).
    TokenAndLogits,
}

/// Result of one forward (prefill or decode step).
#[derive(Clone, Debug)]
pub struct Step {
    /// Greedy choice (argmax of the logits, first index on ties), computed on the GPU.
    pub token: u32,
    pub logits: Option<Vec<f32>>,
    /// Position the next token will occupy (= tokens in the KV cache).
    pub position: u32,
}

struct Layer {
    attn_norm: GpuBuffer,
    q: GpuWeight,
    k: GpuWeight,
    v: GpuWeight,
    o: GpuWeight,
    ffn_norm: GpuBuffer,
    gate: GpuWeight,
    up: GpuWeight,
    down: GpuWeight,
}

struct VitLayer {
    ln1: GpuBuffer,
    qkv: GpuWeight,
    q_norm: GpuBuffer,
    k_norm: GpuBuffer,
    out: GpuWeight,
    out_b: GpuBuffer,
    ls1: GpuBuffer,
    ln2: GpuBuffer,
    up: GpuWeight,
    up_b: GpuBuffer,
    down: GpuWeight,
    down_b: GpuBuffer,
    ls2: GpuBuffer,
}

/// ViT + projector weights and their scratch buffers.
struct Vision {
    cfg: VisionConfig,
    class_embd: GpuWeight,
    pos_embd: GpuWeight,
    patch: GpuWeight,
    patch_b: GpuBuffer,
    layers: Vec<VitLayer>,
    mm0_w: GpuBuffer,
    mm0_b: GpuBuffer,
    mm1: GpuWeight,
    mm1_b: GpuBuffer,
    mm3: GpuWeight,
    mm3_b: GpuBuffer,
    // Scratch.
    pixels: GpuBuffer,
    cols: GpuBuffer,
    pos_ids: GpuBuffer,
    x: GpuBuffer,
    xn: GpuBuffer,
    qkv: GpuBuffer,
    kn: GpuBuffer,
    o: GpuBuffer,
    tmp: GpuBuffer,
    mlp: GpuBuffer,
    proj_h: GpuBuffer,
}

struct Acts {
    ids: GpuBuffer,
    x: GpuBuffer,
    xn: GpuBuffer,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    o: GpuBuffer,
    tmp: GpuBuffer,
    gate: GpuBuffer,
    up: GpuBuffer,
    logits: GpuBuffer,
    tok: GpuBuffer,
    tok_staging: wgpu::Buffer,
    /// One per step [`GpuModel::queue_greedy_step`] may have in flight.
    tok_staging_queued: [wgpu::Buffer; MAX_QUEUED_STEPS],
    logits_staging: wgpu::Buffer,
    /// Feature rows still to splice when an image straddles prefill chunks (files with vision only).
    img_scratch: Option<GpuBuffer>,
}

/// A loaded model ready for image encoding, prefill and decoding on one [`GpuContext`].
pub struct GpuModel {
    ctx: Arc<GpuContext>,
    pub config: LlmConfig,
    token_embd: GpuWeight,
    output: GpuWeight,
    output_norm: GpuBuffer,
    layers: Vec<Layer>,
    vision: Option<Vision>,
    /// The file had a vision tower (even if not loaded or already released).
    has_vision_file: bool,
    /// `(<IMG_CONTEXT> id, features per image)`; kept after [`GpuModel::release_vision`].
    image_tokens: Option<(u32, u32)>,
    kv: KvCache,
    rope: RopeTable,
    acts: Acts,
    chunk: u32,
    pos: u32,
    /// A forward has run since the last prefill, so the token buffer holds a valid argmax.
    have_argmax: bool,
    /// Staging slots of submitted greedy steps whose token has not been read yet, oldest first.
    /// Queued steps: their staging slot and submission, oldest first.
    queued: std::collections::VecDeque<(usize, wgpu::SubmissionIndex)>,
    next_slot: usize,
    bind_groups: BindGroupCache,
    plan: MemoryPlan,
    /// Bytes a decode step reads from weights (all layer matrices + LM head + norms + one embedding row).
    decode_weight_bytes: u64,
}

/// Tensor reads from the file, with the byte accounting for [`MemoryPlan`].
struct Loader<'a, R> {
    ctx: &'a GpuContext,
    header: &'a GgufHeader,
    read: R,
    file: u64,
    gpu: u64,
}

impl<'a, E: std::fmt::Display, R: FnMut(u64, &mut [u8]) -> Result<(), E>> Loader<'a, R> {
    fn info(&self, name: &str) -> ModelResult<&'a TensorInfo> {
        self.header
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })
    }

    fn check_shape(t: &TensorInfo, rows: u64, row_len: u64) -> ModelResult<()> {
        if t.n_rows() != rows || t.row_len() != row_len {
            return Err(ModelError::Shape {
                name: t.name.clone(),
                dims: t.dims.clone(),
                got_rows: t.n_rows(),
                got_row_len: t.row_len(),
                rows,
                row_len,
            });
        }
        Ok(())
    }

    fn weight_type(t: &TensorInfo) -> ModelResult<QuantType> {
        QuantType::from_ggml(t.ty).ok_or_else(|| ModelError::TensorType {
            name: t.name.clone(),
            ty: t.ty.name().to_string(),
        })
    }

    /// A matrix (or table) kept packed: `rows` rows of `row_len` elements.
    fn matrix(&mut self, name: &str, rows: u64, row_len: u64) -> ModelResult<GpuWeight> {
        let t = self.info(name)?;
        Self::check_shape(t, rows, row_len)?;
        let ty = Self::weight_type(t)?;
        let range = self.header.tensor_range(t)?;
        let desc = WeightDesc { ty, rows, row_len };
        let base = range.start;
        let read = &mut self.read;
        let w = GpuWeight::upload_with(self.ctx, desc, name, None, |off, dst: &mut [u8]| {
            read(base + off, dst)
        })?;
        self.file += range.end - range.start;
        self.gpu += w.gpu_bytes();
        Ok(w)
    }

    /// A 1-D f32 vector (norm gain, bias, layer scale); f16/bf16 are widened (tiny).
    fn vector(&mut self, name: &str, len: u64) -> ModelResult<GpuBuffer> {
        let t = self.info(name)?;
        Self::check_shape(t, 1, len)?;
        let range = self.header.tensor_range(t)?;
        let n = usize::try_from(range.end - range.start)
            .map_err(|_| input("tensor bytes", range.end - range.start, "too large"))?;
        let mut raw = vec![0u8; n];
        (self.read)(range.start, &mut raw).map_err(|e| EngineError::Read {
            offset: range.start,
            message: e.to_string(),
        })?;
        let vals: Vec<f32> = match Self::weight_type(t)? {
            QuantType::F32 => bytemuck::pod_collect_to_vec(&raw),
            QuantType::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            QuantType::BF16 => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => {
                return Err(ModelError::TensorType {
                    name: name.to_string(),
                    ty: t.ty.name().to_string(),
                })
            }
        };
        let b = self.ctx.upload_f32(&vals, name)?;
        self.file += n as u64;
        self.gpu += b.buffer.size();
        Ok(b)
    }

    fn take(&mut self) -> (u64, u64) {
        let r = (self.file, self.gpu);
        self.file = 0;
        self.gpu = 0;
        r
    }
}

fn staging(ctx: &GpuContext, bytes: u64, label: &str) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.div_ceil(4).max(1) * 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn dense(rows: u32, width: u32) -> Rows {
    Rows::dense(rows, width)
}

impl GpuModel {
    /// Loads from a memory-mapped GGUF (one file, or a language model + mmproj pair seen as one).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(
        ctx: Arc<GpuContext>,
        file: &meddr_gguf::GgufFile,
        opts: &LoadOptions,
    ) -> ModelResult<GpuModel> {
        Self::load_from(ctx, &file.header, opts, |off, dst: &mut [u8]| {
            file.read_at(off, dst)
        })
    }

    /// Loads from any byte source: `read(absolute_offset, dst)` fills `dst` (a browser `File`, a socket…).
    /// At most [`crate::UPLOAD_CHUNK_BYTES`] (or one norm vector) is requested at a time.
    pub fn load_from<E: std::fmt::Display>(
        ctx: Arc<GpuContext>,
        header: &GgufHeader,
        opts: &LoadOptions,
        read: impl FnMut(u64, &mut [u8]) -> Result<(), E>,
    ) -> ModelResult<GpuModel> {
        meddr_config::check_has_weights(header)?;
        let cfg = LlmConfig::from_header(header)?;
        let vcfg = VisionConfig::from_header(header, cfg.hidden)?;
        if opts.prefill_chunk == 0 || opts.prefill_chunk > MAX_PREFILL_CHUNK {
            return Err(input(
                "prefill_chunk",
                opts.prefill_chunk,
                format!("must be in 1..={MAX_PREFILL_CHUNK}"),
            ));
        }
        let capacity = opts
            .context_length
            .map_or(cfg.context_length, |c| c.min(cfg.context_length));
        if capacity == 0 {
            return Err(input("context_length", 0u32, "must be positive"));
        }
        let has_vision_file = vcfg.is_some();
        let image_tokens = vcfg
            .as_ref()
            .map(|v| (v.context_token_id, v.n_image_tokens));
        let mut l = Loader {
            ctx: &ctx,
            header,
            read,
            file: 0,
            gpu: 0,
        };
        let mut plan = MemoryPlan::default();

        let vision = match vcfg {
            Some(vc) if opts.load_vision => {
                let (vision, (vf, vg), (pf, pg)) = Self::load_vision(&ctx, &mut l, vc, cfg.hidden)?;
                plan.vit_file = vf;
                plan.vit_gpu = vg;
                plan.projector_file = pf;
                plan.projector_gpu = pg;
                Some(vision)
            }
            _ => None,
        };

        let (h, ff, vocab) = (
            u64::from(cfg.hidden),
            u64::from(cfg.ff),
            u64::from(cfg.vocab),
        );
        let qw = u64::from(cfg.n_heads * cfg.head_dim);
        let kvw = u64::from(cfg.n_kv_heads * cfg.head_dim);
        let token_embd = l.matrix("token_embd.weight", vocab, h)?;
        let embd_row_bytes = token_embd.row_bytes;
        let mut layers = Vec::with_capacity(cfg.layers as usize);
        for i in 0..cfg.layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: l.vector(&n("attn_norm.weight"), h)?,
                q: l.matrix(&n("attn_q.weight"), qw, h)?,
                k: l.matrix(&n("attn_k.weight"), kvw, h)?,
                v: l.matrix(&n("attn_v.weight"), kvw, h)?,
                o: l.matrix(&n("attn_output.weight"), h, qw)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), h)?,
                gate: l.matrix(&n("ffn_gate.weight"), ff, h)?,
                up: l.matrix(&n("ffn_up.weight"), ff, h)?,
                down: l.matrix(&n("ffn_down.weight"), h, ff)?,
            });
        }
        let output_norm = l.vector("output_norm.weight", h)?;
        let output = if cfg.tied_embeddings {
            token_embd.clone()
        } else {
            l.matrix("output.weight", vocab, h)?
        };
        let (lf, lg) = l.take();
        plan.llm_file = lf;
        plan.llm_gpu = lg;
        // Everything but token_embd is read in full per token; token_embd contributes one row (unless tied,
        // in which case the LM head reads it in full).
        let token_embd_bytes = token_embd.row_bytes * token_embd.rows;
        let untied_table = if cfg.tied_embeddings {
            0
        } else {
            token_embd_bytes
        };
        let decode_weight_bytes = lf - untied_table + embd_row_bytes;

        let kv = if opts.kv_f32 {
            let len = u64::from(capacity) * kvw;
            let mut k = Vec::new();
            let mut v = Vec::new();
            for _ in 0..cfg.layers {
                k.push(ctx.zeros(DType::F32, len, "kv.k")?);
                v.push(ctx.zeros(DType::F32, len, "kv.v")?);
            }
            KvCache {
                k,
                v,
                capacity,
                width: kvw as u32,
            }
        } else {
            KvCache::new(&ctx, cfg.layers, capacity, kvw as u32)?
        };
        plan.kv_cache = kv.k.iter().chain(&kv.v).map(|b| b.buffer.size()).sum();
        let rope = RopeTable::new(&ctx, capacity, cfg.head_dim, cfg.rope_theta)?;

        let t = u64::from(opts.prefill_chunk);
        let f32z = |len: u64, label: &str| ctx.zeros(DType::F32, len, label);
        let acts = Acts {
            ids: ctx.zeros(DType::U32, t, "ids")?,
            x: f32z(t * h, "x")?,
            xn: f32z(t * h, "xn")?,
            q: f32z(t * qw, "q")?,
            k: f32z(t * kvw, "k")?,
            v: f32z(t * kvw, "v")?,
            o: f32z(t * qw, "o")?,
            tmp: f32z(t * h, "tmp")?,
            gate: f32z(t * ff, "gate")?,
            up: f32z(t * ff, "up")?,
            logits: f32z(vocab, "logits")?,
            tok: ctx.zeros(DType::U32, 4, "tok")?,
            tok_staging: staging(&ctx, 4, "tok_staging"),
            tok_staging_queued: [
                staging(&ctx, 4, "tok_staging_queued0"),
                staging(&ctx, 4, "tok_staging_queued1"),
            ],
            logits_staging: staging(&ctx, vocab * 4, "logits_staging"),
            img_scratch: match image_tokens {
                Some((_, n)) => Some(f32z(u64::from(n) * h, "img_scratch")?),
                None => None,
            },
        };
        plan.llm_activations = [
            &acts.ids,
            &acts.x,
            &acts.xn,
            &acts.q,
            &acts.k,
            &acts.v,
            &acts.o,
            &acts.tmp,
            &acts.gate,
            &acts.up,
            &acts.logits,
            &acts.tok,
        ]
        .iter()
        .map(|b| b.buffer.size())
        .sum::<u64>()
            + acts.img_scratch.as_ref().map_or(0, |b| b.buffer.size())
            + acts.tok_staging.size()
            + acts
                .tok_staging_queued
                .iter()
                .map(|b| b.size())
                .sum::<u64>()
            + acts.logits_staging.size()
            + rope.buffer.buffer.size();
        plan.vision_activations = vision.as_ref().map_or(0, Vision::scratch_bytes);

        Ok(GpuModel {
            ctx,
            config: cfg,
            token_embd,
            output,
            output_norm,
            layers,
            vision,
            has_vision_file,
            image_tokens,
            kv,
            rope,
            acts,
            chunk: opts.prefill_chunk,
            pos: 0,
            have_argmax: false,
            queued: std::collections::VecDeque::new(),
            next_slot: 0,
            bind_groups: BindGroupCache::default(),
            plan,
            decode_weight_bytes,
        })
    }

    #[allow(clippy::type_complexity)]
    fn load_vision<E: std::fmt::Display, R: FnMut(u64, &mut [u8]) -> Result<(), E>>(
        ctx: &GpuContext,
        l: &mut Loader<'_, R>,
        cfg: VisionConfig,
        llm_hidden: u32,
    ) -> ModelResult<(Vision, (u64, u64), (u64, u64))> {
        let c = u64::from(cfg.hidden);
        let f = u64::from(cfg.ff);
        let p = u64::from(cfg.patch);
        let npos = u64::from(cfg.n_positions());
        let class_embd = l.matrix("v.class_embd", 1, c)?;
        let pos_embd = l.matrix("v.position_embd.weight", npos, c)?;
        let patch = l.matrix("v.patch_embd.weight", c, 3 * p * p)?;
        let patch_b = l.vector("v.patch_embd.bias", c)?;
        let mut layers = Vec::with_capacity(cfg.layers as usize);
        for i in 0..cfg.layers {
            let n = |s: &str| format!("v.blk.{i}.{s}");
            layers.push(VitLayer {
                ln1: l.vector(&n("ln1.weight"), c)?,
                qkv: l.matrix(&n("attn_qkv.weight"), 3 * c, c)?,
                q_norm: l.vector(&n("attn_q_norm.weight"), c)?,
                k_norm: l.vector(&n("attn_k_norm.weight"), c)?,
                out: l.matrix(&n("attn_out.weight"), c, c)?,
                out_b: l.vector(&n("attn_out.bias"), c)?,
                ls1: l.vector(&n("ls1"), c)?,
                ln2: l.vector(&n("ln2.weight"), c)?,
                up: l.matrix(&n("ffn_up.weight"), f, c)?,
                up_b: l.vector(&n("ffn_up.bias"), f)?,
                down: l.matrix(&n("ffn_down.weight"), c, f)?,
                down_b: l.vector(&n("ffn_down.bias"), c)?,
                ls2: l.vector(&n("ls2"), c)?,
            });
        }
        let vit = l.take();
        let h = u64::from(llm_hidden);
        let mm0_w = l.vector("mm.model.mlp.0.weight", 4 * c)?;
        let mm0_b = l.vector("mm.model.mlp.0.bias", 4 * c)?;
        let mm1 = l.matrix("mm.model.mlp.1.weight", h, 4 * c)?;
        let mm1_b = l.vector("mm.model.mlp.1.bias", h)?;
        let mm3 = l.matrix("mm.model.mlp.3.weight", h, h)?;
        let mm3_b = l.vector("mm.model.mlp.3.bias", h)?;
        let proj = l.take();

        let n = npos;
        let f32z = |len: u64, label: &str| ctx.zeros(DType::F32, len, label);
        let pix = cfg.pixel_len() as u64;
        let pos_ids: Vec<u32> = (0..cfg.n_positions()).collect();
        let nimg = u64::from(cfg.n_image_tokens);
        let v = Vision {
            class_embd,
            pos_embd,
            patch,
            patch_b,
            layers,
            mm0_w,
            mm0_b,
            mm1,
            mm1_b,
            mm3,
            mm3_b,
            pixels: f32z(pix, "v.pixels")?,
            cols: f32z(pix, "v.cols")?,
            pos_ids: ctx.upload_u32(&pos_ids, "v.pos_ids")?,
            x: f32z(n * c, "v.x")?,
            xn: f32z(n * c, "v.xn")?,
            qkv: f32z(n * 3 * c, "v.qkv")?,
            kn: f32z(n * c, "v.kn")?,
            o: f32z(n * c, "v.o")?,
            tmp: f32z(n * c, "v.tmp")?,
            mlp: f32z(n * f, "v.mlp")?,
            proj_h: f32z(nimg * h, "v.proj_h")?,
            cfg,
        };
        Ok((v, vit, proj))
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn vision_config(&self) -> Option<&VisionConfig> {
        self.vision.as_ref().map(|v| &v.cfg)
    }

    /// KV cache positions.
    pub fn capacity(&self) -> u32 {
        self.kv.capacity
    }

    /// Tokens currently in the KV cache.
    pub fn position(&self) -> u32 {
        self.pos
    }

    pub fn memory_plan(&self) -> MemoryPlan {
        self.plan
    }

    /// Weight bytes one decode step streams (the bandwidth roofline's numerator).
    pub fn decode_weight_bytes(&self) -> u64 {
        self.decode_weight_bytes
    }

    /// Drops the ViT and projector (weights and scratch) once images are encoded: MedDr's ViT is 3–12 GB.
    /// [`ImageFeatures`] already produced stay valid.
    pub fn release_vision(&mut self) {
        self.vision = None;
        self.plan.vit_gpu = 0;
        self.plan.projector_gpu = 0;
        self.plan.vision_activations = 0;
    }

    fn vision(&self, what: &'static str) -> ModelResult<&Vision> {
        self.vision
            .as_ref()
            .ok_or(ModelError::NoVision(if self.has_vision_file {
                "released or not loaded"
            } else {
                what
            }))
    }

    /// InternViT + pixel shuffle + projector on `pixel_values` (`[3, S, S]`, normalised CHW), one submit.
    pub fn encode_image(&mut self, pixel_values: &[f32]) -> ModelResult<ImageFeatures> {
        let v = self.vision("the file has no `clip.has_vision_encoder`")?;
        v.encode(&self.ctx, self.config.hidden, pixel_values)
    }

    /// Reads image features back (`[n_tokens, H]` row-major) for tests and debugging.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_image_features(&self, f: &ImageFeatures) -> ModelResult<Vec<f32>> {
        Ok(self.ctx.read_f32_blocking(&f.buffer)?)
    }

    /// Checks that `prompt_len + max_new_tokens` positions fit the KV cache (before any work is done).
    pub fn check_capacity(&self, prompt_len: usize, max_new_tokens: u32) -> ModelResult<()> {
        let need = (prompt_len as u64).saturating_add(u64::from(max_new_tokens));
        if need > u64::from(self.kv.capacity) {
            return Err(ModelError::ContextOverflow {
                prompt: prompt_len as u64,
                max_new: u64::from(max_new_tokens),
                capacity: self.kv.capacity,
            });
        }
        Ok(())
    }

    /// Runs the prompt from position 0 (resetting the cache), chunk by chunk; the last chunk's submit also
    /// computes the greedy token and reads it back (plus the logits with [`Readback::TokenAndLogits`]).
    /// With `image`, the k-th `<IMG_CONTEXT>` id gets the k-th feature row; their count must match.
    pub async fn prefill_async(
        &mut self,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
    ) -> ModelResult<Step> {
        self.prefill_from_async(0, ids, image, max_new_tokens, read)
            .await
    }

    /// [`GpuModel::prefill_async`] after the first `keep` cached positions: they stay (the caller vouches that
    /// they hold the ids it means: a conversation's earlier turns), and `ids` are run from position `keep`.
    /// `keep` must not exceed the positions already processed ([`GpuModel::position`] less queued steps).
    pub async fn prefill_from_async(
        &mut self,
        keep: u32,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
    ) -> ModelResult<Step> {
        self.prefill_interruptible_async(keep, ids, image, max_new_tokens, read, &|| false)
            .await
    }

    /// [`GpuModel::prefill_from_async`] that asks `interrupted()` before the prompt and after each chunk
    /// ([`LoadOptions::prefill_chunk`] tokens) has run, and gives up with [`ModelError::Interrupted`] when it
    /// says so: a server whose client left, or a page whose Stop was pressed, does not wait for the rest of
    /// a long prompt (minutes for MedDr on a CPU adapter). Chunk k + 1 is submitted before chunk k is waited
    /// for, so checking costs the GPU nothing; a one-chunk prompt is checked only before it starts. After an
    /// interruption the cache holds an unknown prefix of `ids`: the next prefill must not keep any of it
    /// (the runtime's `Conversation` forgets its cached ids before every run and records them only after
    /// a finished one).
    pub async fn prefill_interruptible_async(
        &mut self,
        keep: u32,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
        interrupted: &dyn Fn() -> bool,
    ) -> ModelResult<Step> {
        if ids.is_empty() {
            return Err(input("ids.len", 0u32, "the prompt must not be empty"));
        }
        let confirmed = self.pos - self.queued.len() as u32;
        if keep > confirmed {
            return Err(input(
                "keep",
                keep,
                format!("only {confirmed} positions are cached; a prefix longer than that cannot be kept"),
            ));
        }
        self.check_capacity(keep as usize + ids.len(), max_new_tokens)?;
        if let Some(i) = ids.iter().position(|&t| t >= self.config.vocab) {
            return Err(input(
                "ids",
                ids[i],
                format!(
                    "token at index {i} is outside the vocabulary of {}",
                    self.config.vocab
                ),
            ));
        }
        let img_id = match image {
            Some(f) => {
                let (id, n) = self.image_tokens.ok_or(ModelError::NoVision(
                    "an image was passed to a text-only model",
                ))?;
                if f.width != self.config.hidden || f.n_tokens != n {
                    return Err(input(
                        "image.n_tokens",
                        f.n_tokens,
                        format!(
                            "features are [{}, {}]; this model splices [{n}, {}]",
                            f.n_tokens, f.width, self.config.hidden
                        ),
                    ));
                }
                let count = ids.iter().filter(|&&t| t == id).count();
                if count != n as usize {
                    return Err(input(
                        "ids",
                        count,
                        format!("holds that many <IMG_CONTEXT> ({id}) tokens; the image has {n} features"),
                    ));
                }
                Some((f, id))
            }
            None => None,
        };
        let total = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        if interrupted() {
            return Err(ModelError::Interrupted { done: 0, total });
        }
        self.queued.clear();
        self.pos = keep;
        self.have_argmax = false;
        let ctx = self.ctx.clone();
        let mut consumed = 0u32;
        let chunks: Vec<&[u32]> = ids.chunks(self.chunk as usize).collect();
        let n_chunks = chunks.len();
        // The chunk before the one just submitted, when a check follows it.
        let mut previous: Option<(crate::context::WorkDone, u32)> = None;
        for (ci, chunk) in chunks.into_iter().enumerate() {
            let t = chunk.len() as u32;
            ctx.write_u32(&self.acts.ids, 0, chunk)?;
            let mut enc = ctx.encoder();
            let splice = match img_id {
                Some((f, id)) => {
                    let here = chunk.iter().filter(|&&x| x == id).count() as u32;
                    let before = consumed;
                    consumed += here;
                    if here == 0 {
                        None
                    } else if before == 0 {
                        Some((&f.buffer, f.n_tokens, id))
                    } else {
                        // embed() numbers image tokens from the chunk start: move the rest to row 0.
                        let scratch = self.acts.img_scratch.as_ref().ok_or(
                            ModelError::NoVision("an image was passed to a text-only model"),
                        )?;
                        let w = u64::from(f.width) * 4;
                        let rest = f.n_tokens - before;
                        enc.copy_buffer_to_buffer(
                            &f.buffer.buffer,
                            u64::from(before) * w,
                            &scratch.buffer,
                            0,
                            u64::from(rest) * w,
                        );
                        Some((scratch, rest, id))
                    }
                }
                None => None,
            };
            ctx.embed(
                &mut enc,
                &self.token_embd,
                &self.acts.ids,
                t,
                splice,
                &self.acts.x,
            )?;
            let last = ci + 1 == n_chunks;
            self.record_layers(&mut enc, t, self.pos, last)?;
            if last {
                self.record_readback(&mut enc, read);
            }
            let index = ctx.submit(enc);
            self.pos += t;
            if let Some((done, ran)) = previous.take() {
                ctx.wait_done(done).await?;
                if interrupted() {
                    return Err(ModelError::Interrupted { done: ran, total });
                }
            }
            if !last {
                previous = Some((ctx.work_done(index), self.pos - keep));
            }
        }
        self.have_argmax = true;
        self.finish_step(read).await
    }

    /// One token: embeds `input` (the GPU's last argmax, or a host token), runs every layer at the next
    /// position, and reads back the new argmax (4 bytes) and optionally the logits — one submit.
    pub async fn decode_step_async(
        &mut self,
        input_tok: StepInput,
        read: Readback,
    ) -> ModelResult<Step> {
        self.drop_queued();
        if self.pos == 0 {
            return Err(input("position", 0u32, "decode_step needs a prefill first"));
        }
        self.check_kv_room()?;
        let ctx = self.ctx.clone();
        match input_tok {
            StepInput::Greedy if !self.have_argmax => {
                return Err(input("input", 0u32, "no GPU argmax to feed back"));
            }
            StepInput::Greedy => {}
            StepInput::Token(t) => {
                if t >= self.config.vocab {
                    return Err(input(
                        "input",
                        t,
                        format!("is outside the vocabulary of {}", self.config.vocab),
                    ));
                }
                ctx.write_u32(&self.acts.tok, 0, &[t])?;
            }
        }
        let mut enc = ctx.encoder();
        self.record_cached(|m| -> ModelResult<()> {
            m.record_step(&mut enc)?;
            m.record_readback(&mut enc, read);
            Ok(())
        })?;
        ctx.submit(enc);
        self.pos += 1;
        // The step left its own argmax in `acts.tok` (over the host token it read): queued greedy steps
        // may follow it.
        self.have_argmax = true;
        self.finish_step(read).await
    }

    /// Greedy decoding without waiting on the host: records and submits the next step (the GPU's last
    /// argmax in, its argmax out) and returns at once; [`GpuModel::read_queued_step`] reads the tokens in
    /// order. Queuing a step before reading the previous one hides the readback latency (a browser resolves
    /// `mapAsync` only on a later turn of its event loop) behind the next step's compute. At most 2 steps
    /// are in flight.
    pub fn queue_greedy_step(&mut self) -> ModelResult<()> {
        if self.pos == 0 || !self.have_argmax {
            return Err(input(
                "position",
                self.pos,
                "queue_greedy_step needs a prefill or a decode step since the last dropped queue",
            ));
        }
        if self.queued.len() >= MAX_QUEUED_STEPS {
            return Err(input(
                "queued",
                self.queued.len(),
                format!("at most {MAX_QUEUED_STEPS} steps can be in flight; read one first"),
            ));
        }
        self.check_kv_room()?;
        let ctx = self.ctx.clone();
        let mut enc = ctx.encoder();
        self.record_cached(|m| m.record_step(&mut enc))?;
        let slot = self.next_slot;
        enc.copy_buffer_to_buffer(
            &self.acts.tok.buffer,
            0,
            &self.acts.tok_staging_queued[slot],
            0,
            4,
        );
        let index = ctx.submit(enc);
        self.next_slot = (slot + 1) % MAX_QUEUED_STEPS;
        self.queued.push_back((slot, index));
        self.pos += 1;
        Ok(())
    }

    /// The token of the oldest step queued by [`GpuModel::queue_greedy_step`].
    pub async fn read_queued_step(&mut self) -> ModelResult<Step> {
        let (slot, index) = self
            .queued
            .front()
            .cloned()
            .ok_or_else(|| input("queued", 0u32, "no step is in flight"))?;
        let tok = self
            .ctx
            .map_read_after(&self.acts.tok_staging_queued[slot], 4, Some(index))
            .await?;
        self.queued.pop_front();
        Ok(Step {
            token: u32::from_le_bytes([tok[0], tok[1], tok[2], tok[3]]),
            logits: None,
            position: self.pos - self.queued.len() as u32,
        })
    }

    /// Forgets queued steps whose tokens were not read (generation stopped): the position goes back to the
    /// last token read, and the next step needs that token from the host ([`StepInput::Token`]) since the
    /// GPU's argmax now belongs to a dropped step.
    pub fn drop_queued(&mut self) {
        let n = self.queued.len() as u32;
        if n > 0 {
            self.queued.clear();
            self.pos -= n;
            self.have_argmax = false;
        }
    }

    /// Steps queued and not yet read.
    pub fn queued_steps(&self) -> usize {
        self.queued.len()
    }

    /// A decode step writes one KV position: refuse it when the cache is full.
    fn check_kv_room(&self) -> ModelResult<()> {
        if self.pos >= self.kv.capacity {
            return Err(ModelError::ContextOverflow {
                prompt: u64::from(self.pos),
                max_new: 1,
                capacity: self.kv.capacity,
            });
        }
        Ok(())
    }

    /// One decode step's compute: embed `acts.tok`, every layer at the current position, logits and argmax.
    fn record_step(&self, enc: &mut crate::context::Recorder) -> ModelResult<()> {
        self.ctx
            .embed(enc, &self.token_embd, &self.acts.tok, 1, None, &self.acts.x)?;
        self.record_layers(enc, 1, self.pos, true)
    }

    /// Records with this model's bind-group cache: decode steps repeat the same bindings every token.
    fn record_cached<T>(&mut self, record: impl FnOnce(&Self) -> T) -> T {
        let mut cache = std::mem::take(&mut self.bind_groups);
        let ctx = self.ctx.clone();
        let out = ctx.with_bind_group_cache(&mut cache, || record(self));
        self.bind_groups = cache;
        out
    }

    /// Bind groups cached for decode steps (for tests and diagnostics).
    pub fn cached_bind_groups(&self) -> usize {
        self.bind_groups.len()
    }

    fn record_readback(&self, enc: &mut crate::context::Recorder, read: Readback) {
        enc.copy_buffer_to_buffer(&self.acts.tok.buffer, 0, &self.acts.tok_staging, 0, 4);
        if read == Readback::TokenAndLogits {
            let bytes = u64::from(self.config.vocab) * 4;
            enc.copy_buffer_to_buffer(
                &self.acts.logits.buffer,
                0,
                &self.acts.logits_staging,
                0,
                bytes,
            );
        }
    }

    async fn finish_step(&mut self, read: Readback) -> ModelResult<Step> {
        let tok = self.ctx.map_read(&self.acts.tok_staging, 4).await?;
        let token = u32::from_le_bytes([tok[0], tok[1], tok[2], tok[3]]);
        let logits = if read == Readback::TokenAndLogits {
            let b = self
                .ctx
                .map_read(&self.acts.logits_staging, u64::from(self.config.vocab) * 4)
                .await?;
            Some(bytemuck::pod_collect_to_vec(&b))
        } else {
            None
        };
        Ok(Step {
            token,
            logits,
            position: self.pos,
        })
    }

    /// Every decoder layer over `t` rows of `acts.x` at positions `pos ..`; with `head`, the final norm, LM
    /// head and argmax of the last row.
    fn record_layers(
        &self,
        e: &mut crate::context::Recorder,
        t: u32,
        pos: u32,
        head: bool,
    ) -> ModelResult<()> {
        let ctx = &*self.ctx;
        let c = &self.config;
        let a = &self.acts;
        let h = c.hidden;
        let qw = c.n_heads * c.head_dim;
        let kvw = c.n_kv_heads * c.head_dim;
        let dh = dense(t, h);
        let shape = AttnShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            causal_start: Some(pos),
        };
        for (i, ly) in self.layers.iter().enumerate() {
            ctx.rms_norm(e, &a.x, dh, &ly.attn_norm, c.eps, &a.xn, dh)?;
            ctx.linear(e, &ly.q, &a.xn, dh, None, &a.q, dense(t, qw))?;
            ctx.linear(e, &ly.k, &a.xn, dh, None, &a.k, dense(t, kvw))?;
            ctx.linear(e, &ly.v, &a.xn, dh, None, &a.v, dense(t, kvw))?;
            ctx.rope(e, &a.q, dense(t, qw), c.n_heads, pos, &self.rope)?;
            ctx.rope(e, &a.k, dense(t, kvw), c.n_kv_heads, pos, &self.rope)?;
            ctx.kv_write(e, &a.k, dense(t, kvw), &self.kv.k[i], pos)?;
            ctx.kv_write(e, &a.v, dense(t, kvw), &self.kv.v[i], pos)?;
            let kvv = self.kv.view(pos + t);
            ctx.attention(
                e,
                shape,
                &a.q,
                dense(t, qw),
                &self.kv.k[i],
                kvv,
                &self.kv.v[i],
                kvv,
                &a.o,
                dense(t, qw),
            )?;
            ctx.linear(e, &ly.o, &a.o, dense(t, qw), None, &a.tmp, dh)?;
            ctx.add_scaled(e, &a.x, &a.tmp, None, t, h)?;
            ctx.rms_norm(e, &a.x, dh, &ly.ffn_norm, c.eps, &a.xn, dh)?;
            ctx.linear(e, &ly.gate, &a.xn, dh, None, &a.gate, dense(t, c.ff))?;
            ctx.linear(e, &ly.up, &a.xn, dh, None, &a.up, dense(t, c.ff))?;
            ctx.silu_mul(e, &a.gate, &a.up, u64::from(t) * u64::from(c.ff))?;
            ctx.linear(e, &ly.down, &a.gate, dense(t, c.ff), None, &a.tmp, dh)?;
            ctx.add_scaled(e, &a.x, &a.tmp, None, t, h)?;
        }
        if head {
            let last = Rows {
                rows: 1,
                width: h,
                offset: (t - 1) * h,
                stride: h,
            };
            ctx.rms_norm(e, &a.x, last, &self.output_norm, c.eps, &a.xn, dense(1, h))?;
            ctx.linear(
                e,
                &self.output,
                &a.xn,
                dense(1, h),
                None,
                &a.logits,
                dense(1, c.vocab),
            )?;
            ctx.argmax(e, &a.logits, 0, c.vocab, &a.tok, 0)?;
        }
        Ok(())
    }

    /// Blocking [`GpuModel::prefill_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill(
        &mut self,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
    ) -> ModelResult<Step> {
        pollster::block_on(self.prefill_async(ids, image, max_new_tokens, read))
    }

    /// Blocking [`GpuModel::prefill_from_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_from(
        &mut self,
        keep: u32,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
    ) -> ModelResult<Step> {
        pollster::block_on(self.prefill_from_async(keep, ids, image, max_new_tokens, read))
    }

    /// Blocking [`GpuModel::prefill_interruptible_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn prefill_interruptible(
        &mut self,
        keep: u32,
        ids: &[u32],
        image: Option<&ImageFeatures>,
        max_new_tokens: u32,
        read: Readback,
        interrupted: &dyn Fn() -> bool,
    ) -> ModelResult<Step> {
        pollster::block_on(self.prefill_interruptible_async(
            keep,
            ids,
            image,
            max_new_tokens,
            read,
            interrupted,
        ))
    }

    /// Blocking [`GpuModel::read_queued_step`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_queued(&mut self) -> ModelResult<Step> {
        pollster::block_on(self.read_queued_step())
    }

    /// Blocking [`GpuModel::decode_step_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn decode_step(&mut self, input_tok: StepInput, read: Readback) -> ModelResult<Step> {
        pollster::block_on(self.decode_step_async(input_tok, read))
    }
}

impl Vision {
    /// InternViT + pixel shuffle + projector on `pixel_values` (`[3, S, S]`, normalised CHW) into features of
    /// the language model's width `h`, one submit.
    fn encode(&self, ctx: &GpuContext, h: u32, pixel_values: &[f32]) -> ModelResult<ImageFeatures> {
        let v = self;
        let cfg = &v.cfg;
        if pixel_values.len() != cfg.pixel_len() {
            return Err(input(
                "pixel_values.len",
                pixel_values.len(),
                format!(
                    "must be 3 × {0} × {0} = {1}",
                    cfg.image_size,
                    cfg.pixel_len()
                ),
            ));
        }
        if let Some(i) = pixel_values.iter().position(|x| !x.is_finite()) {
            return Err(input("pixel_values index", i, "is not finite"));
        }
        let c = cfg.hidden;
        let grid = cfg.grid();
        let np = grid * grid;
        let n = np + 1;
        let hd = c / cfg.n_heads;
        let nimg = cfg.n_image_tokens;
        let features = ctx.zeros(DType::F32, u64::from(nimg) * u64::from(h), "image_features")?;
        ctx.write_f32(&v.pixels, 0, pixel_values)?;
        let mut enc = ctx.encoder();
        let e = &mut enc;
        // Patch embedding = im2col + matmul; CLS and position rows dequantized from their packed tables.
        ctx.im2col(e, &v.pixels, cfg.image_size, cfg.patch, &v.cols)?;
        let pl = 3 * cfg.patch * cfg.patch;
        ctx.linear(
            e,
            &v.patch,
            &v.cols,
            dense(np, pl),
            Some(&v.patch_b),
            &v.o,
            dense(np, c),
        )?;
        ctx.embed(e, &v.class_embd, &v.pos_ids, 1, None, &v.kn)?;
        ctx.embed(e, &v.pos_embd, &v.pos_ids, n, None, &v.qkv)?;
        ctx.cls_pos(e, &v.o, &v.kn, &v.qkv, np, c, &v.x)?;
        let d = dense(n, c);
        let shape = AttnShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_heads,
            head_dim: hd,
            causal_start: None,
        };
        for ly in &v.layers {
            ctx.rms_norm(e, &v.x, d, &ly.ln1, cfg.eps, &v.xn, d)?;
            ctx.linear(e, &ly.qkv, &v.xn, d, None, &v.qkv, dense(n, 3 * c))?;
            // q_norm/k_norm span all heads (width C), read in place from the fused qkv rows.
            ctx.rms_norm(
                e,
                &v.qkv,
                Rows::columns(n, 3 * c, 0, c),
                &ly.q_norm,
                cfg.eps,
                &v.xn,
                d,
            )?;
            ctx.rms_norm(
                e,
                &v.qkv,
                Rows::columns(n, 3 * c, c, c),
                &ly.k_norm,
                cfg.eps,
                &v.kn,
                d,
            )?;
            ctx.attention(
                e,
                shape,
                &v.xn,
                d,
                &v.kn,
                d,
                &v.qkv,
                Rows::columns(n, 3 * c, 2 * c, c),
                &v.o,
                d,
            )?;
            ctx.linear(e, &ly.out, &v.o, d, Some(&ly.out_b), &v.tmp, d)?;
            ctx.add_scaled(e, &v.x, &v.tmp, Some(&ly.ls1), n, c)?;
            ctx.rms_norm(e, &v.x, d, &ly.ln2, cfg.eps, &v.xn, d)?;
            ctx.linear(
                e,
                &ly.up,
                &v.xn,
                d,
                Some(&ly.up_b),
                &v.mlp,
                dense(n, cfg.ff),
            )?;
            ctx.gelu(e, &v.mlp, u64::from(n) * u64::from(cfg.ff))?;
            ctx.linear(
                e,
                &ly.down,
                &v.mlp,
                dense(n, cfg.ff),
                Some(&ly.down_b),
                &v.tmp,
                d,
            )?;
            ctx.add_scaled(e, &v.x, &v.tmp, Some(&ly.ls2), n, c)?;
        }
        ctx.pixel_shuffle_v1(e, &v.x, grid, c, 1, &v.o)?;
        let d4 = dense(nimg, 4 * c);
        ctx.layer_norm(e, &v.o, d4, &v.mm0_w, &v.mm0_b, cfg.proj_eps, &v.tmp, d4)?;
        ctx.linear(
            e,
            &v.mm1,
            &v.tmp,
            d4,
            Some(&v.mm1_b),
            &v.proj_h,
            dense(nimg, h),
        )?;
        ctx.gelu(e, &v.proj_h, u64::from(nimg) * u64::from(h))?;
        ctx.linear(
            e,
            &v.mm3,
            &v.proj_h,
            dense(nimg, h),
            Some(&v.mm3_b),
            &features,
            dense(nimg, h),
        )?;
        ctx.submit(enc);
        Ok(ImageFeatures {
            buffer: features,
            n_tokens: nimg,
            width: h,
        })
    }

    fn scratch_bytes(&self) -> u64 {
        [
            &self.pixels,
            &self.cols,
            &self.pos_ids,
            &self.x,
            &self.xn,
            &self.qkv,
            &self.kn,
            &self.o,
            &self.tmp,
            &self.mlp,
            &self.proj_h,
        ]
        .iter()
        .map(|b| b.buffer.size())
        .sum()
    }
}
