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
    /// [`Backend::prefill_from`] that asks `interrupted()` before it starts and, in backends that run a
    /// prompt in chunks, between chunks, stopping with [`Prefill::Interrupted`] when it says so. The default
    /// checks only before starting.
    fn prefill_interruptible(
        &mut self,
        keep: usize,
        ids: &[u32],
        image_features: Option<&[f32]>,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Prefill, BackendError> {
        if interrupted() {
            return Ok(Prefill::Interrupted { done: 0 });
        }
        self.prefill_from(keep, ids, image_features)
            .map(Prefill::Logits)
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
    /// Greedy steps this backend can keep queued on the device ahead of the token being read, for these
    /// sampling settings (each queued step feeds the device's own argmax to the next, so the device works on
    /// step n + 1 while the host streams token n). 0, the default: no queueing. [`generate`] uses it only
    /// when no log-probabilities are requested, and then calls the three methods below.
    fn max_queued_greedy(&self, _sampling: &SamplingParams) -> usize {
        0
    }
    /// Queues the next greedy step after the last prefill, read or queued step.
    fn queue_greedy(&mut self) -> Result<(), BackendError> {
        Err("this backend does not queue steps".into())
    }
    /// The token of the oldest queued step. `fed` is the token the caller appends before it (the previous
    /// step's choice): a backend whose queued step took another input must discard its queue and run `fed`.
    fn read_queued(&mut self, fed: u32) -> Result<u32, BackendError> {
        let _ = fed;
        Err("this backend does not queue steps".into())
    }
    /// Forgets queued steps that were not read (generation stopped): the cache ends at the last token read.
    fn drop_queued(&mut self) {}
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
    /// Asked between the prompt's chunks whether the caller still wants the answer (once a token is out,
    /// the token callback's `Break` stops instead). Default: never.
    pub interrupt: Interrupt,
}

impl Default for GenerationOptions {
    /// Upstream's demo: greedy, 512 new tokens, stop on eos.
    fn default() -> Self {
        GenerationOptions {
            max_new_tokens: 512,
            sampling: SamplingParams::default(),
            stop: StopPolicy::UpstreamEos,
            logprobs: None,
            interrupt: Interrupt::default(),
        }
    }
}

// Natively the check travels with the options to the server's model thread; in the browser (one thread)
// it calls into JavaScript, whose functions are not `Send`.
#[cfg(not(target_arch = "wasm32"))]
type InterruptCheck = dyn Fn() -> bool + Send + Sync;
#[cfg(target_arch = "wasm32")]
type InterruptCheck = dyn Fn() -> bool;

/// A check that stops a generation before its first token: a long prompt runs in chunks
/// ([`Backend::prefill_interruptible`]), and the backend asks `check()` between them. A server passes "the client
/// hung up", a page "Stop was pressed". Clones share the check; the default never interrupts.
#[derive(Clone, Default)]
pub struct Interrupt(Option<std::sync::Arc<InterruptCheck>>);

impl Interrupt {
    /// Interrupts once `check` returns true.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(check: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Interrupt(Some(std::sync::Arc::new(check)))
    }

    /// Interrupts once `check` returns true.
    #[cfg(target_arch = "wasm32")]
    pub fn new(check: impl Fn() -> bool + 'static) -> Self {
        Interrupt(Some(std::sync::Arc::new(check)))
    }

    /// Whether the caller asked to stop.
    pub fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c())
    }
}

impl std::fmt::Debug for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Interrupt(check)"
        } else {
            "Interrupt(never)"
        })
    }
}

impl PartialEq for Interrupt {
    /// The same check (or none on both sides): options compare equal only when they stop alike.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// How [`Backend::prefill_interruptible`] ended.
#[derive(Debug)]
pub enum Prefill {
    /// The last position's logits.
    Logits(Vec<f32>),
    /// The check said stop after `done` of the prompt's tokens had run; the cache holds an unknown prefix.
    Interrupted { done: usize },
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
    /// Where `decode_s` went (the rest is the loop itself), seconds: recording and submitting queued
    /// steps (command encoding; in a browser also the commands' trip to its GPU process)…
    pub decode_record_s: f64,
    /// …awaiting each step's output (device time not hidden behind queued steps, plus readback latency)…
    pub decode_wait_s: f64,
    /// …and the host's share of each token: sampling, stop rules, detokenizing, the token callback.
    pub decode_host_s: f64,
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
    on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<GenerationResult> {
    let context_length = backend.context_length().min(info.context_length);
    let g = Generation::new(tokenizer, info, context_length, keep, prompt_ids, opts)?;
    let mut steps = BackendSteps {
        backend,
        image_features,
    };
    ready(drive(g, &mut steps, on_token))?
}

/// Polls a future that cannot wait (every await in it is [`BackendSteps`]', whose calls return at once).
/// Hand-written instead of an executor crate: nothing here ever needs waking.
fn ready<F: std::future::Future>(f: F) -> Result<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Ok(v),
        std::task::Poll::Pending => Err(RuntimeError::Backend(
            "a blocking backend's step did not finish when called".into(),
        )),
    }
}

/// What the device gave for the next position.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// Its logits, `[vocab]`, sampled on the host.
    Logits(Vec<f32>),
    /// The token the device picked itself (its argmax, or its own sampler).
    Sampled(u32),
}

/// The device side of the one generation loop ([`drive`]), each call awaited: a blocking [`Backend`]
/// (through [`generate_from`], whose calls are ready at once) and the browser's GPU model (whose readbacks
/// resolve on a later event-loop turn) run the same loop, so queueing, timing and the order of feeds are one
/// implementation. Implementations keep their own image features and readback choices.
// The futures are awaited where they are made, on one thread (the browser's is not `Send`).
#[allow(async_fn_in_trait)]
pub trait Steps {
    /// Runs `ids` after the first `keep` cached positions (the generation's prompt minus the kept part) and
    /// gives the output for the next position; `device_picks` ([`Generation::device_picks`]) allows a
    /// [`StepOutput::Sampled`]. Asks `interrupted()` between chunks of the prompt and then fails with
    /// [`RuntimeError::Interrupted`].
    async fn prefill(
        &mut self,
        keep: usize,
        ids: &[u32],
        device_picks: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<StepOutput>;
    /// Greedy steps that may be queued ahead of the token being read for this generation (0: none; only
    /// asked when [`Generation::device_picks`]).
    fn max_queued(&self, generation: &Generation<'_>) -> usize;
    /// Queues the next greedy step (fed the device's own choice) after the last prefill, read or queued step.
    fn queue(&mut self) -> Result<()>;
    /// The token of the oldest queued step; `fed` is what the loop appends before it (its previous choice).
    async fn read_queued(&mut self, fed: u32) -> Result<u32>;
    /// Appends `fed` and gives the output for the next position; logits when
    /// [`Generation::needs_logits`], otherwise whatever the device offers.
    async fn step(&mut self, fed: u32, generation: &Generation<'_>) -> Result<StepOutput>;
    /// Forgets queued steps that were not read: the cache ends at the last token read.
    fn drop_queued(&mut self);
}

/// Runs a generation on `steps`: prefill, then each token through [`Generation::step`] (sampling, streaming
/// to `on_token`, stop rules), keeping up to [`Steps::max_queued`] greedy steps on the device while the host
/// handles the token before them. Fills [`Timings`], with the decode time split into recording, waiting and
/// the host's share. Stopped early or failed, the queued steps are dropped so the cache holds exactly the
/// fed tokens.
pub async fn drive<S: Steps + ?Sized>(
    mut g: Generation<'_>,
    steps: &mut S,
    mut on_token: impl FnMut(&TokenEvent) -> ControlFlow<()>,
) -> Result<GenerationResult> {
    if g.is_finished() {
        return Ok(g.finish());
    }
    let run = g.history[g.keep..].to_vec();
    let interrupt = g.opts.interrupt.clone();
    let t0 = Instant::now();
    let picks = g.device_picks();
    let mut next = steps
        .prefill(g.keep, &run, picks, &|| interrupt.is_set())
        .await?;
    g.prefill_done(t0.elapsed().as_secs_f64());
    let depth = if picks { steps.max_queued(&g) } else { 0 };
    let mut queued = 0usize;
    let (mut record, mut host, mut wait) = (0.0f64, 0.0f64, 0.0f64);
    let outcome: Result<()> = async {
        loop {
            let tr = Instant::now();
            while g.may_queue(queued, depth) {
                steps.queue()?;
                queued += 1;
            }
            let th = Instant::now();
            record += (th - tr).as_secs_f64();
            let fed = match &next {
                StepOutput::Logits(l) => g.step(Next::Logits(l), &mut on_token)?,
                StepOutput::Sampled(id) => g.step(Next::Sampled(*id), &mut on_token)?,
            };
            let tw = Instant::now();
            host += (tw - th).as_secs_f64();
            let Some(id) = fed else {
                return Ok::<(), RuntimeError>(());
            };
            next = if queued > 0 {
                queued -= 1;
                StepOutput::Sampled(steps.read_queued(id).await?)
            } else {
                steps.step(id, &g).await?
            };
            wait += tw.elapsed().as_secs_f64();
        }
    }
    .await;
    if queued > 0 {
        steps.drop_queued();
    }
    outcome?;
    let mut result = g.finish();
    result.timings.decode_record_s = record;
    result.timings.decode_host_s = host;
    result.timings.decode_wait_s = wait;
    Ok(result)
}

/// A blocking [`Backend`] as [`Steps`]: every call returns before its future is first polled.
struct BackendSteps<'a, B: Backend + ?Sized> {
    backend: &'a mut B,
    image_features: Option<&'a [f32]>,
}

impl<B: Backend + ?Sized> Steps for BackendSteps<'_, B> {
    async fn prefill(
        &mut self,
        keep: usize,
        ids: &[u32],
        _device_picks: bool,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<StepOutput> {
        match self
            .backend
            .prefill_interruptible(keep, ids, self.image_features, interrupted)
            .map_err(RuntimeError::Backend)?
        {
            Prefill::Logits(l) => Ok(StepOutput::Logits(l)),
            Prefill::Interrupted { done } => Err(RuntimeError::Interrupted {
                done,
                total: ids.len(),
            }),
        }
    }

    fn max_queued(&self, g: &Generation<'_>) -> usize {
        self.backend.max_queued_greedy(&g.opts.sampling)
    }

    fn queue(&mut self) -> Result<()> {
        self.backend.queue_greedy().map_err(RuntimeError::Backend)
    }

    async fn read_queued(&mut self, fed: u32) -> Result<u32> {
        self.backend.read_queued(fed).map_err(RuntimeError::Backend)
    }

    async fn step(&mut self, fed: u32, g: &Generation<'_>) -> Result<StepOutput> {
        let device = if g.needs_logits() {
            None
        } else {
            self.backend
                .decode_sampled(fed, &g.opts.sampling, g.generated())
        };
        Ok(match device {
            Some(r) => StepOutput::Sampled(r.map_err(RuntimeError::Backend)?),
            None => StepOutput::Logits(self.backend.decode(fed).map_err(RuntimeError::Backend)?),
        })
    }

    fn drop_queued(&mut self) {
        self.backend.drop_queued();
    }
}

/// What the model gave for the next position: its logits, or a token it sampled on the device.
#[derive(Debug, Clone, Copy)]
pub enum Next<'a> {
    Logits(&'a [f32]),
    Sampled(u32),
}

/// One generation's bookkeeping (sampling, log-probabilities, streamed text, stop rules, timings) apart from
/// running the model, so that the synchronous loop ([`generate_from`]) and an asynchronous one (the browser,
/// whose GPU readbacks are awaited) are one implementation. Drive it as: [`Generation::new`], the
/// backend's prefill, [`Generation::prefill_done`], then [`Generation::step`] with each output until it
/// returns `None` (feeding the returned token to the backend in between), then [`Generation::finish`].
pub struct Generation<'t> {
    opts: GenerationOptions,
    sampler: Sampler,
    stop_ids: Vec<u32>,
    stream: meddr_tokenizer::DecodeStream<'t>,
    history: Vec<u32>,
    result: GenerationResult,
    vocab: usize,
    /// Prompt positions that were kept instead of run (for the prefill rate).
    keep: usize,
    decode_start: Option<Instant>,
    finished: bool,
}

impl<'t> Generation<'t> {
    /// Checks the request against `context_length` ([`check_request`]) and `keep` (at least one prompt
    /// token must run, to give the next token's logits).
    pub fn new(
        tokenizer: &'t MedDrTokenizer,
        info: &ModelInfo,
        context_length: usize,
        keep: usize,
        prompt_ids: &[u32],
        opts: &GenerationOptions,
    ) -> Result<Self> {
        check_request(prompt_ids.len(), opts, context_length)?;
        if keep >= prompt_ids.len() {
            return Err(RuntimeError::InvalidOption {
                field: "keep",
                value: keep.to_string(),
                reason: "at least one prompt token must be run to get the next token's logits",
            });
        }
        Ok(Generation {
            sampler: Sampler::new(opts.sampling.clone())?,
            stop_ids: info.stop_ids(opts.stop),
            stream: tokenizer.decode_stream(),
            history: prompt_ids.to_vec(),
            result: GenerationResult {
                prompt_tokens: prompt_ids.len(),
                tokens: Vec::with_capacity(opts.max_new_tokens.min(context_length)),
                text: String::new(),
                stop_reason: StopReason::MaxTokens,
                timings: Timings::default(),
            },
            vocab: tokenizer.vocab_size(),
            keep,
            decode_start: None,
            finished: opts.max_new_tokens == 0,
            opts: opts.clone(),
        })
    }

    /// Nothing (more) to generate: `max_new_tokens` is 0, or a stop rule ended it.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the outputs must be logits (log-probabilities were requested); otherwise a backend may
    /// sample on the device and give [`Next::Sampled`].
    pub fn needs_logits(&self) -> bool {
        self.opts.logprobs.is_some()
    }

    /// Whether the device may pick the tokens itself (its argmax is this generation's choice and no
    /// log-probabilities are wanted), so that steps can be queued ahead of the token being read.
    pub fn device_picks(&self) -> bool {
        !self.needs_logits() && self.opts.sampling.is_device_argmax()
    }

    /// Whether one more step may be queued on the device, with `queued` steps queued already and at most
    /// `depth` allowed: never past `max_new_tokens` (which [`check_request`] fitted into the context).
    pub fn may_queue(&self, queued: usize, depth: usize) -> bool {
        queued < depth && self.generated() + 1 + queued < self.opts.max_new_tokens
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.result.tokens.len()
    }

    /// Records how long the prefill took (seconds) and starts the decode clock.
    pub fn prefill_done(&mut self, seconds: f64) {
        self.result.timings.prefill_s = seconds;
        self.decode_start = Some(Instant::now());
    }

    /// Takes the model's output for the next position: picks the token (sampling from logits, or the
    /// device's choice), streams it to `on_token`, applies the stop rules. Returns the token to feed to the
    /// model for the following position, or `None` when generation is over.
    pub fn step(
        &mut self,
        next: Next<'_>,
        on_token: &mut impl FnMut(&TokenEvent) -> ControlFlow<()>,
    ) -> Result<Option<u32>> {
        if self.finished {
            return Ok(None);
        }
        let (id, logprob, top) = match next {
            Next::Logits(l) => {
                check_logits(l)?;
                let id = self.sampler.sample(l, &self.history)?;
                match self.opts.logprobs {
                    Some(k) => {
                        let lp = log_softmax(l);
                        let chosen = lp.get(id as usize).copied();
                        (id, chosen, top_k_pairs(&lp, k))
                    }
                    None => (id, None, Vec::new()),
                }
            }
            Next::Sampled(id) => (id, None, Vec::new()),
        };
        if id as usize >= self.vocab {
            return Err(RuntimeError::TokenOutOfRange {
                id,
                vocab: self.vocab,
            });
        }
        self.history.push(id);
        let is_stop = self.stop_ids.contains(&id);
        // The last token also flushes held-back bytes, so the streamed deltas add up to the final text.
        let last = is_stop || self.result.tokens.len() + 1 >= self.opts.max_new_tokens;
        let text = if last {
            self.stream.step_last(id)?
        } else {
            self.stream.step(id)?
        }
        .unwrap_or_default();
        self.result.text.push_str(&text);
        self.result.tokens.push(TokenOut {
            id,
            text,
            logprob,
            top_logprobs: top,
        });
        let index = self.result.tokens.len() - 1;
        let flow = on_token(&TokenEvent {
            index,
            token: &self.result.tokens[index],
        });
        self.finished = true;
        if is_stop {
            self.result.stop_reason = StopReason::Eos;
        } else if flow.is_break() {
            // Bytes of a character still unfinished at this point are dropped, so the text is exactly what
            // the callback was given (the other ends flushed them through `step_last`).
            self.result.stop_reason = StopReason::Cancelled;
        } else if self.result.tokens.len() >= self.opts.max_new_tokens {
            self.result.stop_reason = StopReason::MaxTokens;
        } else {
            self.finished = false;
            return Ok(Some(id));
        }
        Ok(None)
    }

    /// The result, with its timings.
    pub fn finish(mut self) -> GenerationResult {
        let t = &mut self.result.timings;
        t.decode_s = self.decode_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        t.prefill_tokens_per_s = rate(self.result.prompt_tokens - self.keep, t.prefill_s);
        t.decode_tokens_per_s = rate(self.result.tokens.len().saturating_sub(1), t.decode_s);
        self.result
    }
}
