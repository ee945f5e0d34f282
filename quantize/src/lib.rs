//! `meddr-quantize`: streams MedDr's Hugging Face checkpoint (InternVL-Chat-V1-2 with the language model's LoRA
//! unmerged) into one GGUF file laid out as `docs/gguf-layout.md` describes, and writes synthetic checkpoints
//! in the same upstream layout for tests and benchmarks.

pub mod checkpoint;
pub mod convert;
pub mod error;
pub mod metadata;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod synth;

pub use convert::{quantize_checkpoint, quantize_once, write_layout, Options, Summary};
pub use error::{QuantizeError, Result};
pub use recipe::FileType;
