use std::path::PathBuf;

/// Every failure names the offending field or value; nothing in this crate panics on bad input.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("malformed SentencePiece model at byte offset {offset}: {what}")]
    Protobuf { offset: usize, what: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    /// A GGUF key whose value names a tokenizer this crate does not implement (`tokenizer.ggml.model`,
    /// `tokenizer.ggml.pre`); `supported` lists the values that are.
    #[error("{key} = {value:?} is not supported (supported: {supported})")]
    UnsupportedGguf {
        key: &'static str,
        value: String,
        supported: &'static str,
    },
    // Causes are part of the message, never also a `source()` (a chain walker would print them twice).
    #[error("cannot read {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("invalid JSON in {what}: {cause}")]
    Json {
        what: String,
        cause: serde_json::Error,
    },
    #[error("invalid tokenizer configuration: {0}")]
    Config(String),
    #[error("added token {content:?} has id {id}, which {problem}")]
    AddedToken {
        content: String,
        id: u64,
        problem: String,
    },
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u64, vocab_size: usize },
    #[error("tokenizers crate error: {0}")]
    Tokenizers(String),
}

impl TokenizerError {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }
    pub(crate) fn tk(e: impl std::fmt::Display) -> Self {
        Self::Tokenizers(e.to_string())
    }
}
