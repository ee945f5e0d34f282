//! MedDr generation runtime, independent of where the model runs.
//!
//! Pure logic (no file system, threads or clocks beyond `web-time`) so the same code drives the CPU reference,
//! the native GPU engine and the browser build: model facts from GGUF metadata ([`ModelInfo`]), upstream's
//! prompt ([`build_prompt`], [`encode_prompt`]), Hugging Face-compatible sampling ([`Sampler`]) and the streaming generation loop
//! over any [`Backend`] ([`generate`]).

mod conversation;
mod error;
mod generate;
mod info;
pub mod openai;
mod prompt;
pub mod sampler;
mod stop;
mod template;

pub use conversation::{Conversation, Reply, RunPlan, Turn};
pub use error::{BackendError, Result, RuntimeError};
pub use generate::{
    check_image_tokens, check_request, drive, generate, generate_from, Backend, Generation,
    GenerationOptions, GenerationResult, Interrupt, Next, Prefill, StepOutput, Steps, StopPolicy,
    StopReason, Timings, TokenEvent, TokenOut, MAX_LOGPROBS,
};
pub use info::{
    tokenizer_from_gguf_header, ImagePreprocessing, ModelInfo, PromptFormat, VisionInfo,
};
pub use prompt::{
    build_prompt, encode_prompt, python_strip, EncodedPrompt, UserText, IMG_CONTEXT, IMG_END,
    IMG_START,
};
pub use sampler::{Sampler, SamplingParams};
pub use stop::{StopStrings, MAX_STOP_STRINGS};
pub use template::{render_chat_template, ChatMessage};
