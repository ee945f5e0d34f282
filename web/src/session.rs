//! One loaded MedDr model, its conversation and the streaming generation loop, shared by the browser bindings
//! and the native comparison tool (`examples/native_generate.rs`), so both sides run the same token-selection
//! code and differ only in the GPU underneath. The conversation is the runtime's [`Conversation`] (the type
//! the CLI's `chat` and the server keep): it renders the history, says which cached positions to keep
//! ([`Conversation::plan`]) and records each turn; only the awaiting of the GPU is this file's.
//!
//! The loop is the runtime's [`drive`] (the CLI's and the server's too, over a blocking backend); this file
//! gives it the GPU model as [`Steps`] whose readbacks are awaited, because the browser can only wait for
//! them by yielding to the event loop. Greedy decoding feeds the GPU's argmax straight back and keeps up to
//! two steps queued ahead of the token being read (`GpuModel::queue_greedy_step`): each step reads back
//! 4 bytes and the GPU never idles on the readback; sampling reads the logits row.

use std::sync::Arc;

use std::ops::ControlFlow;

use meddr_engine::{
    GpuContext, GpuModel, ImageFeatures, LoadOptions, Readback, Step, StepInput, MAX_QUEUED_STEPS,
};
use meddr_gguf::GgufHeader;
use meddr_image::{preprocess_with_options, DicomOptions, PreprocessConfig};
use meddr_runtime::{
    drive, encode_prompt, tokenizer_from_gguf_header, Conversation, EncodedPrompt, Generation,
    GenerationOptions, ModelInfo, PromptFormat, RuntimeError, StepOutput, Steps, StopReason,
    TokenEvent, UserText,
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
        // The loop is the runtime's (`drive`: sampling, stop rules, streamed text, step queueing, timings;
        // the same code as the CLI's and the server's); only the awaiting of the GPU is `GpuSteps`'.
        let gen = Generation::new(&self.tokenizer, &self.info, context, plan.keep, &ids, opts)
            .map_err(|e| WebError::Other(e.to_string()))?;
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
        let features = if plan.with_image {
            self.image.as_ref()
        } else {
            None
        };
        let mut steps = GpuSteps {
            model: &mut self.model,
            image: features,
            max_new: u32::try_from(opts.max_new_tokens).unwrap_or(u32::MAX),
        };
        let result = drive(gen, &mut steps, |ev: &TokenEvent| {
            if on_token(ev.token.id, &ev.token.text) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        })
        .await
        .map_err(|e| match e {
            RuntimeError::Interrupted { done, total } => WebError::Interrupted {
                done: u32::try_from(done).unwrap_or(u32::MAX),
                total: u32::try_from(total).unwrap_or(u32::MAX),
            },
            // The engine's own message, as before the loop was shared.
            RuntimeError::Backend(e) => WebError::Other(e.to_string()),
            other => runtime(other),
        })?;
        self.conversation.record(&ids, &result);
        self.conversation.record_turn(question, &result);
        out.tokens = result.tokens.iter().map(|t| t.id).collect();
        out.text = result.text;
        out.stop_reason = result.stop_reason.as_str();
        out.stopped = result.stop_reason == StopReason::Cancelled;
        let t = &result.timings;
        stats.prefill_ms = t.prefill_s * 1e3;
        stats.decode_ms = t.decode_s * 1e3;
        stats.decode_record_ms = t.decode_record_s * 1e3;
        stats.decode_wait_ms = t.decode_wait_s * 1e3;
        stats.decode_host_ms = t.decode_host_s * 1e3;
        stats.new_tokens = out.tokens.len();
        stats.decode_tokens_per_sec = t.decode_tokens_per_s;
        out.stats = stats;
        Ok(out)
    }
}

/// The GPU model as the runtime's generation loop ([`drive`]) drives it: the prefill and the steps are
/// awaited (a readback resolves on a later event-loop turn in the browser). Greedy reads back only the
/// GPU's 4-byte argmax and keeps up to [`MAX_QUEUED_STEPS`] steps queued; sampling reads the logits row.
struct GpuSteps<'a> {
    model: &'a mut GpuModel,
    image: Option<&'a ImageFeatures>,
    max_new: u32,
}

fn engine_error(e: meddr_engine::ModelError) -> RuntimeError {
    match e {
        meddr_engine::ModelError::Interrupted { done, total } => RuntimeError::Interrupted {
            done: done as usize,
            total: total as usize,
        },
        e => RuntimeError::Backend(e.to_string().into()),
    }
}

fn readback(device_picks: bool) -> Readback {
    if device_picks {
        Readback::Token
    } else {
        Readback::TokenAndLogits
    }
}

fn output(step: Step) -> StepOutput {
    match step.logits {
        Some(l) => StepOutput::Logits(l),
        None => StepOutput::Sampled(step.token),
    }
}

impl Steps for GpuSteps<'_> {
    async fn prefill(
        &mut self,
        keep: usize,
        ids: &[u32],
        device_picks: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> std::result::Result<StepOutput, RuntimeError> {
        let keep = u32::try_from(keep).map_err(|_| RuntimeError::InvalidOption {
            field: "keep",
            value: keep.to_string(),
            reason: "past the engine's u32 positions",
        })?;
        self.model
            .prefill_interruptible_async(
                keep,
                ids,
                self.image,
                self.max_new,
                readback(device_picks),
                interrupted,
            )
            .await
            .map(output)
            .map_err(engine_error)
    }

    fn max_queued(&self, _: &Generation<'_>) -> usize {
        MAX_QUEUED_STEPS
    }

    fn queue(&mut self) -> std::result::Result<(), RuntimeError> {
        self.model.queue_greedy_step().map_err(engine_error)
    }

    async fn read_queued(&mut self, _fed: u32) -> std::result::Result<u32, RuntimeError> {
        // A queued step was fed the GPU's own argmax, which is the loop's choice whenever it queues.
        self.model
            .read_queued_step()
            .await
            .map(|s| s.token)
            .map_err(engine_error)
    }

    async fn step(
        &mut self,
        fed: u32,
        g: &Generation<'_>,
    ) -> std::result::Result<StepOutput, RuntimeError> {
        self.model
            .decode_step_async(StepInput::Token(fed), readback(g.device_picks()))
            .await
            .map(output)
            .map_err(engine_error)
    }

    fn drop_queued(&mut self) {
        self.model.drop_queued();
    }
}
