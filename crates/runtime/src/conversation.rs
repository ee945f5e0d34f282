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

use crate::generate::{check_image_tokens, generate_from, Backend, GenerationOptions, GenerationResult, TokenEvent};
use crate::prompt::{python_strip, render_hermes2, EncodedPrompt, UserText};
use crate::{ModelInfo, PromptFormat, Result, RuntimeError};

/// One finished exchange, as it goes into the next prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The question as asked (stripped, without the image tokens).
    pub question: String,
    /// The answer as upstream keeps it in the history.
    pub answer: String,
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
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    turns: Vec<Turn>,
    /// Features of the first turn's image (`[num_image_tokens, hidden]`), if the conversation has one.
    image: Option<Vec<f32>>,
    user_text: UserText,
    /// The ids whose keys and values the backend holds, position by position.
    cached: Vec<u32>,
}

impl Conversation {
    pub fn new(user_text: UserText) -> Self {
        Conversation { user_text, ..Default::default() }
    }

    /// Starts over about a new image (its features from [`Backend::encode_image`]): upstream's image belongs
    /// to the first turn, so earlier turns are dropped.
    pub fn set_image(&mut self, features: Vec<f32>) {
        self.turns.clear();
        self.image = Some(features);
    }

    /// Forgets the turns and the image (the cache is reused where the next prompt allows).
    pub fn reset(&mut self) {
        self.turns.clear();
        self.image = None;
    }

    pub fn turns(&self) -> &[Turn] {
        &self.turns
    }

    pub fn has_image(&self) -> bool {
        self.image.is_some()
    }

    /// The next prompt's text for `question` and the byte ranges of the questions in it (user text).
    pub fn prompt_text(&self, info: &ModelInfo, question: &str) -> (String, Vec<Range<usize>>) {
        let history: Vec<(&str, &str)> = self.turns.iter().map(|t| (t.question.as_str(), t.answer.as_str())).collect();
        let image_tokens = self.image.as_ref().map(|_| info.vision.as_ref().map_or(0, |v| v.num_image_tokens));
        render_hermes2(&info.system_message, &history, python_strip(question), image_tokens)
    }

    /// Asks `question` as the next turn: renders the history, tokenizes it (control tokens typed in any
    /// question read as the conversation's [`UserText`] says), checks the context, keeps the cached prefix,
    /// generates, and records the turn. `on_token` streams as in [`crate::generate`].
    ///
    /// Errors: a plain llama file (no chat template to carry a history) after the first turn; a conversation
    /// that no longer fits the context ([`RuntimeError::ConversationFull`], saying how many tokens are left);
    /// anything [`crate::generate`] reports. After a backend error the cache is treated as empty.
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
        if info.prompt_format == PromptFormat::Raw {
            return Err(RuntimeError::NoChatTemplate);
        }
        if self.image.is_some() && info.vision.is_none() {
            return Err(RuntimeError::NoVisionEncoder);
        }
        let (text, user) = self.prompt_text(info, question);
        let enc = tokenizer.encode_with_user_texts(&text, &user, self.user_text == UserText::Literal)?;
        let n_img = if self.image.is_some() { info.vision.as_ref().map_or(0, |v| v.num_image_tokens) } else { 0 };
        check_image_tokens(&enc.ids, info.image_context_id(tokenizer), n_img)?;
        let context = backend.context_length().min(info.context_length);
        let used = enc.ids.len();
        if used.saturating_add(opts.max_new_tokens) > context {
            return Err(RuntimeError::ConversationFull { used, max_new_tokens: opts.max_new_tokens, context });
        }
        let prompt = EncodedPrompt { ids: enc.ids, typed_control_tokens: enc.typed_control_tokens, user_text: self.user_text };
        let ids = &prompt.ids;
        let mut keep = ids.iter().zip(&self.cached).take_while(|(a, b)| a == b).count().min(ids.len() - 1);
        // Image rows are spliced by order: the image must be entirely in the kept prefix or entirely run.
        let ctx_id = info.image_context_id(tokenizer);
        let image_after_keep = ctx_id.is_some_and(|c| ids[keep..].contains(&c));
        if image_after_keep && ctx_id.is_some_and(|c| ids[..keep].contains(&c)) {
            keep = 0;
        }
        let features = if n_img > 0 && ids[keep..].contains(&ctx_id.unwrap_or(u32::MAX)) { self.image.as_deref() } else { None };
        self.cached.clear();
        let result = generate_from(backend, tokenizer, info, keep, ids, features, opts, on_token)?;
        // The cache now holds the prompt and every generated token but the last (never fed back).
        self.cached = ids.clone();
        let fed = result.tokens.len().saturating_sub(1);
        self.cached.extend(result.tokens[..fed].iter().map(|t| t.id));
        let answer = python_strip(result.text.split("<|im_end|>").next().unwrap_or_default()).to_owned();
        self.turns.push(Turn { question: python_strip(question).to_owned(), answer });
        Ok(Reply { result, prompt, reused_tokens: keep })
    }
}
