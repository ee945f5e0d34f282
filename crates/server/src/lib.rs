//! OpenAI-compatible local server for MedDr Edge (`meddr serve`).
//!
//! Endpoints (OpenAI API reference; llama-server's conventions where OpenAI has none):
//! `GET /health` (503 while the model loads), `GET /v1/models`, `POST /v1/chat/completions` (text and
//! `image_url` parts with `data:` URLs; SSE streaming ending in `data: [DONE]`), `POST /v1/completions`.
//!
//! Defaults chosen for medical data: loopback only unless told otherwise, an optional API key (Bearer or
//! `X-Api-Key`), no CORS unless an origin is named, `Content-Type: application/json` required on POST (so
//! a web page cannot send one without the CORS preflight the server refuses), remote image URLs never
//! fetched, control tokens typed in messages read as plain text. One model on one device serves one request
//! at a time; the others wait in a bounded FIFO queue (full: 429), streams that wait get SSE comments, and a
//! client that disconnects stops its generation.

mod error;
mod worker;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use meddr_runtime::openai::{self, now, ResponseShape};
use meddr_runtime::{Backend, Conversation, GenerationOptions, ModelInfo, StopStrings, UserText};
use meddr_tokenizer::MedDrTokenizer;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;

pub use error::ApiError;
use worker::{Event, Job, JobQueue, Refused, TokenLogprob, Work, WorkerState};

/// Shown with every answer (model card, response bodies, a response header); the shared layer's.
pub use meddr_runtime::openai::NOTICE;

/// Server settings (`meddr serve` flags).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model's name in `/v1/models` and in responses (the file's stem).
    pub model_id: String,
    /// Required as `Authorization: Bearer K` or `X-Api-Key: K` on `/v1/*` but `/v1/models` (`None`: open).
    pub api_key: Option<String>,
    /// The one origin browsers may call from (`None`: no CORS headers, so no cross-origin page can read).
    pub cors_origin: Option<String>,
    /// Requests that may wait behind the running one; one more is answered 429.
    pub queue_capacity: usize,
    /// Largest request body, bytes (base64 images are 4/3 of their file size).
    pub max_body_bytes: usize,
    /// How often a waiting or slow stream gets an SSE comment.
    pub keep_alive: Duration,
    /// How control tokens typed in messages are read (default: literal text).
    pub user_text: UserText,
    /// Images whose header declares more pixels are refused before decoding.
    pub max_image_pixels: u64,
    /// Time a client has to send a request's whole header (from the connection's start, or from the end of
    /// its previous response); a slower or idle connection is closed, so trickled headers cannot hold
    /// connections open forever.
    pub header_read_timeout: Duration,
}

impl ServerOptions {
    /// 32 MiB of body: a 24 MB image file in base64, which no radiograph or photograph a user sends exceeds.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
    pub const DEFAULT_QUEUE: usize = 16;
    /// 64 Mi pixels (8192²): larger than any radiograph or photograph; a decoding costs at most ~200 MB.
    pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 64 << 20;
    /// hyper's own default, which `axum::serve` leaves inactive (it sets no timer).
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
}

/// The model's text side, known before the weights load (the GGUF header): enough to check requests.
pub struct Model {
    pub tokenizer: MedDrTokenizer,
    pub info: ModelInfo,
}

/// Loads the weights on the model thread: `Err` is a message for the user.
pub type BackendLoader = Box<dyn FnOnce() -> Result<Box<dyn Backend>, String> + Send>;

impl AppState {
    /// Positions a request may use: the loaded backend's (`--context-length` may shorten the file's), or the
    /// file's while the weights load.
    fn context_length(&self) -> usize {
        match self.worker.context_length.load(Ordering::SeqCst) {
            0 => self.info.context_length,
            n => n,
        }
    }
}

struct AppState {
    opts: ServerOptions,
    tokenizer: Arc<MedDrTokenizer>,
    info: Arc<ModelInfo>,
    worker: Arc<WorkerState>,
    jobs: Arc<JobQueue>,
    next_id: AtomicU64,
    /// Decoding an image can take hundreds of MB; one at a time bounds the server's memory.
    image_decode: Semaphore,
}

/// Serves on `listener` until Ctrl-C (or until the model fails to load: that error is returned).
pub async fn serve(
    listener: tokio::net::TcpListener,
    opts: ServerOptions,
    model: Model,
    load: BackendLoader,
) -> Result<(), String> {
    let queue = Arc::new(JobQueue::new(opts.queue_capacity));
    let tokenizer = Arc::new(model.tokenizer);
    let info = Arc::new(model.info);
    let worker_state = Arc::new(WorkerState::default());
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    {
        let (tokenizer, info, state, user_text, queue) = (
            tokenizer.clone(),
            info.clone(),
            worker_state.clone(),
            opts.user_text,
            queue.clone(),
        );
        std::thread::Builder::new()
            .name("meddr-model".into())
            .spawn(move || worker::run(load, tokenizer, info, user_text, state, queue, loaded_tx))
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
    }
    let state = Arc::new(AppState {
        opts,
        tokenizer,
        info,
        worker: worker_state,
        jobs: queue,
        next_id: AtomicU64::new(1),
        image_decode: Semaphore::new(1),
    });
    let header_read_timeout = state.opts.header_read_timeout;
    let app = router(state);
    let server = accept_loop(listener, app, header_read_timeout);
    let load_failed = async {
        match loaded_rx.await {
            Ok(Err(e)) => e,
            // Loaded: keep serving (this branch never completes).
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => r.map_err(|e| format!("server: {e}")),
        e = load_failed => Err(e),
    }
}

/// Serves HTTP/1 connections until Ctrl-C, then lets the open ones finish. Written out instead of
/// `axum::serve` because that gives hyper no timer, which leaves hyper's header read timeout off; hyper's
/// connection builder and hyper-util's graceful shutdown do the rest.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: the listener itself is fine, so wait and go on
                // (what axum::serve does too) rather than end the server.
                Err(e) => {
                    eprintln!("meddr serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut ctrl_c => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A closed or timed-out connection is the client's business; nothing to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        // An upload that stalls is cut after this long without a byte (a slow client cannot hold a
        // connection and a handler forever).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            BODY_STALL,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn(add_notice_header))
        .with_state(state.clone());
    if let Some(origin) = &state.opts.cors_origin {
        if let Ok(origin) = HeaderValue::from_str(origin) {
            app = app.layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(origin)
                    .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                    .allow_headers([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                        header::HeaderName::from_static("x-api-key"),
                    ]),
            );
        }
    }
    app
}

/// How long a request body may go without sending anything.
const BODY_STALL: Duration = Duration::from_secs(30);

/// A body declared larger than the limit is refused before any of it is read (and before a client that
/// sent `Expect: 100-continue` is told to go on).
async fn refuse_declared_oversize(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > state.opts.max_body_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request body is {n} bytes, larger than the server's limit of {} bytes (meddr serve --max-body-mb)",
                state.opts.max_body_bytes
            ),
        )
        .into_response();
    }
    next.run(req).await
}

async fn add_notice_header(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    r.headers_mut()
        .insert("x-meddr-notice", HeaderValue::from_static(NOTICE));
    r
}

/// Constant-time comparison: the key's bytes are not revealed by how long a wrong guess takes.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_api_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.opts.api_key {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let given = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        if !given.is_some_and(|g| same_key(g.as_bytes(), key.as_bytes())) {
            let mut e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                if given.is_some() {
                    "invalid API key"
                } else {
                    "an API key is required: Authorization: Bearer <key>"
                },
            );
            e.param = None;
            return e.into_response();
        }
    }
    next.run(req).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    if !state.worker.ready.load(Ordering::SeqCst) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            "Loading model",
        )
        .into_response();
    }
    let queued = state.jobs.waiting();
    Json(json!({
        "status": "ok",
        "busy": state.worker.busy.load(Ordering::SeqCst),
        "queued": queued,
        "served": state.worker.served.load(Ordering::SeqCst),
        "cancelled": state.worker.cancelled.load(Ordering::SeqCst),
    }))
    .into_response()
}

/// The model card: OpenAI's model object plus what a client needs to know about this one.
fn model_card(state: &AppState) -> Value {
    let info = &state.info;
    json!({
        "id": state.opts.model_id,
        "object": "model",
        "created": now(),
        "owned_by": "local",
        "meta": {
            "context_length": state.context_length(),
            "vision": info.vision.is_some(),
            "chat_template": info.prompt_format != meddr_runtime::PromptFormat::Raw,
            "default_temperature": 0.0,
            "notice": NOTICE,
        },
    })
}

async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_card(&state)]}))
}

/// `GET /v1/models/{id}` (OpenAI's "retrieve model").
async fn model(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id != state.opts.model_id {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "model {id:?} does not exist here; this server has {:?}",
                state.opts.model_id
            ),
        )
        .into_response();
    }
    Json(model_card(&state)).into_response()
}

/// The body as JSON, whatever the body limit, content type or syntax did wrong, as an OpenAI error.
fn parse_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is larger than the server's limit of {max} bytes (meddr serve --max-body-mb)"),
            )
        } else {
            ApiError::bad_request(None, format!("cannot read the request body: {e}"))
        }
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            format!(
                "Content-Type must be application/json (got {:?})",
                ct.chars().take(64).collect::<String>()
            ),
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(None, format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            None,
            "the JSON body must be an object",
        ));
    }
    Ok(v)
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat_job(&state, &headers, body).await {
        Ok((job, rx, shape)) => respond(&state, job, rx, shape).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match completion_job(&state, &headers, body) {
        Ok((job, rx, shape)) => respond(&state, job, rx, shape).await,
        Err(e) => e.into_response(),
    }
}

type Prepared = (Job, mpsc::UnboundedReceiver<Event>, ResponseShape);

async fn chat_job(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let v = parse_body(headers, body, state.opts.max_body_bytes)?;
    // The request's fields, checks and messages are the shared layer's (the browser package reads the same).
    let plan = openai::chat_plan(&v)?;
    let mut opts = plan.opts;
    let info = &state.info;
    let turns = plan.turns;
    // Checks the prompt now, before the image is decoded, so that a request that cannot run is a quick 400
    // and not a failed stream (a file without a vision tower is refused here too).
    let mut conv = Conversation::new(state.opts.user_text);
    conv.set_system(plan.system.clone());
    conv.set_turns(turns.clone());
    let context = state.context_length();
    let prompt = conv.encode(
        &state.tokenizer,
        info,
        &plan.question,
        plan.image.is_some(),
        0,
        context,
    )?;
    opts.max_new_tokens =
        openai::settle_max_tokens(plan.asked_max_tokens, prompt.ids.len(), context)?;
    let pixel_values = match plan.image {
        Some(bytes) => {
            let Some(v) = &info.vision else {
                return Err(ApiError::bad_request(
                    Some("messages"),
                    meddr_runtime::RuntimeError::NoVisionEncoder.to_string(),
                ));
            };
            let cfg = meddr_image::PreprocessConfig {
                max_pixels: state.opts.max_image_pixels,
                ..v.preprocessing.config()
            };
            let _permit = state.image_decode.acquire().await.map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable_error",
                    "shutting down",
                )
            })?;
            let out = tokio::task::spawn_blocking(move || meddr_image::preprocess(&bytes, &cfg))
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        format!("image decoding failed: {e}"),
                    )
                })?
                .map_err(|e| ApiError::bad_request(Some("messages"), format!("image: {e}")))?;
            Some(out)
        }
        None => None,
    };
    let mut warnings = plan.warnings;
    warnings.extend(
        pixel_values
            .iter()
            .flat_map(|p| p.notes.iter().map(|n| format!("image: {n}"))),
    );
    warnings.extend(prompt.warning("start the server with `--user-text literal`"));
    let work = Work::Chat {
        system: plan.system,
        turns,
        question: plan.question,
        pixel_values: pixel_values.map(|p| p.pixel_values),
    };
    Ok(make_job(
        state,
        work,
        opts,
        plan.stop,
        ResponseShape {
            chat: true,
            stream: plan.stream,
            include_usage: plan.include_usage,
            logprobs: plan.logprobs.is_some(),
            warnings,
            ..Default::default()
        },
    ))
}

fn completion_job(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Prepared, ApiError> {
    let v = parse_body(headers, body, state.opts.max_body_bytes)?;
    let req: openai::CompletionRequest = openai::field_error(&v)?;
    let sampling: openai::Sampling = openai::field_error(&v)?;
    if req.echo {
        return Err(ApiError::bad_request(Some("echo"), "echo is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request(
            Some("suffix"),
            "suffix (insertion) is not supported",
        ));
    }
    let k = req.logprobs.map(|k| k as usize);
    let (mut opts, stop, asked) = openai::sampling_options(&sampling, k, "logprobs")?;
    let prompt = openai::completion_prompt(req.prompt)?;
    // A raw completion's prompt is the caller's own markup: control tokens in it are parsed.
    let ids = state
        .tokenizer
        .encode(&prompt)
        .map_err(|e| ApiError::bad_request(Some("prompt"), format!("tokenizer: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            Some("prompt"),
            "the prompt is empty: at least one token is needed",
        ));
    }
    meddr_runtime::check_image_tokens(&ids, state.info.image_context_id(&state.tokenizer), 0)
        .map_err(|e| ApiError::bad_request(Some("prompt"), e.to_string()))?;
    // OpenAI's default for completions.
    opts.max_new_tokens =
        openai::settle_max_tokens(asked.or(Some(16)), ids.len(), state.context_length())?;
    let include_usage = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    Ok(make_job(
        state,
        Work::Completion { ids },
        opts,
        stop,
        ResponseShape {
            chat: false,
            stream: sampling.stream,
            include_usage,
            logprobs: k.is_some(),
            warnings: openai::ignored_field_warnings(&v),
            ..Default::default()
        },
    ))
}

fn make_job(
    state: &Arc<AppState>,
    work: Work,
    opts: GenerationOptions,
    stop: StopStrings,
    mut shape: ResponseShape,
) -> Prepared {
    let n = state.next_id.fetch_add(1, Ordering::SeqCst);
    shape.id = format!("{}-{n}", if shape.chat { "chatcmpl" } else { "cmpl" });
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Job {
            id: n,
            work,
            opts,
            stop,
            events: tx,
        },
        rx,
        shape,
    )
}

/// Queues the job (429 when the queue is full) and answers: one JSON object, or an SSE stream.
async fn respond(
    state: &Arc<AppState>,
    job: Job,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut shape: ResponseShape,
) -> Response {
    if let Err(e) = state.jobs.push(job) {
        return match e {
            Refused::Full => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the server is busy: {} requests are already waiting; retry later",
                    state.opts.queue_capacity
                ),
            ),
            Refused::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "the model is not available",
            ),
        }
        .into_response();
    }
    shape.model = state.opts.model_id.clone();
    shape.created = now();
    if shape.stream {
        let keep_alive = KeepAlive::new()
            .interval(state.opts.keep_alive)
            .text("waiting");
        return Sse::new(sse_stream(rx, shape))
            .keep_alive(keep_alive)
            .into_response();
    }
    let mut text = String::new();
    let mut lps: Vec<TokenLogprob> = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Started) => {}
            Some(Event::Token { text: t, logprob }) => {
                text.push_str(&t);
                lps.extend(logprob);
            }
            Some(Event::Done {
                finish_reason,
                prompt_tokens,
                completion_tokens,
            }) => {
                return Json(shape.response(
                    &text,
                    &lps,
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                ))
                .into_response();
            }
            Some(Event::Error(e)) => return e.into_response(),
            None => {
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the model thread stopped",
                )
                .into_response()
            }
        }
    }
}

fn sse_stream(
    rx: mpsc::UnboundedReceiver<Event>,
    shape: ResponseShape,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let mut offset = 0usize;
    // The chunk objects are the shared layer's (the browser package streams the same).
    UnboundedReceiverStream::new(rx)
        .flat_map(move |ev| {
            let out: Vec<Value> = match ev {
                Event::Started => shape.started_chunk().into_iter().collect(),
                Event::Token { text, logprob } => {
                    vec![shape.token_chunk(&text, logprob.as_ref(), &mut offset)]
                }
                Event::Done {
                    finish_reason,
                    prompt_tokens,
                    completion_tokens,
                } => shape.done_chunks(finish_reason, prompt_tokens, completion_tokens),
                Event::Error(e) => vec![e.body()],
            };
            stream::iter(
                out.into_iter()
                    .map(|v| Ok(SseEvent::default().data(v.to_string()))),
            )
        })
        .chain(stream::once(async {
            Ok(SseEvent::default().data("[DONE]"))
        }))
}
