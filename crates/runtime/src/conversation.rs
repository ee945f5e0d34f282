//! Multi-turn conversations in upstream's history format: InternVL-Chat-V1-2's `chat()` with `history`
//! (`modeling_internvl_chat.py` + `conversation.py`, Hermes-2 template, `SeparatorStyle.MPT`). The image belongs
//! to the first turn (`<img>…</img>\n` before its question); each answer is kept as upstream keeps it,
//! `response.split('<|im_end|>')[0].strip()`; the next prompt is the whole history re-rendered:
//!
//! `<|im_start|>system\n{system}<|im_end|>` + (`<|im_start|>user\n{q}<|im_end|><|im_start|>assistant\n{a}<|im_end|>`)*
//! + `<|im_start|>user\n{question}<|im_end|><|im_start|>assistant\n`
//!
//! The backend's KV cache is reused across turns: the new prompt's ids are compared with the ids whose keys
//! and values the backend holds, and only what follows their common prefix is run. The ids are exactly those
//! of a fresh prompt (what upstream computes); reuse changes how much is recomputed, never the numbers.

use std::ops::{ControlFlow, Range};

use meddr_tokenizer::MedDrTokenizer;

use crate::generate::{
    check_image_tokens, generate_from, Backend, GenerationOptions, GenerationResult, TokenEvent,
};
use crate::prompt::{python_strip, render_file_template, render_hermes2, EncodedPrompt, UserText};
use crate::{ChatMessage, ModelInfo, PromptFormat, Result, RuntimeError};

/// One finished exchange, as it goes into the next prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The question as asked (stripped, without the image tokens).
    pub question: String,
    /// The answer as upstream keeps it in the history.
    pub answer: String,
}

/// How a backend runs a prompt of a conversation ([`Conversation::plan`]): keep the first `keep` positions of
/// its cache, run the rest, and splice the conversation's image into it when `with_image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    pub keep: usize,
    pub with_image: bool,
}

/// Where a conversation's image features are.
#[derive(Debug, Clone, PartialEq)]
enum Image {
    /// On the host (`[num_image_tokens, hidden]`), passed to [`Backend::prefill_from`].
    Host(Vec<f32>),
    /// Held by the caller's device (the browser keeps them in a GPU buffer): only whether to splice them is
    /// the conversation's business ([`RunPlan::with_image`]).
    Device,
}

/// What one [`Conversation::ask`] produced.
#[derive(Debug, Clone)]
pub struct Reply {
    pub result: GenerationResult,
    /// The prompt's ids and what the question typed (see [`EncodedPrompt::warning`]).
    pub prompt: EncodedPrompt,
    /// Prompt positions whose cached keys and values were kept instead of being run again.
    pub reused_tokens: usize,
}

/// A conversation with one model: its turns, its image, and which ids the backend's cache holds.
///
/// The one session type of every entry point: the CLI's `chat` REPL keeps one and asks turn after turn; the
/// OpenAI-compatible server keeps one per model and replaces its history with each request's messages
/// ([`Self::set_turns`]), so a client that re-sends a growing history gets the earlier prefill for free; raw
/// completions go through [`Self::complete`] and share the same cache.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    turns: Vec<Turn>,
    /// The first turn's image, if the conversation has one.
    image: Option<Image>,
    /// Replaces the file's system message (`meddr.chat.system_message`) when set.
    system: Option<String>,
    user_text: UserText,
    /// The ids whose keys and values the backend holds, position by position.
    cached: Vec<u32>,
}

impl Conversation {
    pub fn new(user_text: UserText) -> Self {
        Conversation {
            user_text,
            ..Default::default()
        }
    }

    /// Starts over about a new image (its features from [`Backend::encode_image`]): upstream's image belongs
    /// to the first turn, so earlier turns are dropped. The cache is dropped too: a new image has the same
    /// token ids as the old one, so comparing ids cannot tell that its keys and values differ.
    pub fn set_image(&mut self, features: Vec<f32>) {
        self.turns.clear();
        self.cached.clear();
        self.image = Some(Image::Host(features));
    }

    /// [`Self::set_image`] for features the caller keeps on its device (the browser's async loop, which
    /// drives [`Self::plan`] / [`Self::record`] itself).
    pub fn set_image_on_device(&mut self) {
        self.turns.clear();
        self.cached.clear();
        self.image = Some(Image::Device);
    }

    /// Forgets the turns and the image (the cache is reused where the next prompt allows).
    pub fn reset(&mut self) {
        self.turns.clear();
        self.image = None;
    }

    /// Replaces the history (a stateless client sends the whole of it with every request). The image, if
    /// any, stays with the first turn; the cache is reused where the next prompt allows.
    pub fn set_turns(&mut self, turns: Vec<Turn>) {
        self.turns = turns;
    }

    /// Treats the backend's cache as empty: the next turn runs its whole prompt (a backend whose cache was
    /// changed behind the conversation's back; tests comparing reuse with a full run).
    pub fn drop_cache(&mut self) {
        self.cached.clear();
    }

    /// How control tokens typed in later questions are read (earlier turns were tokenized as they were asked,
    /// and are rendered again the same way only if this stays the same).
    pub fn set_user_text(&mut self, user_text: UserText) {
        self.user_text = user_text;
    }

    /// Uses `system` instead of the file's system message (`None`: the file's, as upstream).
    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system;
    }

    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }

    /// The next prompt's text for `question` and the byte ranges of the questions in it (user text):
    /// upstream's Hermes-2 history for a MedDr file, the file's own chat template for a plain llama file.
    ///
    /// Errors: a plain file without a chat template ([`RuntimeError::NoChatTemplate`]); a template that
    /// fails to render ([`RuntimeError::ChatTemplate`]).
    pub fn prompt_text(
        &self,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        question: &str,
    ) -> Result<(String, Vec<Range<usize>>)> {
        self.prompt_text_with(tokenizer, info, question, self.image.is_some())
    }

    fn prompt_text_with(
        &self,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        question: &str,
        has_image: bool,
    ) -> Result<(String, Vec<Range<usize>>)> {
        match info.prompt_format {
            PromptFormat::Raw => Err(RuntimeError::NoChatTemplate),
            PromptFormat::MedDr => {
                let history: Vec<(&str, &str)> = self
                    .turns
                    .iter()
                    .map(|t| (t.question.as_str(), t.answer.as_str()))
                    .collect();
                let image_tokens =
                    has_image.then(|| info.vision.as_ref().map_or(0, |v| v.num_image_tokens));
                let system = self.system.as_deref().unwrap_or(&info.system_message);
                Ok(render_hermes2(
                    system,
                    &history,
                    python_strip(question),
                    image_tokens,
                ))
            }
            PromptFormat::Template => {
                // No system message unless one was set: the template writes its own default, as llama.cpp's does.
                let mut messages: Vec<ChatMessage> = self
                    .system
                    .iter()
                    .map(|s| ChatMessage::new("system", s))
                    .collect();
                for t in &self.turns {
                    messages.push(ChatMessage::new("user", &t.question));
                    messages.push(ChatMessage::new("assistant", &t.answer));
                }
                messages.push(ChatMessage::new("user", python_strip(question)));
                render_file_template(tokenizer, info, &messages)
            }
        }
    }

    /// The next prompt for `question` as token ids, checked before any backend work: a plain llama file
    /// (no chat template to carry a history), an image for a file without a vision encoder, typed
    /// `<IMG_CONTEXT>` tokens, and a prompt plus `max_new_tokens` beyond `context` positions
    /// ([`RuntimeError::ConversationFull`], saying how many tokens are left). `has_image`: whether the first
    /// turn carries an image (a caller checking a request before the image is encoded passes `true`).
    pub fn encode(
        &self,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        question: &str,
        has_image: bool,
        max_new_tokens: usize,
        context: usize,
    ) -> Result<EncodedPrompt> {
        if has_image && info.vision.is_none() {
            return Err(RuntimeError::NoVisionEncoder);
        }
        let (text, user) = self.prompt_text_with(tokenizer, info, question, has_image)?;
        let enc =
            tokenizer.encode_with_user_texts(&text, &user, self.user_text == UserText::Literal)?;
        let n_img = if has_image {
            info.vision.as_ref().map_or(0, |v| v.num_image_tokens)
        } else {
            0
        };
        check_image_tokens(&enc.ids, info.image_context_id(tokenizer), n_img)?;
        let context = context.min(info.context_length);
        let used = enc.ids.len();
        if used >= context || used.saturating_add(max_new_tokens) > context {
            return Err(RuntimeError::ConversationFull {
                used,
                max_new_tokens,
                context,
            });
        }
        Ok(EncodedPrompt {
            ids: enc.ids,
            typed_control_tokens: enc.typed_control_tokens,
            user_text: self.user_text,
        })
    }

    /// Asks `question` as the next turn: renders the history, tokenizes it (control tokens typed in any
    /// question read as the conversation's [`UserText`] says), checks it ([`Self::encode`]), keeps the cached
    /// prefix, generates, and records the turn. `on_token` streams as in [`crate::generate`].
    ///
    /// Errors: those of [`Self::encode`] and of [`crate::generate`]. After a backend error the cache is
    /// treated as empty.
    #[allow(clippy::too_many_arguments)]
    pub fn ask<B: Backend + ?Sized>(
        &mut self,
        backend: &mut B,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        question: &str,
        opts: &GenerationOptions,
        on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Reply> {
        let prompt = self.encode(
            tokenizer,
            info,
            question,
            self.image.is_some(),
            opts.max_new_tokens,
            backend.context_length(),
        )?;
        let (result, reused_tokens) =
            self.run(backend, tokenizer, info, &prompt.ids, opts, on_token)?;
        self.record_turn(question, &result);
        Ok(Reply {
            result,
            prompt,
            reused_tokens,
        })
    }

    /// Continues raw prompt ids (a completion: no template, no image), keeping the cached prefix as
    /// [`Self::ask`] does. Returns the result and how many prompt positions were reused. The turns are left
    /// as they are.
    pub fn complete<B: Backend + ?Sized>(
        &mut self,
        backend: &mut B,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        ids: &[u32],
        opts: &GenerationOptions,
        on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<(GenerationResult, usize)> {
        check_image_tokens(ids, info.image_context_id(tokenizer), 0)?;
        self.run(backend, tokenizer, info, ids, opts, on_token)
    }

    /// How to run `ids` (a prompt from [`Self::encode`], or raw completion ids): keep the longest prefix the
    /// backend's cache already holds, but never half an image (its rows are spliced by order). The cache
    /// counts as empty until [`Self::record`] says what the run left in it, so a run that fails or is
    /// abandoned is never trusted.
    ///
    /// Errors: an empty prompt.
    pub fn plan(
        &mut self,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        ids: &[u32],
    ) -> Result<RunPlan> {
        if ids.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        let mut keep = ids
            .iter()
            .zip(&self.cached)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len() - 1);
        let ctx_id = info.image_context_id(tokenizer);
        let image_after_keep = ctx_id.is_some_and(|c| ids[keep..].contains(&c));
        if image_after_keep && ctx_id.is_some_and(|c| ids[..keep].contains(&c)) {
            keep = 0;
        }
        self.cached.clear();
        Ok(RunPlan {
            keep,
            with_image: image_after_keep && self.image.is_some(),
        })
    }

    /// After a run of `ids` that produced `result`: the backend's cache now holds the prompt and every
    /// generated token but the last (never fed back).
    pub fn record(&mut self, ids: &[u32], result: &GenerationResult) {
        self.cached = ids.to_vec();
        let fed = result.tokens.len().saturating_sub(1);
        self.cached
            .extend(result.tokens[..fed].iter().map(|t| t.id));
    }

    /// Adds the finished exchange to the history, the answer kept as upstream keeps it
    /// (`response.split('<|im_end|>')[0].strip()`).
    pub fn record_turn(&mut self, question: &str, result: &GenerationResult) {
        let answer =
            python_strip(result.text.split("<|im_end|>").next().unwrap_or_default()).to_owned();
        self.turns.push(Turn {
            question: python_strip(question).to_owned(),
            answer,
        });
    }

    /// Generates from `ids`, running only what follows the longest prefix the cache already holds.
    fn run<B: Backend + ?Sized>(
        &mut self,
        backend: &mut B,
        tokenizer: &MedDrTokenizer,
        info: &ModelInfo,
        ids: &[u32],
        opts: &GenerationOptions,
        on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<(GenerationResult, usize)> {
        let plan = self.plan(tokenizer, info, ids)?;
        let features = match (&self.image, plan.with_image) {
            (Some(Image::Host(f)), true) => Some(f.as_slice()),
            (Some(Image::Device), true) => {
                return Err(RuntimeError::Backend(
                    "this conversation's image features are on the caller's device; run it with plan/record"
                        .into(),
                ))
            }
            _ => None,
        };
        let result = generate_from(
            backend, tokenizer, info, plan.keep, ids, features, opts, on_token,
        )?;
        self.record(ids, &result);
        Ok((result, plan.keep))
    }
}
