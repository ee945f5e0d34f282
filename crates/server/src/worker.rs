//! The model's thread: one model, one device, one request at a time, in arrival order.
//!
//! Requests reach it through a bounded channel (the FIFO queue; a full channel is a 429 at the door). Each
//! request carries the sender of its events; a client that goes away drops the receiver, which the
//! generation loop sees at the next token and stops (a queued request whose client left is skipped).
//! One [`Conversation`] lives here for the server's lifetime, so a client re-sending a growing history reuses
//! the keys and values of the earlier turns, and a repeated image is not encoded again.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use meddr_runtime::{
    Backend, Conversation, GenerationOptions, GenerationResult, Interrupt, ModelInfo, RuntimeError,
    StopStrings, TokenEvent, Turn, UserText,
};
use meddr_tokenizer::MedDrTokenizer;
use tokio::sync::mpsc;

use crate::error::ApiError;

pub use meddr_runtime::openai::TokenLogprob;

/// What the model thread tells a request's handler, in order: `Started`, any number of `Token`s, then `Done`
/// or `Error`.
#[derive(Debug)]
pub enum Event {
    Started,
    /// Text to show (stop strings already cut away; may be empty when only `logprob` is new).
    Token {
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done {
        finish_reason: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(ApiError),
}

#[derive(Debug)]
pub enum Work {
    Chat {
        system: Option<String>,
        turns: Vec<Turn>,
        question: String,
        pixel_values: Option<Vec<f32>>,
    },
    Completion {
        ids: Vec<u32>,
    },
}

#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub work: Work,
    pub opts: GenerationOptions,
    pub stop: StopStrings,
    pub events: mpsc::UnboundedSender<Event>,
}

/// The bounded FIFO queue of waiting requests. A request whose client has gone (its event receiver
/// dropped) no longer holds a place: every admission and count first drops such requests, so clients that
/// gave up cannot keep others out with 429s.
#[derive(Debug)]
pub struct JobQueue {
    inner: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
    capacity: usize,
}

/// Why a request was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl JobQueue {
    pub fn new(capacity: usize) -> Self {
        JobQueue {
            inner: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Job>, bool)> {
        // A panic while holding this lock cannot leave the queue inconsistent (push/pop are single steps).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job` behind the others, or refuses (and drops) it when `capacity` live requests already wait.
    pub fn push(&self, job: Job) -> Result<(), Refused> {
        let mut g = self.lock();
        g.0.retain(|j| !j.events.is_closed());
        if g.1 {
            return Err(Refused::Closed);
        }
        if g.0.len() >= self.capacity {
            return Err(Refused::Full);
        }
        g.0.push_back(job);
        self.ready.notify_one();
        Ok(())
    }

    /// The oldest live request, waiting for one; `None` once closed and empty.
    pub fn pop(&self) -> Option<Job> {
        let mut g = self.lock();
        loop {
            g.0.retain(|j| !j.events.is_closed());
            if let Some(j) = g.0.pop_front() {
                return Some(j);
            }
            if g.1 {
                return None;
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Live requests waiting.
    pub fn waiting(&self) -> usize {
        let mut g = self.lock();
        g.0.retain(|j| !j.events.is_closed());
        g.0.len()
    }

    /// Refuses new requests and answers the waiting ones' clients by dropping them.
    pub fn close(&self) {
        let mut g = self.lock();
        g.1 = true;
        g.0.clear();
        self.ready.notify_all();
    }
}

/// Shared between the model thread and the handlers.
#[derive(Debug, Default)]
pub struct WorkerState {
    pub ready: AtomicBool,
    /// The loaded backend's context length (its KV cache may be shorter than the file's); 0 while loading.
    pub context_length: std::sync::atomic::AtomicUsize,
    pub busy: AtomicBool,
    pub served: AtomicU64,
    pub cancelled: AtomicU64,
}

/// Loads the backend on this thread (so it never has to cross threads), then serves `jobs` until every
/// sender is gone. A failed load is reported on `loaded` and ends the thread.
pub fn run(
    load: Box<dyn FnOnce() -> Result<Box<dyn Backend>, String> + Send>,
    tokenizer: Arc<MedDrTokenizer>,
    info: Arc<ModelInfo>,
    user_text: UserText,
    state: Arc<WorkerState>,
    jobs: Arc<JobQueue>,
    loaded: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let t0 = Instant::now();
    let mut backend = match load() {
        Ok(b) => b,
        Err(e) => {
            jobs.close();
            let _ = loaded.send(Err(e));
            return;
        }
    };
    state.context_length.store(
        backend.context_length().min(info.context_length),
        Ordering::SeqCst,
    );
    state.ready.store(true, Ordering::SeqCst);
    eprintln!(
        "meddr serve: model ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let _ = loaded.send(Ok(()));
    let mut conv = Conversation::new(user_text);
    let mut last_pixels: Option<Vec<f32>> = None;
    while let Some(job) = jobs.pop() {
        state.busy.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let id = job.id;
        let outcome = serve_one(
            backend.as_mut(),
            &tokenizer,
            &info,
            &mut conv,
            &mut last_pixels,
            job,
        );
        match outcome {
            Outcome::Finished { reused, result } => {
                state.served.fetch_add(1, Ordering::SeqCst);
                eprintln!(
                    "meddr serve: request {id}: {} prompt tokens ({reused} reused), {} generated, stop: {}, {:.2} s",
                    result.prompt_tokens,
                    result.tokens.len(),
                    result.stop_reason.as_str(),
                    t.elapsed().as_secs_f64()
                );
            }
            Outcome::ClientLeft { generated, prompt } => {
                state.cancelled.fetch_add(1, Ordering::SeqCst);
                match prompt {
                    Some((done, total)) => eprintln!(
                        "meddr serve: request {id}: client disconnected during the prompt, after {done} of its \
                         {total} tokens; prefill stopped"
                    ),
                    None => eprintln!(
                        "meddr serve: request {id}: client disconnected after {generated} token(s); generation \
                         stopped"
                    ),
                }
            }
            Outcome::Failed(e) => {
                eprintln!("meddr serve: request {id}: error: {}", e.message);
            }
        }
        state.busy.store(false, Ordering::SeqCst);
    }
}

enum Outcome {
    Finished {
        reused: usize,
        result: GenerationResult,
    },
    ClientLeft {
        generated: usize,
        /// Left during the prompt: `(tokens run, tokens in all)`.
        prompt: Option<(usize, usize)>,
    },
    Failed(ApiError),
}

fn logprob_of(tokenizer: &MedDrTokenizer, id: u32, lp: f32) -> (String, Vec<u8>, f32) {
    let bytes = tokenizer.token_bytes(id).unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes, lp)
}

fn serve_one(
    backend: &mut dyn Backend,
    tokenizer: &MedDrTokenizer,
    info: &ModelInfo,
    conv: &mut Conversation,
    last_pixels: &mut Option<Vec<f32>>,
    job: Job,
) -> Outcome {
    let Job {
        work,
        mut opts,
        mut stop,
        events,
        ..
    } = job;
    let _ = events.send(Event::Started);
    // A client that hangs up during a long prompt stops it between chunks, not only at the first token.
    let watch = events.clone();
    opts.interrupt = Interrupt::new(move || watch.is_closed());
    let stop_ids = info.stop_ids(opts.stop);
    let mut client_left = false;
    let mut generated = 0usize;
    let on_token = |ev: &TokenEvent| {
        generated = ev.index + 1;
        if events.is_closed() {
            client_left = true;
            return ControlFlow::Break(());
        }
        let t = ev.token;
        // Stop tokens are not part of the answer, nor of its log-probabilities (as OpenAI reports them).
        let logprob = match t.logprob {
            Some(lp) if !stop_ids.contains(&t.id) => {
                let (token, bytes, logprob) = logprob_of(tokenizer, t.id, lp);
                let top = t
                    .top_logprobs
                    .iter()
                    .map(|&(id, lp)| logprob_of(tokenizer, id, lp))
                    .collect();
                Some(TokenLogprob {
                    token,
                    bytes,
                    logprob,
                    top,
                })
            }
            _ => None,
        };
        let text = stop.push(&t.text);
        if !text.is_empty() || logprob.is_some() {
            let _ = events.send(Event::Token { text, logprob });
        }
        if stop.stopped() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let ran = match work {
        Work::Chat {
            system,
            turns,
            question,
            pixel_values,
        } => {
            match pixel_values {
                Some(pv) => {
                    if !conv.has_image() || last_pixels.as_ref() != Some(&pv) {
                        match backend.encode_image(&pv) {
                            Ok(features) => {
                                conv.set_image(features);
                                *last_pixels = Some(pv);
                            }
                            Err(e) => {
                                conv.reset();
                                *last_pixels = None;
                                let e = ApiError::new(
                                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                    "server_error",
                                    format!("encoding the image: {e}"),
                                );
                                let _ = events.send(Event::Error(e.clone()));
                                return Outcome::Failed(e);
                            }
                        }
                    }
                }
                None => {
                    conv.reset();
                    *last_pixels = None;
                }
            }
            conv.set_system(system);
            conv.set_turns(turns);
            conv.ask(backend, tokenizer, info, &question, &opts, on_token)
                .map(|r| (r.result, r.reused_tokens))
        }
        Work::Completion { ids } => conv.complete(backend, tokenizer, info, &ids, &opts, on_token),
    };
    if client_left {
        return Outcome::ClientLeft {
            generated,
            prompt: None,
        };
    }
    if let Err(RuntimeError::Interrupted { done, total }) = &ran {
        return Outcome::ClientLeft {
            generated: 0,
            prompt: Some((*done, *total)),
        };
    }
    match ran {
        Ok((result, reused)) => {
            let rest = stop.finish();
            if !rest.is_empty() {
                let _ = events.send(Event::Token {
                    text: rest,
                    logprob: None,
                });
            }
            let finish_reason =
                meddr_runtime::openai::finish_reason(result.stop_reason, stop.stopped());
            let _ = events.send(Event::Done {
                finish_reason,
                prompt_tokens: result.prompt_tokens,
                completion_tokens: result.tokens.len(),
            });
            Outcome::Finished { reused, result }
        }
        Err(e) => {
            let e = ApiError::from(e);
            let _ = events.send(Event::Error(e.clone()));
            Outcome::Failed(e)
        }
    }
}
