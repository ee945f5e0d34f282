//! Errors shown to the user as they are: each names the file, field or limit at fault.

use meddr_gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not a GGUF file: it starts with {found:02x?} instead of \"GGUF\"")]
    NotGguf { found: Vec<u8> },
    #[error("this GGUF is not a MedDr model: {why}")]
    NotMedDr { why: String },
    #[error("invalid GGUF: {0}")]
    Gguf(GgufError),
    #[error(
        "tensor {tensor:?} needs {needed} bytes in one GPU binding, but this device allows at most {limit} \
         (maxStorageBufferBindingSize); use a smaller quantization or a GPU with larger limits"
    )]
    ExceedsDeviceLimit {
        tensor: String,
        needed: u64,
        limit: u64,
    },
    #[error("tensor {tensor:?} has ggml type {ty} which the engine cannot run")]
    UnsupportedTensorType { tensor: String, ty: String },
    #[error("the model file is {file_len} bytes but its header ends at {header_len}")]
    Truncated { file_len: u64, header_len: u64 },
    #[error("GPU engine: {0}")]
    Engine(meddr_engine::EngineError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("image: {0}")]
    Image(String),
    #[error("reading the model file at byte {offset}: {message}")]
    Read { offset: u64, message: String },
    /// `GenerationOptions::interrupt` said stop during the prompt (Stop pressed, request aborted).
    #[error("stopped during the prompt, after {done} of its {total} tokens")]
    Interrupted { done: u32, total: u32 },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, WebError>;

// By hand rather than `#[from]`: the causes' text is already in the messages (no `source()` to print twice).
impl From<GgufError> for WebError {
    fn from(e: GgufError) -> Self {
        WebError::Gguf(e)
    }
}

impl From<meddr_engine::EngineError> for WebError {
    fn from(e: meddr_engine::EngineError) -> Self {
        WebError::Engine(e)
    }
}
