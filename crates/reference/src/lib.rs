//! MedDr's plain f32 CPU reference implementation.
//!
//! One function per operation of `docs/model.md`, written for readability rather than speed: it is the ground
//! truth the GPU kernels are tested against and it reproduces the upstream PyTorch fixtures. Weights are read
//! through [`WeightStore`] under the GGUF names and layouts of `docs/gguf-layout.md` (llama.cpp names, 2-D weights
//! as ggml dims `[in, out]`, q/k rows permuted for adjacent-pair RoPE), so the same code runs on weights coming
//! from a GGUF file or from any test-side converter.
//!
//! Numerics: activations are f32 and every element-wise step is rounded to f32 like the upstream f32 model, but
//! dot products and norm statistics are accumulated in f64. That makes the reference independent of summation
//! order (so a GPU kernel is measured against the exactly-rounded result, not against one particular f32 order)
//! and puts it within about 1e-6 relative of upstream's own f64 re-evaluation, far inside the fixture
//! tolerances (vision features 1e-4 at magnitude 3, logits 2e-3 at magnitude 70).

mod error;
pub mod gguf_store;
mod model;
pub mod ops;

pub use error::RefError;
pub use gguf_store::{GgufConfigError, GgufStore};
/// Refuses a layout-only GGUF (`meddr-quantize --layout-only`) before its zeros are taken for weights.
pub use meddr_config::check_has_weights;
pub use model::{
    GreedyStep, KvCache, LlmConfig, ModelConfig, ReferenceModel, Tensor, VisionConfig, WeightStore,
};
pub use ops::{
    argmax, attention, erf, gelu_erf, layer_norm, log_softmax, matmul_wt, patch_embed,
    pixel_shuffle_v1, rms_norm, rope_adjacent_pairs, silu, softmax_inplace, top_k,
};
