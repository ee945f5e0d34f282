//! The generation loop every backend shares: prefill, sample, stream, stop.

use std::ops::ControlFlow;

use meddr_tokenizer::MedDrTokenizer;
use web_time::Instant;

use crate::error::{BackendError, Result, RuntimeError};
use crate::info::ModelInfo;
use crate::sampler::{log_softmax, top_k_pairs, Sampler, SamplingParams};

/// Upper bound on `logprobs` alternatives (OpenAI's limit is 20; more is noise and costs a sort per step).
pub const MAX_LOGPROBS: usize = 20;

/// A model that turns token ids (and image features) into next-token logits, keeping its own KV cache.
pub trait Backend {
    /// Image features `[num_image_tokens, hidden]` for one preprocessed image (`[3, S, S]`).
    fn encode_image(&mut self, pixel_values: &[f32]) -> Result<Vec<f32>, BackendError>;
    /// Starts a new sequence: resets the cache, runs the prompt and returns the last position's logits.
    /// `image_features` replace the embeddings at the image context token positions, in order.
    fn prefill(
        &mut self,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError>;
    /// Keeps the first `keep` cached positions (the caller vouches that they hold the ids it means) and runs
    /// `ids` from position `keep`; returns the last position's logits. `keep == 0` is [`Backend::prefill`].
    /// Backends that cannot keep part of their cache use this default, which refuses `keep > 0`.
    fn prefill_from(
        &mut self,
        keep: usize,
        ids: &[u32],
        image_features: Option<&[f32]>,
    ) -> Result<Vec<f32>, BackendError> {
        if keep == 0 {
            return self.prefill(ids, image_features);
        }
        Err("this backend cannot keep part of its cache".into())
    }
    /// Appends one token and returns the next logits.
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, BackendError>;
    fn context_length(&self) -> usize;
    /// Backends that sample on the device (returning only an id, not the logits) override this and return
    /// `Some(next_id)`. [`generate`] uses it only when no log-probabilities are requested; the default declines.
    fn decode_sampled(
        &mut self,
        _token: u32,
        _sampling: &SamplingParams,
        _step: usize,
    ) -> Option<Result<u32, BackendError>> {
        None
    }
}

/// Which token ids end generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopPolicy {
    /// Upstream: only `meddr.chat.eos_token_id` (`<|im_end|>`).
    #[default]
    UpstreamEos,
    /// The Hermes-2 template's list (`meddr.chat.stop_token_ids`).
    TemplateStopList,
    /// Always run `max_new_tokens`.
    IgnoreEos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: StopPolicy,
    /// Report this many most likely alternatives per token (≤ [`MAX_LOGPROBS`]); `None` skips log-probs.
    pub logprobs: Option<usize>,
}

impl Default for GenerationOptions {
    /// Upstream's demo: greedy, 512 new tokens, stop on eos.
    fn default() -> Self {
        GenerationOptions {
            max_new_tokens: 512,
            sampling: SamplingParams::default(),
            stop: StopPolicy::UpstreamEos,
            logprobs: None,
        }
    }
}

/// One generated token. `text` is the text it added to the output (may be empty: special tokens, or bytes of a
/// character still incomplete); the concatenation of all `text`s is [`GenerationResult::text`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    pub id: u32,
    pub text: String,
    /// Log-probability under the model's raw distribution (before penalties and warpers); `None` when log-probs
    /// were not requested or the backend sampled on the device.
    pub logprob: Option<f32>,
    /// Most likely alternatives `(id, logprob)`, best first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// What the streaming callback sees for each token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent<'a> {
    /// 0-based index among the generated tokens.
    pub index: usize,
    pub token: &'a TokenOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Eos,
    MaxTokens,
    Cancelled,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Prompt (and image-feature splice) processing, seconds.
    pub prefill_s: f64,
    /// All decode steps, seconds.
    pub decode_s: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationResult {
    pub prompt_tokens: usize,
    pub tokens: Vec<TokenOut>,
    /// Decoded output without special tokens (upstream `skip_special_tokens=True`).
    pub text: String,
    pub stop_reason: StopReason,
    pub timings: Timings,
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

fn check_logits(l: &[f32]) -> Result<()> {
    if l.is_empty() {
        return Err(RuntimeError::BadLogits {
            len: 0,
            reason: "empty",
        });
    }
    if l.iter().any(|v| v.is_nan()) {
        return Err(RuntimeError::BadLogits {
            len: l.len(),
            reason: "contains NaN",
        });
    }
    Ok(())
}

/// Checks that the prompt's `<IMG_CONTEXT>` tokens are exactly the image's (`expected`: the image token count
/// with an image, 0 without): a question that types `<IMG_CONTEXT>` itself (the tokenizer parses it as the
/// special token, as upstream's does) would otherwise fail deep in the backend, after the weight load and the
/// image encoding, with a message about input ids. Call it right after tokenizing, before any heavy work.
/// `image_context_id`: the file's `<IMG_CONTEXT>` id (`None`: the vocabulary has none, nothing to check).
pub fn check_image_tokens(
    ids: &[u32],
    image_context_id: Option<u32>,
    expected: usize,
) -> Result<()> {
    let Some(ctx) = image_context_id else {
        return Ok(());
    };
    let found = ids.iter().filter(|&&i| i == ctx).count();
    if found != expected {
        return Err(RuntimeError::ImageTokens { found, expected });
    }
    Ok(())
}

/// Checks everything that can be checked before the backend does any work.
pub fn check_request(
    prompt_tokens: usize,
    opts: &GenerationOptions,
    context_length: usize,
) -> Result<()> {
    opts.sampling.validate()?;
    if prompt_tokens == 0 {
        return Err(RuntimeError::EmptyPrompt);
    }
    if let Some(k) = opts.logprobs {
        if k > MAX_LOGPROBS {
            return Err(RuntimeError::InvalidOption {
                field: "logprobs",
                value: k.to_string(),
                reason: "at most 20 alternatives are reported",
            });
        }
    }
    let needed = prompt_tokens.saturating_add(opts.max_new_tokens);
    if needed > context_length {
        return Err(RuntimeError::ContextOverflow {
            prompt_tokens,
            max_new_tokens: opts.max_new_tokens,
            needed,
            context_length,
        });
    }
    Ok(())
}

/// Runs one generation. `on_token` is called after each token (streaming); returning `Break` stops with
/// [`StopReason::Cancelled`] (the token just reported is kept). The stop token itself is part of `tokens`
/// (as upstream returns it) but contributes no text.
#[allow(clippy::too_many_arguments)]
pub fn generate<B: Backend + ?Sized>(
    backend: &mut B,
    tokenizer: &MedDrTokenizer,
    info: &ModelInfo,
    prompt_ids: &[u32],
    image_features: Option<&[f32]>,
    opts: &GenerationOptions,
    on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<GenerationResult> {
    generate_from(
        backend,
        tokenizer,
        info,
        0,
        prompt_ids,
        image_features,
        opts,
        on_token,
    )
}

/// [`generate`] that keeps the first `keep` positions of the backend's cache ([`Backend::prefill_from`]):
/// only `prompt_ids[keep..]` is run. `image_features` are for the image tokens in that part.
#[allow(clippy::too_many_arguments)]
pub fn generate_from<B: Backend + ?Sized>(
    backend: &mut B,
    tokenizer: &MedDrTokenizer,
    info: &ModelInfo,
    keep: usize,
    prompt_ids: &[u32],
    image_features: Option<&[f32]>,
    opts: &GenerationOptions,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<GenerationResult> {
    let context_length = backend.context_length().min(info.context_length);
    check_request(prompt_ids.len(), opts, context_length)?;
    if keep >= prompt_ids.len() {
        return Err(RuntimeError::InvalidOption {
            field: "keep",
            value: keep.to_string(),
            reason: "at least one prompt token must be run to get the next token's logits",
        });
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let stop_ids = info.stop_ids(opts.stop);
    let vocab = tokenizer.vocab_size();
    let mut result = GenerationResult {
        prompt_tokens: prompt_ids.len(),
        tokens: Vec::with_capacity(opts.max_new_tokens.min(context_length)),
        text: String::new(),
        stop_reason: StopReason::MaxTokens,
        timings: Timings::default(),
    };
    if opts.max_new_tokens == 0 {
        return Ok(result);
    }
    let t0 = Instant::now();
    let mut logits = Some(
        backend
            .prefill_from(keep, &prompt_ids[keep..], image_features)
            .map_err(RuntimeError::Backend)?,
    );
    result.timings.prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut history = prompt_ids.to_vec();
    let mut stream = tokenizer.decode_stream();
    let mut next_id: Option<u32> = None;
    loop {
        let (id, logprob, top) = match (logits.take(), next_id.take()) {
            (Some(l), _) => {
                check_logits(&l)?;
                let id = sampler.sample(&l, &history)?;
                match opts.logprobs {
                    Some(k) => {
                        let lp = log_softmax(&l);
                        let chosen = lp.get(id as usize).copied();
                        (id, chosen, top_k_pairs(&lp, k))
                    }
                    None => (id, None, Vec::new()),
                }
            }
            (None, Some(id)) => (id, None, Vec::new()),
            (None, None) => unreachable!("each step provides logits or a device-sampled id"),
        };
        if id as usize >= vocab {
            return Err(RuntimeError::TokenOutOfRange { id, vocab });
        }
        history.push(id);
        // The last token also flushes held-back bytes, so the streamed deltas add up to the final text.
        let last = stop_ids.contains(&id) || result.tokens.len() + 1 >= opts.max_new_tokens;
        let text = if last {
            stream.step_last(id)?
        } else {
            stream.step(id)?
        }
        .unwrap_or_default();
        result.text.push_str(&text);
        result.tokens.push(TokenOut {
            id,
            text,
            logprob,
            top_logprobs: top,
        });
        let index = result.tokens.len() - 1;
        let flow = on_token(&TokenEvent {
            index,
            token: &result.tokens[index],
        });
        if stop_ids.contains(&id) {
            result.stop_reason = StopReason::Eos;
            break;
        }
        if flow.is_break() {
            result.stop_reason = StopReason::Cancelled;
            break;
        }
        if result.tokens.len() >= opts.max_new_tokens {
            result.stop_reason = StopReason::MaxTokens;
            break;
        }
        let device = if opts.logprobs.is_none() {
            backend.decode_sampled(id, &opts.sampling, result.tokens.len())
        } else {
            None
        };
        match device {
            Some(r) => next_id = Some(r.map_err(RuntimeError::Backend)?),
            None => logits = Some(backend.decode(id).map_err(RuntimeError::Backend)?),
        }
    }
    // Cancelled: bytes of a character still unfinished at that point are dropped, so the text is exactly
    // what the callback was given (the other ends flushed them through `step_last`).
    result.timings.decode_s = t1.elapsed().as_secs_f64();
    result.timings.prefill_tokens_per_s = rate(prompt_ids.len() - keep, result.timings.prefill_s);
    result.timings.decode_tokens_per_s = rate(
        result.tokens.len().saturating_sub(1),
        result.timings.decode_s,
    );
    Ok(result)
}
