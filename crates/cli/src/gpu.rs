//! [`Backend`] over the wgpu engine. Greedy decoding runs on the device: each step is one submit whose only
//! readback is the 4-byte token id; logits come back only when the caller samples on the CPU or wants
//! log-probabilities.

use std::sync::Arc;

use meddr_engine::{
    ContextOptions, GpuContext, GpuModel, ImageFeatures, LoadOptions, Readback, StepInput,
    VisionEncoder,
};
use meddr_gguf::GgufFile;
use meddr_runtime::{Backend, BackendError, Prefill, SamplingParams};

pub struct GpuBackend {
    model: GpuModel,
    /// The last encoded image stays on the GPU, so prefill need not upload the features again.
    image: Option<(ImageFeatures, Vec<f32>)>,
    /// The pixels of an image encoded before the language model was loaded ([`VisionLoad::EncodeFirst`]).
    encoded_first: Option<Vec<f32>>,
    /// The device's argmax after the last prefill or step read: what a queued step takes as its input.
    last_token: Option<u32>,
}

/// When the vision tower is on the GPU.
pub enum VisionLoad {
    /// With the language model, for images at any time (chat, the server, GSCo).
    Resident,
    /// Never: a text-only run of a MedDr file needs none of its ≈ 5.6 GiB.
    Skip,
    /// Alone, first: this image (`pixel_values`) is encoded, the tower freed, then the language model
    /// loaded, so the peak is the larger part instead of both (`--release-vision`; see `meddr info`).
    EncodeFirst(Vec<f32>),
}

pub struct GpuOptions {
    pub force_f32: bool,
    pub context_length: Option<u32>,
    pub vision: VisionLoad,
    /// Prompt tokens per submit ([`LoadOptions::prefill_chunk`]); `None`: the engine's default.
    pub prefill_chunk: Option<u32>,
}

impl GpuBackend {
    pub fn load(file: &GgufFile, opts: &GpuOptions) -> Result<Self, anyhow::Error> {
        let ctx = GpuContext::new_blocking(ContextOptions {
            force_f32: opts.force_f32,
            ..Default::default()
        })?;
        Self::on_context(Arc::new(ctx), file, opts)
    }

    /// Loads the model on an existing device (GSCo: the specialists already run on it).
    pub fn on_context(
        ctx: Arc<GpuContext>,
        file: &GgufFile,
        opts: &GpuOptions,
    ) -> Result<Self, anyhow::Error> {
        let mut load = LoadOptions {
            context_length: opts.context_length,
            load_vision: matches!(opts.vision, VisionLoad::Resident),
            ..Default::default()
        };
        if let Some(chunk) = opts.prefill_chunk {
            load.prefill_chunk = chunk;
        }
        let (image, encoded_first) = match &opts.vision {
            VisionLoad::EncodeFirst(pixels) => {
                let encoder = VisionEncoder::load(ctx.clone(), file)?;
                let features = encoder.encode(pixels)?;
                let host = encoder.read_features(&features)?;
                drop(encoder); // frees the tower before the language model is loaded
                load.load_vision = false;
                (Some((features, host)), Some(pixels.clone()))
            }
            _ => (None, None),
        };
        let model = GpuModel::load(ctx, file, &load)?;
        Ok(GpuBackend {
            model,
            image,
            encoded_first,
            last_token: None,
        })
    }

    pub fn model(&self) -> &GpuModel {
        &self.model
    }

    pub fn model_mut(&mut self) -> &mut GpuModel {
        &mut self.model
    }
}

fn boxed(e: meddr_engine::ModelError) -> BackendError {
    Box::new(e)
}

fn logits(step: meddr_engine::Step) -> Result<Vec<f32>, BackendError> {
    step.logits
        .ok_or_else(|| "the engine returned no logits".into())
}

impl Backend for GpuBackend {
    fn encode_image(&mut self, pixel_values: &[f32]) -> Result<Vec<f32>, BackendError> {
        if self.encoded_first.as_deref() == Some(pixel_values) {
            if let Some((_, host)) = &self.image {
                return Ok(host.clone());
            }
        }
        let f = self.model.encode_image(pixel_values).map_err(boxed)?;
        let host = self.model.read_image_features(&f).map_err(boxed)?;
        self.image = Some((f, host.clone()));
        Ok(host)
    }

    fn prefill(
        &mut self,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError> {
        self.prefill_from(0, ids, image_features)
    }

    fn prefill_from(
        &mut self,
        keep: usize,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError> {
        match self.prefill_interruptible(keep, ids, image_features, &|| false)? {
            Prefill::Logits(l) => Ok(l),
            Prefill::Interrupted { .. } => Err("the prefill was interrupted".into()),
        }
    }

    fn prefill_interruptible(
        &mut self,
        keep: usize,
        ids: &[u32],
        image_features: Option<&[f32]>,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Prefill, BackendError> {
        let keep = u32::try_from(keep)
            .map_err(|_| format!("keep = {keep} positions is beyond any cache"))?;
        let image = match image_features {
            None => None,
            Some(host) => match &self.image {
                Some((gpu, cached)) if cached.as_slice() == host => Some(gpu),
                _ => return Err("image features must come from this backend's encode_image".into()),
            },
        };
        let step = match self.model.prefill_interruptible(
            keep,
            ids,
            image,
            0,
            Readback::TokenAndLogits,
            interrupted,
        ) {
            Ok(step) => step,
            Err(meddr_engine::ModelError::Interrupted { done, .. }) => {
                self.last_token = None;
                return Ok(Prefill::Interrupted {
                    done: done as usize,
                });
            }
            Err(e) => return Err(boxed(e)),
        };
        self.last_token = Some(step.token);
        logits(step).map(Prefill::Logits)
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>, BackendError> {
        let step = self
            .model
            .decode_step(StepInput::Token(token), Readback::TokenAndLogits)
            .map_err(boxed)?;
        self.last_token = Some(step.token);
        logits(step)
    }

    fn context_length(&self) -> usize {
        self.model.capacity() as usize
    }

    fn decode_sampled(
        &mut self,
        token: u32,
        sampling: &SamplingParams,
        _step: usize,
    ) -> Option<Result<u32, BackendError>> {
        // Only plain greedy runs on the device; the GPU argmax is the runtime's greedy choice (first max).
        if !device_greedy(sampling) {
            return None;
        }
        Some(self.step_with(token))
    }

    fn max_queued_greedy(&self, sampling: &SamplingParams) -> usize {
        if device_greedy(sampling) {
            meddr_engine::MAX_QUEUED_STEPS
        } else {
            0
        }
    }

    fn queue_greedy(&mut self) -> Result<(), BackendError> {
        self.model.queue_greedy_step().map_err(boxed)
    }

    fn read_queued(&mut self, fed: u32) -> Result<u32, BackendError> {
        // The oldest queued step took the device's last argmax: the token the last read (or the prefill)
        // returned. Anything else from the caller means the queue computed the wrong continuation.
        if Some(fed) != self.last_token {
            self.model.drop_queued();
            return self.step_with(fed);
        }
        let token = self.model.read_queued().map_err(boxed)?.token;
        self.last_token = Some(token);
        Ok(token)
    }

    fn drop_queued(&mut self) {
        self.model.drop_queued();
    }
}

/// Sampling the device does itself: greedy (first maximum), no repetition penalty.
fn device_greedy(sampling: &SamplingParams) -> bool {
    sampling.is_device_argmax()
}

impl GpuBackend {
    /// One unqueued greedy step on `token`, its choice remembered for [`Backend::read_queued`].
    fn step_with(&mut self, token: u32) -> Result<u32, BackendError> {
        let next = self
            .model
            .decode_step(StepInput::Token(token), Readback::Token)
            .map_err(boxed)?
            .token;
        self.last_token = Some(next);
        Ok(next)
    }
}
