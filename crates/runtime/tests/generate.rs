//! The generation loop on a scripted backend: stopping policies, cancellation, overflow, log-probs, streaming.

mod common;

use std::ops::ControlFlow;

use common::*;
use meddr_runtime::sampler::log_softmax;
use meddr_runtime::{
    generate, Backend, BackendError, GenerationOptions, ModelInfo, RuntimeError, SamplingParams,
    StopPolicy, StopReason,
};

const VOCAB: usize = 2009;

/// Emits logits that make `script[i]` the clear greedy choice at step `i`.
struct Scripted {
    script: Vec<u32>,
    step: usize,
    prefills: usize,
    decoded: Vec<u32>,
    device_sampling: bool,
    context: usize,
}

impl Scripted {
    fn new(script: &[u32]) -> Self {
        Scripted {
            script: script.to_vec(),
            step: 0,
            prefills: 0,
            decoded: vec![],
            device_sampling: false,
            context: 4096,
        }
    }
    fn logits(&self) -> Vec<f32> {
        let mut l: Vec<f32> = (0..VOCAB).map(|i| ((i * 37 % 101) as f32) * 0.01).collect();
        l[self.script[self.step] as usize] = 5.0 + self.step as f32 * 0.1;
        l
    }
}

impl Backend for Scripted {
    fn encode_image(&mut self, _pv: &[f32]) -> Result<Vec<f32>, BackendError> {
        Err("no vision".into())
    }
    fn prefill(&mut self, _ids: &[u32], _f: Option<&[f32]>) -> Result<Vec<f32>, BackendError> {
        self.prefills += 1;
        self.step = 0;
        Ok(self.logits())
    }
    fn decode(&mut self, token: u32) -> Result<Vec<f32>, BackendError> {
        self.decoded.push(token);
        self.step += 1;
        Ok(self.logits())
    }
    fn context_length(&self) -> usize {
        self.context
    }
    fn decode_sampled(
        &mut self,
        token: u32,
        _s: &SamplingParams,
        _step: usize,
    ) -> Option<Result<u32, BackendError>> {
        if !self.device_sampling {
            return None;
        }
        self.decoded.push(token);
        self.step += 1;
        Some(Ok(self.script[self.step]))
    }
}

fn info() -> ModelInfo {
    ModelInfo {
        name: None,
        format_version: 1,
        prompt_format: meddr_runtime::PromptFormat::MedDr,
        context_length: 4096,
        vocab_size: VOCAB,
        eos_token_id: 7,
        stop_token_ids: vec![2, 6, 7, 8],
        system_message: "Answer the questions.".into(),
        chat_template: "Hermes-2".into(),
        vision: None,
    }
}

fn opts(max: usize, stop: StopPolicy) -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: max,
        stop,
        ..Default::default()
    }
}

const SCRIPT: [u32; 8] = [955, 916, 2, 1050, 7, 300, 301, 302];

#[test]
fn upstream_policy_stops_on_eos_only() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6, 1923],
        None,
        &opts(8, StopPolicy::UpstreamEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let ids: Vec<u32> = r.tokens.iter().map(|t| t.id).collect();
    assert_eq!(
        ids,
        &SCRIPT[..5],
        "token 2 must not stop; 7 stops and is kept"
    );
    assert_eq!(r.stop_reason, StopReason::Eos);
    assert_eq!(r.prompt_tokens, 2);
    assert_eq!(r.text, tok.decode(&SCRIPT[..5], true).unwrap());
    assert_eq!(
        r.tokens.iter().map(|t| t.text.as_str()).collect::<String>(),
        r.text
    );
    // The stop token is never fed back.
    assert_eq!(b.decoded, &SCRIPT[..4]);
    assert!(r
        .tokens
        .iter()
        .all(|t| t.logprob.is_none() && t.top_logprobs.is_empty()));
}

#[test]
fn template_list_and_ignore_eos() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6],
        None,
        &opts(8, StopPolicy::TemplateStopList),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(
        r.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        &SCRIPT[..3]
    );
    assert_eq!(r.stop_reason, StopReason::Eos);

    let mut b = Scripted::new(&SCRIPT);
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6],
        None,
        &opts(7, StopPolicy::IgnoreEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(
        r.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        &SCRIPT[..7]
    );
    assert_eq!(r.stop_reason, StopReason::MaxTokens);
}

#[test]
fn callback_streams_and_cancels() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    let mut seen = vec![];
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6],
        None,
        &opts(8, StopPolicy::IgnoreEos),
        |ev| {
            seen.push((ev.index, ev.token.id));
            if ev.index == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert_eq!(seen, vec![(0, 955), (1, 916)]);
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    assert_eq!(r.tokens.len(), 2);
    assert_eq!(b.decoded, vec![955]);
}

/// An interrupt that is set before the prompt runs ends the generation with `Interrupted` and nothing run
/// (the default `prefill_interruptible` checks before starting); one that never fires changes nothing.
#[test]
fn an_interrupt_stops_before_the_prompt_runs() {
    let tok = tokenizer();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let mut o = opts(4, StopPolicy::IgnoreEos);
    o.interrupt = meddr_runtime::Interrupt::new(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    });
    let mut b = Scripted::new(&SCRIPT);
    let mut seen = 0;
    let e = generate(&mut b, &tok, &info(), &[6, 9, 11], None, &o, |_| {
        seen += 1;
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(
        matches!(e, RuntimeError::Interrupted { done: 0, total: 3 }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "stopped by the caller during the prompt, after 0 of its 3 tokens"
    );
    assert_eq!(
        (
            b.prefills,
            seen,
            asked.load(std::sync::atomic::Ordering::SeqCst)
        ),
        (0, 0, 1)
    );
    assert_ne!(
        o,
        opts(4, StopPolicy::IgnoreEos),
        "options with a check differ from options without"
    );
    assert_eq!(o.clone(), o, "clones share the check");

    let mut never = opts(4, StopPolicy::IgnoreEos);
    never.interrupt = meddr_runtime::Interrupt::new(|| false);
    let mut b = Scripted::new(&SCRIPT);
    let r = generate(&mut b, &tok, &info(), &[6], None, &never, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(r.tokens.len(), 4);
    assert_eq!(b.prefills, 1);
}

#[test]
fn context_overflow_is_refused_before_any_work() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    b.context = 100;
    let prompt = vec![6u32; 90];
    let e = generate(
        &mut b,
        &tok,
        &info(),
        &prompt,
        None,
        &opts(11, StopPolicy::UpstreamEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            RuntimeError::ContextOverflow {
                prompt_tokens: 90,
                max_new_tokens: 11,
                needed: 101,
                context_length: 100
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("context length is 100"), "{e}");
    assert_eq!(b.prefills, 0);
    // Exactly full is fine.
    let mut b = Scripted::new(&[10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]);
    b.context = 100;
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &prompt,
        None,
        &opts(10, StopPolicy::IgnoreEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(r.tokens.len(), 10);
    assert_eq!(r.stop_reason, StopReason::MaxTokens);
    let e = generate(
        &mut b,
        &tok,
        &info(),
        &[],
        None,
        &opts(1, StopPolicy::IgnoreEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(e, RuntimeError::EmptyPrompt));
}

#[test]
fn logprobs_are_the_raw_log_softmax() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    let mut o = opts(3, StopPolicy::IgnoreEos);
    o.logprobs = Some(4);
    let r = generate(&mut b, &tok, &info(), &[6], None, &o, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let mut replay = Scripted::new(&SCRIPT);
    for (i, t) in r.tokens.iter().enumerate() {
        replay.step = i;
        let lp = log_softmax(&replay.logits());
        assert_eq!(t.logprob, Some(lp[t.id as usize]));
        assert_eq!(t.top_logprobs.len(), 4);
        assert_eq!(t.top_logprobs[0], (t.id, lp[t.id as usize]));
        let mut sorted = lp.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let got: Vec<f32> = t.top_logprobs.iter().map(|p| p.1).collect();
        assert_eq!(got, sorted[..4].to_vec());
    }
    o.logprobs = Some(21);
    assert!(generate(&mut b, &tok, &info(), &[6], None, &o, |_| {
        ControlFlow::Continue(())
    })
    .is_err());
}

#[test]
fn device_sampling_path_gives_the_same_tokens() {
    let tok = tokenizer();
    let mut b = Scripted::new(&SCRIPT);
    b.device_sampling = true;
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6],
        None,
        &opts(8, StopPolicy::UpstreamEos),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(
        r.tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        &SCRIPT[..5]
    );
}

#[test]
fn streamed_text_is_the_final_text_when_the_answer_ends_inside_a_character() {
    // Issue 9.1: an answer ending on the byte tokens <0xF0> <0x9F> (half of an emoji) streamed only what came
    // before, while the final text rightly ends in two U+FFFD (upstream: one per dangling byte).
    let tok = tokenizer();
    let (f0, x9f) = (
        tok.token_to_id("<0xF0>").unwrap(),
        tok.token_to_id("<0x9F>").unwrap(),
    );
    for (script, max, reason) in [
        (vec![955, f0, x9f, 300], 3, StopReason::MaxTokens),
        (vec![955, f0, x9f, 7], 8, StopReason::Eos),
    ] {
        let mut b = Scripted::new(&script);
        let mut streamed = String::new();
        let r = generate(
            &mut b,
            &tok,
            &info(),
            &[6, 1923],
            None,
            &opts(max, StopPolicy::UpstreamEos),
            |ev| {
                streamed.push_str(&ev.token.text);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(r.stop_reason, reason);
        let ids: Vec<u32> = r.tokens.iter().map(|t| t.id).collect();
        assert_eq!(r.text, tok.decode(&ids, true).unwrap());
        assert!(r.text.ends_with("\u{FFFD}\u{FFFD}"), "{:?}", r.text);
        assert_eq!(streamed, r.text, "streamed bytes must be the final text");
    }
    // Cancelled inside the character: the text is what was streamed (the unfinished bytes are dropped).
    let mut b = Scripted::new(&[955, f0, x9f, 300]);
    let mut streamed = String::new();
    let mut n = 0;
    let r = generate(
        &mut b,
        &tok,
        &info(),
        &[6, 1923],
        None,
        &opts(8, StopPolicy::UpstreamEos),
        |ev| {
            streamed.push_str(&ev.token.text);
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap();
    assert_eq!(r.stop_reason, StopReason::Cancelled);
    assert_eq!(streamed, r.text);
}

/// A future that is pending once and ready when polled again: a GPU readback that resolves on a later turn
/// of the browser's event loop.
struct Later(bool);

impl std::future::Future for Later {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            std::task::Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    }
}

/// `SCRIPT` as an asynchronous device that picks greedy tokens itself and queues up to two steps, like the
/// browser's GPU model; it records what it was fed and how many queued steps were dropped.
struct AsyncScripted {
    script: Vec<u32>,
    /// Outputs given or queued so far (the prefill's is the first).
    issued: usize,
    queued: std::collections::VecDeque<u32>,
    fed: Vec<u32>,
    dropped: usize,
    polls: usize,
}

impl AsyncScripted {
    fn next(&mut self) -> u32 {
        self.issued += 1;
        self.script[self.issued - 1]
    }
}

impl meddr_runtime::Steps for AsyncScripted {
    async fn prefill(
        &mut self,
        _keep: usize,
        _ids: &[u32],
        device_picks: bool,
        _interrupted: &dyn Fn() -> bool,
    ) -> meddr_runtime::Result<meddr_runtime::StepOutput> {
        Later(false).await;
        self.polls += 1;
        assert!(device_picks, "greedy without log-probs: the device picks");
        Ok(meddr_runtime::StepOutput::Sampled(self.next()))
    }
    fn max_queued(&self, _: &meddr_runtime::Generation<'_>) -> usize {
        2
    }
    fn queue(&mut self) -> meddr_runtime::Result<()> {
        let t = self.next();
        self.queued.push_back(t);
        Ok(())
    }
    async fn read_queued(&mut self, fed: u32) -> meddr_runtime::Result<u32> {
        Later(false).await;
        self.polls += 1;
        self.fed.push(fed);
        Ok(self.queued.pop_front().expect("read with nothing queued"))
    }
    async fn step(
        &mut self,
        fed: u32,
        _: &meddr_runtime::Generation<'_>,
    ) -> meddr_runtime::Result<meddr_runtime::StepOutput> {
        Later(false).await;
        self.polls += 1;
        self.fed.push(fed);
        Ok(meddr_runtime::StepOutput::Sampled(self.next()))
    }
    fn drop_queued(&mut self) {
        self.dropped += self.queued.len();
        self.queued.clear();
    }
}

/// Polls `f` to the end on this thread (what the browser's event loop does for the generation).
fn run_to_end<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn an_awaited_queueing_device_runs_the_same_loop_as_a_blocking_backend() {
    let tok = tokenizer();
    for (max, stop) in [
        (8, StopPolicy::UpstreamEos),
        (3, StopPolicy::UpstreamEos),
        (8, StopPolicy::IgnoreEos),
    ] {
        let mut b = Scripted::new(&SCRIPT);
        let blocking = generate(
            &mut b,
            &tok,
            &info(),
            &[6, 1923],
            None,
            &opts(max, stop),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        let mut d = AsyncScripted {
            script: SCRIPT.to_vec(),
            issued: 0,
            queued: Default::default(),
            fed: vec![],
            dropped: 0,
            polls: 0,
        };
        let g =
            meddr_runtime::Generation::new(&tok, &info(), 4096, 0, &[6, 1923], &opts(max, stop))
                .unwrap();
        let mut streamed = String::new();
        let r = run_to_end(meddr_runtime::drive(g, &mut d, |ev| {
            streamed.push_str(&ev.token.text);
            ControlFlow::Continue(())
        }))
        .unwrap();
        let ids: Vec<u32> = r.tokens.iter().map(|t| t.id).collect();
        let want: Vec<u32> = blocking.tokens.iter().map(|t| t.id).collect();
        assert_eq!(ids, want, "max {max}, {stop:?}");
        assert_eq!(r.text, blocking.text);
        assert_eq!(streamed, r.text);
        assert_eq!(r.stop_reason, blocking.stop_reason);
        // Every token but the last was fed, in order, as the blocking backend was fed them.
        assert_eq!(d.fed, b.decoded, "max {max}, {stop:?}");
        assert_eq!(d.polls, ids.len(), "one awaited output per token");
        // Never queued past max_new_tokens; what was queued past the stop token is dropped.
        assert!(d.issued <= max, "issued {} of max {max}", d.issued);
        assert_eq!(d.issued, ids.len() + d.dropped);
        assert!(d.queued.is_empty());
        let t = r.timings;
        assert!(t.decode_record_s >= 0.0 && t.decode_wait_s >= 0.0 && t.decode_host_s >= 0.0);
        assert!(t.decode_record_s + t.decode_wait_s + t.decode_host_s <= t.decode_s + 1e-9);
    }
    // Eos at index 4 with two steps queued ahead: both are dropped.
    let mut d = AsyncScripted {
        script: SCRIPT.to_vec(),
        issued: 0,
        queued: Default::default(),
        fed: vec![],
        dropped: 0,
        polls: 0,
    };
    let g = meddr_runtime::Generation::new(
        &tok,
        &info(),
        4096,
        0,
        &[6],
        &opts(8, StopPolicy::UpstreamEos),
    )
    .unwrap();
    let r = run_to_end(meddr_runtime::drive(g, &mut d, |_| {
        ControlFlow::Continue(())
    }))
    .unwrap();
    assert_eq!(r.tokens.len(), 5);
    assert_eq!(d.dropped, 2);
}
