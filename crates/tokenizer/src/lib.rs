//! MedDr tokenizer.
//!
//! Two users share this crate:
//! - the quantizer reads a Hugging Face tokenizer directory ([`TokenizerSpec::from_hf_dir`]) and writes the
//!   fields of [`TokenizerSpec`] into GGUF (`tokenizer.ggml.*` plus a complete `tokenizers` JSON);
//! - the engine (native and wasm32) rebuilds the runtime [`MedDrTokenizer`] from that GGUF metadata
//!   ([`TokenizerSpec::from_gguf_parts`]) and must reproduce upstream's slow `LlamaTokenizer` (transformers 4.37,
//!   `legacy: true`) exactly, for encoding and decoding.
//!
//! Plain llama.cpp GGUFs with a byte-level BPE vocabulary (`tokenizer.ggml.model = "gpt2"`) are read too
//! ([`TokenizerSpec::from_gguf_byte_level`]), tokenizing as llama.cpp's `llama-vocab.cpp` does.

mod byte_level;
mod error;
mod hf_json;
mod runtime;
mod sentencepiece;
mod spec;

pub use byte_level::{
    byte_to_char, char_to_byte, piece_bytes, BpePreTokenizer, GgufBpeParts, GgufVocabKind,
    MAX_ARRAY_LEN, SUPPORTED_MODELS, SUPPORTED_PRE,
};
pub use error::TokenizerError;
pub use runtime::{DecodeStream, MedDrTokenizer, UserTextEncoding};
pub use sentencepiece::{ModelType, PieceKind, SentencePiece, SentencePieceModel};
pub use spec::{token_type, TokenizerSpec};

/// Crate-wide result type.
pub type Result<T> = std::result::Result<T, TokenizerError>;
