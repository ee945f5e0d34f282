//! One error type for the whole conversion, so the CLI prints a single clear line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    // Causes are part of the message, never also a `source()` (a chain walker would print them twice).
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: invalid JSON: {cause}")]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("config.json: {0}")]
    Config(String),
    #[error("{path}: not a valid safetensors shard: {reason}")]
    Shard { path: PathBuf, reason: String },
    #[error("tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("LoRA: {0}")]
    Lora(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("output {path} already exists (pass --force to overwrite)")]
    OutputExists { path: PathBuf },
    #[error("GGUF: {0}")]
    Gguf(meddr_gguf::GgufError),
    #[error("quantizing {name}: {cause}")]
    Quant {
        name: String,
        cause: meddr_quants::QuantError,
    },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = QuantizeError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> QuantizeError {
    let path = path.into();
    move |cause| QuantizeError::Io { path, cause }
}

impl From<meddr_gguf::GgufError> for QuantizeError {
    fn from(e: meddr_gguf::GgufError) -> Self {
        QuantizeError::Gguf(e)
    }
}
