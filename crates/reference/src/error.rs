use thiserror::Error;

/// Everything that can go wrong when loading weights or running the reference model.
///
/// Every variant names the offending field or tensor and its value so that a bad file or a bad call can be
/// traced without a debugger.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum RefError {
    #[error("tensor `{name}` is missing from the weight store")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has ggml dims {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("tensor `{name}` holds {got} values but its dims {dims:?} need {expected}")]
    TensorData {
        name: String,
        dims: Vec<usize>,
        expected: usize,
        got: usize,
    },
    /// For store implementations whose backing file fails (I/O, unsupported type, dequantisation).
    #[error("weight store failed to provide `{name}`: {reason}")]
    Store { name: String, reason: String },
    #[error("config field `{field}` = {value} is invalid: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("input `{field}` = {value} is invalid: {reason}")]
    Input {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("token id {id} at position {position} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        id: u32,
        position: usize,
        vocab: usize,
    },
    #[error(
        "prompt holds {found} image context tokens (id {token_id}) but {rows} image feature rows were supplied \
         ({per_image} per image)"
    )]
    ImageTokenCount {
        found: usize,
        rows: usize,
        per_image: usize,
        token_id: u32,
    },
    #[error(
        "start_pos = {start_pos} does not continue the KV cache, which holds {cached} positions"
    )]
    CachePosition { start_pos: usize, cached: usize },
    #[error("positions up to {needed} exceed context_length = {limit}")]
    ContextOverflow { needed: usize, limit: usize },
    #[error("the model was loaded without a vision tower (`vision` config is None)")]
    NoVision,
    #[error("size of {what} overflows usize")]
    Overflow { what: &'static str },
}
