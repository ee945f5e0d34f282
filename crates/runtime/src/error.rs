use thiserror::Error;

/// Error type a [`crate::Backend`] reports; boxed so GPU, CPU and test backends keep their own error types.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything the runtime can report. Messages name the offending key, option or value.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("not a MedDr GGUF: {reason}")]
    NotMedDr { reason: String },
    #[error("GGUF metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("GGUF metadata key `{key}` is unusable: {reason}")]
    BadKey { key: String, reason: String },
    #[error("option `{field}` = {value} is invalid: {reason}")]
    InvalidOption {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "context overflow: the prompt has {prompt_tokens} tokens and up to {max_new_tokens} new tokens were \
         requested, {needed} in all, but the model's context length is {context_length}"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        max_new_tokens: usize,
        needed: usize,
        context_length: usize,
    },
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error(
        "the prompt holds {found} <IMG_CONTEXT> tokens where {expected} are expected: the question itself contains \
         `<IMG_CONTEXT>`, which MedDr reserves for the image's features; remove it from the question"
    )]
    ImageTokens { found: usize, expected: usize },
    #[error(
        "this model file has no vision encoder (no `clip.has_vision_encoder`), so it cannot take an image; \
         ask without one, or use a MedDr file with its vision tower"
    )]
    NoVisionEncoder,
    #[error("{}", conversation_full(*used, *max_new_tokens, *context))]
    ConversationFull {
        used: usize,
        max_new_tokens: usize,
        context: usize,
    },
    #[error(
        "this file has no chat template (a plain llama GGUF: prompts are completed as raw text), so a \
         conversation cannot carry a history; ask each question on its own"
    )]
    NoChatTemplate,
    #[error("the file's chat template (tokenizer.chat_template) failed: {reason}")]
    ChatTemplate { reason: String },
    #[error("backend returned unusable logits ({len} values): {reason}")]
    BadLogits { len: usize, reason: &'static str },
    #[error("sampled token id {id} is outside the tokenizer's vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(meddr_tokenizer::TokenizerError),
    /// [`crate::GenerationOptions::interrupt`] said stop before the first token.
    #[error("stopped by the caller during the prompt, after {done} of its {total} tokens")]
    Interrupted { done: usize, total: usize },
    #[error("backend: {0}")]
    Backend(BackendError),
}

fn conversation_full(used: usize, max_new_tokens: usize, context: usize) -> String {
    if used >= context {
        format!(
            "the conversation holds {used} tokens, more than the context's {context}, so none are left for an \
             answer: start a new conversation, or shorten the question"
        )
    } else {
        format!(
            "the conversation holds {used} tokens, so {} of the context's {context} are left, fewer than the \
             {max_new_tokens} new tokens asked for: start a new conversation, or ask for fewer new tokens",
            context - used
        )
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

// By hand rather than `#[from]`, which would also make the tokenizer error this one's `source()`: its text is
// already in the message, and a chain walker would print it twice.
impl From<meddr_tokenizer::TokenizerError> for RuntimeError {
    fn from(e: meddr_tokenizer::TokenizerError) -> Self {
        RuntimeError::Tokenizer(e)
    }
}
