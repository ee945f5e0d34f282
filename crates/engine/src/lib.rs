//! MedDr's GPU core on wgpu: device setup, packed-weight residency and the compute kernels, as an op-level API
//! that a model assembles into whole forward passes.
//!
//! Design (see `docs/model.md` and the project's design rules):
//! * Weights stay in their GGUF block form on the GPU ([`GpuWeight`]), read as `array<u32>` by fused
//!   dequantise-and-multiply kernels; tensors beyond one storage binding are split by whole rows.
//! * Every op records into a caller-owned [`Recorder`] (one encoder, one compute pass), so a decode step is one
//!   submit, and greedy decoding reads back a single u32 ([`GpuContext::argmax`]).
//! * Kernels are subgroup-free WGSL and work without shader-f16 (f32 KV cache); with shader-f16 the KV cache
//!   is f16. The same code targets Vulkan/Metal/DX12/GL natively and WebGPU in wasm32.

mod context;
mod error;
mod kv;
mod model;
mod ops;
mod plan;
mod profile;
mod roofline;
mod shaders;
mod tensor;
mod weight;

pub use context::{ContextOptions, DeviceInfo, GpuContext, MatvecShape, Recorder, WorkDone};
pub use error::{EngineError, Result};
pub use kv::{KvCache, RopeTable};
pub use model::{
    ConfigError, GpuModel, ImageFeatures, LlmConfig, LoadOptions, MemoryPlan, ModelError,
    ModelResult, Readback, Step, StepInput, VisionConfig, VisionEncoder, MAX_PREFILL_CHUNK,
    MAX_QUEUED_STEPS,
};
pub use ops::{
    AttnShape, LinearKernel, CPU_MATMUL_MIN_ROWS, CPU_MATMUL_MIN_ROW_LEN, MATVEC_MAX_ROWS,
};
pub use plan::PlanDevice;
pub use profile::KernelTime;
pub use roofline::ReadBandwidth;
pub use tensor::{DType, GpuBuffer, Rows};
pub use weight::{GpuWeight, QuantType, WeightDesc, WeightPart, UPLOAD_CHUNK_BYTES};
pub use wgpu;
