//! [`Backend`] over the f32 reference model: slow but exact, the ground truth the GPU engine is compared with.

use meddr_reference::{GgufStore, KvCache, ModelConfig, RefError, ReferenceModel};
use meddr_runtime::{Backend, BackendError};

pub struct CpuBackend {
    model: ReferenceModel,
    cache: KvCache,
}

impl CpuBackend {
    /// Dequantises every tensor of the file to f32 (any GGUF type the quantizer writes).
    pub fn load(store: &GgufStore) -> Result<Self, anyhow::Error> {
        meddr_reference::check_has_weights(store.header())?;
        let cfg = ModelConfig::from_gguf(store.header())?;
        Ok(Self::from_model(ReferenceModel::load(store, cfg)?))
    }

    pub fn from_model(model: ReferenceModel) -> Self {
        let cache = model.new_cache();
        CpuBackend { model, cache }
    }

    pub fn model(&self) -> &ReferenceModel {
        &self.model
    }
}

fn boxed(e: RefError) -> BackendError {
    Box::new(e)
}

impl Backend for CpuBackend {
    fn encode_image(&mut self, pixel_values: &[f32]) -> Result<Vec<f32>, BackendError> {
        self.model.encode_image(pixel_values).map_err(boxed)
    }

    fn prefill(
        &mut self,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError> {
        self.cache = self.model.new_cache();
        let emb = self
            .model
            .embed_prompt(ids, image_features)
            .map_err(boxed)?;
        self.model.forward(&mut self.cache, &emb, 0).map_err(boxed)
    }

    fn prefill_from(
        &mut self,
        keep: usize,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError> {
        if keep > self.cache.len() {
            return Err(format!(
                "cannot keep {keep} positions: {} are cached",
                self.cache.len()
            )
            .into());
        }
        self.cache.truncate(keep);
        let emb = self
            .model
            .embed_prompt(ids, image_features)
            .map_err(boxed)?;
        self.model
            .forward(&mut self.cache, &emb, keep)
            .map_err(boxed)
    }

    fn decode(&mut self, token: u32) -> Result<Vec<f32>, BackendError> {
        let pos = self.cache.len();
        let emb = self.model.token_embedding(token).map_err(boxed)?.to_vec();
        self.model
            .forward(&mut self.cache, &emb, pos)
            .map_err(boxed)
    }

    fn context_length(&self) -> usize {
        self.model.config().llm.context_length
    }
}
