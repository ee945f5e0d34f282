//! One error type for the whole conversion, so the CLI prints a single clear line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
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
    Gguf(#[from] meddr_gguf::GgufError),
    #[error("quantizing {name}: {source}")]
    Quant {
        name: String,
        source: meddr_quants::QuantError,
    },
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = QuantizeError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> QuantizeError {
    let path = path.into();
    move |source| QuantizeError::Io { path, source }
}
