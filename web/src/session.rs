//! One loaded MedDr model, its conversation and the streaming generation loop, shared by the browser bindings
//! and the native comparison tool (`examples/native_generate.rs`), so both sides run the same token-selection
//! code and differ only in the GPU underneath. The conversation is the runtime's [`Conversation`] (the type
//! the CLI's `chat` and the server keep): it renders the history, says which cached positions to keep
//! ([`Conversation::plan`]) and records each turn; only the awaiting of the GPU is this file's.
//!
//! The loop is async because the browser can only wait for GPU readback by yielding to the event loop
//! (`meddr_runtime::generate` drives a blocking `Backend`). Greedy decoding feeds the GPU's argmax straight
//! back and keeps up to two steps queued ahead of the token being read (`GpuModel::queue_greedy_step`): each
//! step reads back 4 bytes and the GPU never idles on the readback; sampling reads the logits row.

use std::sync::Arc;

use std::ops::ControlFlow;

use meddr_engine::{
    GpuContext, GpuModel, ImageFeatures, LoadOptions, Readback, StepInput, MAX_QUEUED_STEPS,
};
use meddr_gguf::GgufHeader;
use meddr_image::{preprocess_with_options, DicomOptions, PreprocessConfig};
use meddr_runtime::{
    encode_prompt, tokenizer_from_gguf_header, Conversation, EncodedPrompt, Generation,
    GenerationOptions, ModelInfo, Next, PromptFormat, RuntimeError, StopReason, TokenEvent,
    UserText,
};
use meddr_tokenizer::MedDrTokenizer;
use serde::Serialize;
use web_time::Instant;

use crate::check::{check_device_limits, check_meddr, ModelSummary};
use crate::error::{Result, WebError};

/// Timings and counts of one answer.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    /// Prompt positions whose cached keys and values were kept from the conversation's earlier turns.
    pub reused_tokens: usize,
    pub new_tokens: usize,
    pub image_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Tokens after the first, per second of decoding (the first comes from the prefill).
    pub decode_tokens_per_sec: f64,
    /// Where `decode_ms` went (issue 12.1's per-token breakdown; the rest is the loop itself):
    /// recording and submitting steps (`queue_greedy_step`: command encoding, and in the browser the
    /// commands' trip to the GPU process)…
    pub decode_record_ms: f64,
    /// …awaiting a step's token (`mapAsync`: GPU time not hidden behind the queued steps, plus the
    /// readback's latency)…
    pub decode_wait_ms: f64,
    /// …and the host's share of each token: sampling, stop rules, detokenizing, the token callback (into
    /// JavaScript in the browser).
    pub decode_host_ms: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GenerateOutput {
    /// Generated ids, the stop token included when generation ended on it (as upstream returns it).
    pub tokens: Vec<u32>,
    /// Decoded text without special tokens.
    pub text: String,
    /// The caller cancelled.
    pub stopped: bool,
    pub stop_reason: &'static str,
    pub stats: GenerateStats,
    /// Things the user should know about this answer (e.g. control tokens typed in the question).
    pub warnings: Vec<String>,
}

/// How a question and its image are read, beside the generation options.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ask {
    /// Overrides the file's pad-to-square preprocessing (GSCo: upstream's `RAGDataset` builds its transform
    /// without it); `None`: the file's setting.
    pub pad2square: Option<bool>,
    /// Control tokens typed in the question: chat markup (upstream, the default) or plain text.
    pub user_text: UserText,
    /// A DICOM image's window and frame (`meddr run --window C,W --frame N`); default: the file's first
    /// window and the middle frame.
    pub dicom: DicomOptions,
}

pub struct Session {
    pub model: GpuModel,
    pub info: ModelInfo,
    pub tokenizer: MedDrTokenizer,
    pub summary: ModelSummary,
    /// The conversation so far: the runtime's one session type (the CLI's `chat` and the server keep the
    /// same), which renders upstream's history, decides which cached positions to keep, and records turns.
    conversation: Conversation,
    /// The conversation's image features, on the GPU ([`Conversation::set_image_on_device`]).
    image: Option<ImageFeatures>,
    /// The pixel values `image` was encoded from by [`Session::chat`]: a client re-sending the same image
    /// with a growing history does not have it encoded again (as the server's model thread).
    last_pixels: Option<Vec<f32>>,
}

impl Session {
    /// Checks the header (MedDr file, device limits) and loads every weight through `read(offset, dst)`.
    pub fn load_from<E: std::fmt::Display>(
        ctx: Arc<GpuContext>,
        header: &GgufHeader,
        file_len: u64,
        opts: &LoadOptions,
        read: impl FnMut(u64, &mut [u8]) -> std::result::Result<(), E>,
    ) -> Result<Session> {
        let summary = check_meddr(header, file_len)?;
        check_device_limits(header, ctx.max_binding_bytes())?;
        let info = ModelInfo::from_gguf_header(header)
            .map_err(|e| WebError::NotMedDr { why: e.to_string() })?;
        let tokenizer =
            tokenizer_from_gguf_header(header).map_err(|e| WebError::Tokenizer(e.to_string()))?;
        let model = GpuModel::load_from(ctx, header, opts, read)
            .map_err(|e| WebError::Other(e.to_string()))?;
        Ok(Session {
            model,
            info,
            tokenizer,
            summary,
            conversation: Conversation::new(UserText::default()),
            image: None,
            last_pixels: None,
        })
    }

    /// The question's prompt ids ([`encode_prompt`]: upstream's template and MedDr's system message; with
    /// [`UserText::Upstream`] exactly upstream's ids).
    pub fn prompt_ids(
        &self,
        question: &str,
        has_image: bool,
        user_text: UserText,
    ) -> Result<EncodedPrompt> {
        encode_prompt(&self.tokenizer, &self.info, question, has_image, user_text).map_err(|e| {
            match e {
                RuntimeError::Tokenizer(t) => WebError::Tokenizer(t.to_string()),
                other => WebError::Other(other.to_string()),
            }
        })
    }

    /// Decodes an image (JPEG, PNG…, DICOM rendered with `dicom`'s window and frame) and applies the file's
    /// preprocessing (Pillow-exact); `pad2square` overrides the file's setting (GSCo: upstream's `RAGDataset`
    /// builds its transform without it). Also returns what the user should be told about the conversion
    /// (e.g. a 16-bit greyscale image clipped to 8 bits, the DICOM frame and window used).
    pub fn pixel_values(
        &self,
        image: &[u8],
        pad2square: Option<bool>,
        dicom: &DicomOptions,
    ) -> Result<(Vec<f32>, Vec<String>)> {
        let v = self
            .info
            .vision
            .as_ref()
            .ok_or_else(|| WebError::Other("this model file has no vision tower".into()))?;
        let p = &v.preprocessing;
        let cfg = PreprocessConfig {
            pad2square: pad2square.unwrap_or(p.pad2square),
            ..p.config()
        };
        let out = preprocess_with_options(image, &cfg, dicom)
            .map_err(|e| WebError::Image(e.to_string()))?;
        Ok((out.pixel_values, out.notes))
    }

    /// Starts a new conversation and answers `question` (about `image`, if any), calling
    /// `on_token(id, text_delta)` per token; `on_token` returning false stops after that token. `ask`: how the
    /// image and the question are read. Follow-up questions go to [`Session::follow_up`].
    pub async fn generate(
        &mut self,
        image: Option<&[u8]>,
        ask: &Ask,
        question: &str,
        opts: &GenerationOptions,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput> {
        // Checked before the image is encoded: a question that cannot be asked costs nothing.
        let first = self.prompt_ids(question, image.is_some(), ask.user_text)?;
        self.conversation.reset();
        self.conversation.set_user_text(ask.user_text);
        self.conversation.set_system(None);
        self.image = None;
        self.last_pixels = None;
        let mut notes = Vec::new();
        let t0 = Instant::now();
        if let Some(bytes) = image {
            let (pv, n) = self.pixel_values(bytes, ask.pad2square, &ask.dicom)?;
            notes = n.into_iter().map(|n| format!("image: {n}")).collect();
            let f = self
                .model
                .encode_image(&pv)
                .map_err(|e| WebError::Other(e.to_string()))?;
            self.image = Some(f);
            self.conversation.set_image_on_device();
        }
        let image_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut out = self.turn(question, Some(first), opts, on_token).await?;
        out.stats.image_ms = image_ms;
        notes.append(&mut out.warnings);
        out.warnings = notes;
        Ok(out)
    }

    /// Asks the next question of the conversation [`Session::generate`] started (upstream's `chat()` with
    /// `history`: the image stays with the first turn), keeping the cached keys and values of the history
    /// instead of running it again.
    ///
    /// Errors: no conversation yet, a model without a chat template (each question is a separate
    /// completion there), and a history that no longer fits the context (the message says how many tokens
    /// are left).
    pub async fn follow_up(
        &mut self,
        user_text: UserText,
        question: &str,
        opts: &GenerationOptions,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput> {
        if self.conversation.turns().is_empty() {
            return Err(WebError::Other(
                "no conversation to follow up: ask a first question".into(),
            ));
        }
        if self.info.prompt_format == PromptFormat::Raw {
            return Err(WebError::Other(
                "this model file has no chat template, so it cannot carry a conversation: each question is a \
                 separate completion"
                    .into(),
            ));
        }
        self.conversation.set_user_text(user_text);
        self.turn(question, None, opts, on_token).await
    }

    /// The context positions a prompt and its answer may use: the KV cache's, at most the file's.
    pub fn context_length(&self) -> usize {
        (self.model.capacity() as usize).min(self.info.context_length)
    }

    /// Answers an OpenAI-style chat request (the browser package's `chat.completions.create`): the whole
    /// history comes with every request, as a stateless client sends it. `pixel_values`: the first turn's
    /// image, preprocessed ([`Session::pixel_values`]); the same image as the last request's keeps its
    /// features and the history's cached keys and values, as the server's model thread does; none starts
    /// over without an image.
    #[allow(clippy::too_many_arguments)]
    pub async fn chat(
        &mut self,
        system: Option<String>,
        turns: Vec<meddr_runtime::Turn>,
        question: &str,
        pixel_values: Option<Vec<f32>>,
        user_text: UserText,
        opts: &GenerationOptions,
        on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput> {
        let t0 = Instant::now();
        match pixel_values {
            Some(pv) => {
                if !self.conversation.has_image() || self.last_pixels.as_ref() != Some(&pv) {
                    self.image = None;
                    self.last_pixels = None;
                    let f = self
                        .model
                        .encode_image(&pv)
                        .map_err(|e| WebError::Other(format!("encoding the image: {e}")))?;
                    self.image = Some(f);
                    self.conversation.set_image_on_device();
                    self.last_pixels = Some(pv);
                }
            }
            None => {
                self.conversation.reset();
                self.image = None;
                self.last_pixels = None;
            }
        }
        let image_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.conversation.set_user_text(user_text);
        self.conversation.set_system(system);
        self.conversation.set_turns(turns);
        let mut out = self.turn(question, None, opts, on_token).await?;
        out.stats.image_ms = image_ms;
        Ok(out)
    }

    /// The next turn runs its whole prompt instead of reusing the history's cached keys and values (a
    /// reference for tests; the answer must not change).
    pub fn forget_cache(&mut self) {
        self.conversation.drop_cache();
    }

    /// One turn of the conversation: the prompt (given for a first question: the same ids as
    /// [`Session::prompt_ids`]; else the history rendered by the conversation), the cached prefix kept, the
    /// GPU loop, and the turn recorded.
    async fn turn(
        &mut self,
        question: &str,
        first: Option<EncodedPrompt>,
        opts: &GenerationOptions,
        mut on_token: impl FnMut(u32, &str) -> bool,
    ) -> Result<GenerateOutput> {
        let context = (self.model.capacity() as usize).min(self.info.context_length);
        let runtime = |e: RuntimeError| match e {
            RuntimeError::Tokenizer(t) => WebError::Tokenizer(t.to_string()),
            other => WebError::Other(other.to_string()),
        };
        let prompt = match first {
            Some(p) => p,
            None => self
                .conversation
                .encode(
                    &self.tokenizer,
                    &self.info,
                    question,
                    self.conversation.has_image(),
                    opts.max_new_tokens,
                    context,
                )
                .map_err(runtime)?,
        };
        let warnings: Vec<String> = prompt.warning(
            "set the option userText: \"literal\" (in the app: Advanced, \"read control tokens in the question as plain text\")",
        ).into_iter().collect();
        let ids = prompt.ids;
        let plan = self
            .conversation
            .plan(&self.tokenizer, &self.info, &ids)
            .map_err(runtime)?;
        // Sampling, stop rules and streamed text are the runtime's (`Generation`, the same code as the CLI's
        // and the server's loop); this function only awaits the GPU.
        let mut gen = Generation::new(&self.tokenizer, &self.info, context, plan.keep, &ids, opts)
            .map_err(|e| WebError::Other(e.to_string()))?;
        let max_new = u32::try_from(opts.max_new_tokens).unwrap_or(u32::MAX);
        let mut stats = GenerateStats {
            prompt_tokens: ids.len(),
            reused_tokens: plan.keep,
            ..Default::default()
        };
        let mut out = GenerateOutput {
            tokens: Vec::new(),
            text: String::new(),
            stopped: false,
            stop_reason: "max_tokens",
            stats: GenerateStats::default(),
            warnings,
        };
        if gen.is_finished() {
            out.stats = stats;
            return Ok(out);
        }
        let engine = |e: meddr_engine::ModelError| match e {
            meddr_engine::ModelError::Interrupted { done, total } => {
                WebError::Interrupted { done, total }
            }
            e => WebError::Other(e.to_string()),
        };
        let features = if plan.with_image {
            self.image.as_ref()
        } else {
            None
        };
        // Greedy (no penalty, no log-probs): the GPU picks the token and only it is read back.
        let greedy = gen.device_picks();
        let read = if greedy {
            Readback::Token
        } else {
            Readback::TokenAndLogits
        };
        let t1 = Instant::now();
        let keep =
            u32::try_from(plan.keep).map_err(|_| WebError::Other("prompt too long".into()))?;
        let mut step = self
            .model
            .prefill_interruptible_async(keep, &ids[plan.keep..], features, max_new, read, &|| {
                opts.interrupt.is_set()
            })
            .await
            .map_err(engine)?;
        gen.prefill_done(t1.elapsed().as_secs_f64());
        stats.prefill_ms = t1.elapsed().as_secs_f64() * 1e3;
        let t2 = Instant::now();
        let mut callback = |ev: &TokenEvent| {
            if on_token(ev.token.id, &ev.token.text) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        };
        loop {
            // Greedy: keep the GPU busy with the next steps while this token is handled and the next one
            // is read back (mapAsync resolves on a later event-loop turn).
            let tr = Instant::now();
            while greedy && gen.may_queue(self.model.queued_steps(), MAX_QUEUED_STEPS) {
                self.model.queue_greedy_step().map_err(engine)?;
            }
            let th = Instant::now();
            stats.decode_record_ms += (th - tr).as_secs_f64() * 1e3;
            let next = match (&step.logits, greedy) {
                (Some(l), false) => gen.step(Next::Logits(l), &mut callback),
                _ => gen.step(Next::Sampled(step.token), &mut callback),
            }
            .map_err(runtime)?;
            let tw = Instant::now();
            stats.decode_host_ms += (tw - th).as_secs_f64() * 1e3;
            let Some(id) = next else { break };
            step = if greedy {
                self.model.read_queued_step().await
            } else {
                // Unqueued steps record, submit and wait here: all of it counts as waiting.
                self.model
                    .decode_step_async(StepInput::Token(id), read)
                    .await
            }
            .map_err(engine)?;
            stats.decode_wait_ms += tw.elapsed().as_secs_f64() * 1e3;
        }
        // Stopped early: forget the steps computed past the answer.
        self.model.drop_queued();
        let result = gen.finish();
        self.conversation.record(&ids, &result);
        self.conversation.record_turn(question, &result);
        out.tokens = result.tokens.iter().map(|t| t.id).collect();
        out.text = result.text;
        out.stop_reason = result.stop_reason.as_str();
        out.stopped = result.stop_reason == StopReason::Cancelled;
        stats.decode_ms = t2.elapsed().as_secs_f64() * 1e3;
        stats.new_tokens = out.tokens.len();
        if out.tokens.len() > 1 && stats.decode_ms > 0.0 {
            stats.decode_tokens_per_sec = (out.tokens.len() - 1) as f64 / (stats.decode_ms / 1e3);
        }
        out.stats = stats;
        Ok(out)
    }
}
