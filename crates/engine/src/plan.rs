//! GPU memory of a model from its GGUF header alone: what [`GpuModel::load`](crate::GpuModel::load) will
//! allocate, component by component, without a GPU or the weights (a layout-only file of MedDr's full 40B
//! shape, `meddr-quantize --synthetic 40b --layout-only`, is enough). `meddr info` prints it; a test holds it
//! equal to what a real load allocates.
//!
//! The sizes follow the loader's allocations: a matrix in its packed form split by whole rows at the binding
//! limit, each part padded to 4 bytes ([`crate::GpuWeight::upload_with`]); 1-D tensors widened to f32; the KV
//! cache at the device's KV type ([`crate::GpuContext::kv_dtype`]); the activation buffers of
//! `GpuModel::load_from` and the vision scratch of `load_vision`.

use meddr_gguf::GgufHeader;

use crate::model::{LoadOptions, MemoryPlan, ModelError, ModelResult, MAX_QUEUED_STEPS};
use crate::weight::{QuantType, WeightDesc};
use crate::{LlmConfig, VisionConfig};

/// What of the device the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct PlanDevice {
    /// The KV cache is f16 (shader-f16 present and `kv_f32` not asked for).
    pub f16: bool,
    /// Largest storage binding ([`crate::GpuContext::max_binding_bytes`]): larger matrices are split.
    pub max_binding_bytes: u64,
}

impl PlanDevice {
    /// A discrete GPU's usual limits: shader-f16, 2 GiB bindings (4 GiB minus 4 bytes where allowed:
    /// padding differs by at most 3 bytes per extra part).
    pub const TYPICAL_GPU: PlanDevice = PlanDevice {
        f16: true,
        max_binding_bytes: 2 << 30,
    };
}

/// A buffer of `len` elements of `elem` bytes, as `GpuContext::zeros` sizes it.
fn buffer(len: u64, elem: u64) -> u64 {
    (len.saturating_mul(elem).div_ceil(4) * 4).max(4)
}

/// A readback staging buffer of `bytes`, as the model's `staging` sizes it.
fn staging(bytes: u64) -> u64 {
    bytes.div_ceil(4).max(1) * 4
}

/// GPU bytes of one tensor as the loader keeps it.
fn tensor_gpu_bytes(
    header: &GgufHeader,
    t: &meddr_gguf::TensorInfo,
    limit: u64,
) -> ModelResult<(u64, u64)> {
    let range = header.tensor_range(t)?;
    let file = range.end - range.start;
    // The class embedding is 1-D but kept packed like a table; every other 1-D tensor (norm gains, biases,
    // layer scales) is widened to f32.
    if t.dims.len() <= 1 && t.name != "v.class_embd" {
        return Ok((file, buffer(t.n_elements(), 4)));
    }
    let ty = QuantType::from_ggml(t.ty).ok_or_else(|| ModelError::TensorType {
        name: t.name.clone(),
        ty: t.ty.name().to_string(),
    })?;
    let desc = WeightDesc {
        ty,
        rows: t.n_rows(),
        row_len: t.row_len(),
    };
    Ok((file, desc.gpu_bytes(limit)?))
}

/// LLM activations, logits, token and readback buffers and the RoPE table, as `GpuModel::load_from`
/// allocates them for `chunk`-token prefill chunks and `capacity` positions.
pub(crate) fn llm_activation_bytes(
    cfg: &LlmConfig,
    chunk: u32,
    capacity: u32,
    image_tokens: Option<u32>,
) -> u64 {
    let t = u64::from(chunk);
    let h = u64::from(cfg.hidden);
    let ff = u64::from(cfg.ff);
    let qw = u64::from(cfg.n_heads * cfg.head_dim);
    let kvw = u64::from(cfg.n_kv_heads * cfg.head_dim);
    let vocab = u64::from(cfg.vocab);
    let f32s = [
        t * h,   // x
        t * h,   // xn
        t * qw,  // q
        t * kvw, // k
        t * kvw, // v
        t * qw,  // o
        t * h,   // tmp
        t * ff,  // gate
        t * ff,  // up
        vocab,   // logits
    ];
    let rope = buffer(u64::from(capacity) * u64::from(cfg.head_dim / 2) * 2, 4);
    buffer(t, 4) // ids
        + f32s.iter().map(|&n| buffer(n, 4)).sum::<u64>()
        + buffer(4, 4) // tok
        + staging(4) * (1 + MAX_QUEUED_STEPS as u64)
        + staging(vocab * 4)
        + image_tokens.map_or(0, |n| buffer(u64::from(n) * h, 4))
        + rope
}

/// The ViT and projector scratch of `GpuModel::load_vision`.
pub(crate) fn vision_scratch_bytes(v: &VisionConfig, llm_hidden: u32) -> u64 {
    let c = u64::from(v.hidden);
    let f = u64::from(v.ff);
    let n = u64::from(v.n_positions());
    let pix = v.pixel_len() as u64;
    let nimg = u64::from(v.n_image_tokens);
    let h = u64::from(llm_hidden);
    [
        pix,
        pix,
        n,
        n * c,
        n * c,
        n * 3 * c,
        n * c,
        n * c,
        n * c,
        n * f,
        nimg * h,
    ]
    .iter()
    .map(|&len| buffer(len, 4))
    .sum()
}

impl MemoryPlan {
    /// What [`crate::GpuModel::load`] with `opts` allocates on `device`, from the header alone.
    ///
    /// Errors: the header is not a model the engine loads (architecture, a tensor type it cannot read, a
    /// row larger than one binding), as loading would fail.
    pub fn for_header(
        header: &GgufHeader,
        opts: &LoadOptions,
        device: PlanDevice,
    ) -> ModelResult<MemoryPlan> {
        let cfg = LlmConfig::from_header(header)?;
        let vcfg = VisionConfig::from_header(header, cfg.hidden)?;
        let capacity = opts
            .context_length
            .map_or(cfg.context_length, |c| c.min(cfg.context_length));
        let mut plan = MemoryPlan::default();
        for t in &header.tensors {
            let name = t.name.as_str();
            let vision = meddr_gguf::is_vision_tensor(name);
            if vision && !(opts.load_vision && vcfg.is_some()) {
                continue;
            }
            // A tied LM head has no `output.weight`; the loader reads each tensor once.
            let (file, gpu) = tensor_gpu_bytes(header, t, device.max_binding_bytes)?;
            let (f, g) = if name.starts_with("mm.") {
                (&mut plan.projector_file, &mut plan.projector_gpu)
            } else if vision {
                (&mut plan.vit_file, &mut plan.vit_gpu)
            } else {
                (&mut plan.llm_file, &mut plan.llm_gpu)
            };
            *f += file;
            *g += gpu;
        }
        let kv_elem = if device.f16 && !opts.kv_f32 { 2 } else { 4 };
        let kvw = u64::from(cfg.n_kv_heads * cfg.head_dim);
        plan.kv_cache = 2 * u64::from(cfg.layers) * buffer(u64::from(capacity) * kvw, kv_elem);
        plan.llm_activations = llm_activation_bytes(
            &cfg,
            opts.prefill_chunk,
            capacity,
            vcfg.as_ref().map(|v| v.n_image_tokens),
        );
        if opts.load_vision {
            plan.vision_activations = vcfg
                .as_ref()
                .map_or(0, |v| vision_scratch_bytes(v, cfg.hidden));
        }
        Ok(plan)
    }

    /// Peak bytes of an image question when everything is loaded at once (`meddr run --image`, chat, the
    /// server, the browser): all weights, the KV cache and both sets of scratch buffers.
    pub fn peak_resident(&self) -> u64 {
        self.total_gpu()
    }

    /// Peak bytes when the language model is used without the vision tower: a text question, or the
    /// generation phase after the tower was released (`--release-vision`).
    pub fn peak_language_only(&self) -> u64 {
        self.llm_gpu + self.kv_cache + self.llm_activations
    }

    /// Peak bytes of the vision tower and projector with their scratch, alone.
    pub fn peak_vision_only(&self) -> u64 {
        self.vit_gpu + self.projector_gpu + self.vision_activations
    }
}
