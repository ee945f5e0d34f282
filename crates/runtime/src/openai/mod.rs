//! The OpenAI-compatible request and response layer, shared by `meddr serve` (crates/server) and the browser
//! package (web/, `@meddr/edge`): one implementation of the request fields, their checks and messages, the
//! message list → conversation conversion, and the `chat.completion` / `chat.completion.chunk` objects, so
//! that "the same options" means the same code on both sides. Transport-free: no HTTP status types, no
//! clocks but `web-time`, builds for wasm32.

mod request;
mod response;

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use web_time::{SystemTime, UNIX_EPOCH};

pub use request::{
    chat_messages, completion_prompt, decode_data_url, ChatMessages, ChatRequest,
    CompletionRequest, Content, ImageUrl, Message, Part, PromptField, Sampling, StopField,
    StreamOptions,
};
pub use response::{finish_reason, logprobs_json, usage, ResponseShape, TokenLogprob};

use crate::{
    GenerationOptions, RuntimeError, SamplingParams, StopPolicy, StopStrings, Turn, MAX_LOGPROBS,
};

/// Shown with every answer (model card, response bodies, a response header, the package's README).
pub const NOTICE: &str = "Research aid, not a medical device: do not use for diagnosis.";

/// One refused or failed request in OpenAI's terms: the HTTP status the server answers with, OpenAI's
/// error `type`, the offending parameter and a message that names the offending value. The server turns
/// it into its HTTP error; the browser package into a rejected Promise with the same fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestError {
    pub status: u16,
    pub kind: &'static str,
    pub param: Option<String>,
    pub message: String,
}

impl RequestError {
    /// 400 `invalid_request_error`.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        RequestError {
            status: 400,
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            message: message.into(),
        }
    }

    /// 500 `server_error`: the model or device failed, not the request.
    pub fn server(message: impl Into<String>) -> Self {
        RequestError {
            status: 500,
            kind: "server_error",
            param: None,
            message: message.into(),
        }
    }

    /// The error's JSON body, `{"error": {"message", "type", "param", "code"}}` (OpenAI API reference,
    /// "Error codes"; llama-server answers the same shape).
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": match self.status {
                401 => Some("invalid_api_key"),
                413 => Some("request_too_large"),
                429 => Some("rate_limit_exceeded"),
                _ => None,
            },
        }})
    }
}

/// A runtime error as the client should see it: what the request asked for that cannot be done is 400,
/// anything the model or device did is 500.
impl From<RuntimeError> for RequestError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::InvalidOption { field, .. } => {
                RequestError::bad_request(Some(field), e.to_string())
            }
            RuntimeError::ContextOverflow { .. } | RuntimeError::ConversationFull { .. } => {
                RequestError::bad_request(Some("messages"), e.to_string())
            }
            RuntimeError::NoChatTemplate => RequestError::bad_request(
                Some("messages"),
                "this model file has no chat template (a plain llama GGUF): use POST /v1/completions with a raw \
                 prompt",
            ),
            RuntimeError::EmptyPrompt
            | RuntimeError::ImageTokens { .. }
            | RuntimeError::NoVisionEncoder => {
                RequestError::bad_request(Some("messages"), e.to_string())
            }
            RuntimeError::Tokenizer(_) | RuntimeError::ChatTemplate { .. } => {
                RequestError::bad_request(Some("messages"), e.to_string())
            }
            // The caller stopped it (the browser package's abort): what the package reports for a cancel.
            RuntimeError::Interrupted { done, total } => RequestError {
                status: 499,
                kind: "aborted",
                param: None,
                message: format!(
                    "the request was cancelled during the prompt, after {done} of its {total} tokens"
                ),
            },
            _ => RequestError::server(e.to_string()),
        }
    }
}

/// One part of a request body, with the offending field's path (`messages[0].content`) in the message,
/// which serde's own message lacks.
pub fn field_error<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, RequestError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            RequestError::bad_request(None, format!("invalid request: {inner}"))
        } else {
            RequestError::bad_request(Some(&path), format!("invalid request: `{path}`: {inner}"))
        }
    })
}

/// Sampling fields shared by both endpoints, checked: the generation options (`max_new_tokens` still 0),
/// the stop strings, and the asked max token count still to be settled ([`settle_max_tokens`]).
pub fn sampling_options(
    s: &Sampling,
    logprobs: Option<usize>,
    logprobs_field: &str,
) -> Result<(GenerationOptions, StopStrings, Option<u64>), RequestError> {
    if let Some(k) = logprobs.filter(|&k| k > MAX_LOGPROBS) {
        return Err(RequestError::bad_request(
            Some(logprobs_field),
            format!("{logprobs_field} = {k} is above {MAX_LOGPROBS}"),
        ));
    }
    if let Some(n) = s.n {
        if n != 1 {
            return Err(RequestError::bad_request(
                Some("n"),
                format!("n = {n}: this server returns one choice per request"),
            ));
        }
    }
    if let Some(t) = s.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(RequestError::bad_request(
                Some("temperature"),
                format!("temperature = {t} is outside 0..=2"),
            ));
        }
    }
    if let Some(p) = s.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(RequestError::bad_request(
                Some("top_p"),
                format!("top_p = {p} is outside (0, 1]"),
            ));
        }
    }
    let stop = StopStrings::new(
        s.stop
            .as_ref()
            .map(|f| match f {
                StopField::One(s) => vec![s.clone()],
                StopField::Many(v) => v.clone(),
            })
            .unwrap_or_default(),
    )
    .map_err(RequestError::from)?;
    let opts = GenerationOptions {
        max_new_tokens: 0,
        sampling: SamplingParams {
            // Upstream's demo is greedy; a client that wants OpenAI's default sampling asks for temperature 1.
            temperature: s.temperature.unwrap_or(0.0),
            top_k: s.top_k.unwrap_or(0),
            top_p: s.top_p.unwrap_or(1.0),
            repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
            seed: match s.seed {
                Some(seed) => seed as u64,
                // OpenAI: without a seed, sampling differs from request to request.
                None => fresh_seed(),
            },
        },
        stop: if s.ignore_eos {
            StopPolicy::IgnoreEos
        } else {
            StopPolicy::UpstreamEos
        },
        logprobs,
        interrupt: Default::default(),
    };
    opts.sampling.validate().map_err(RequestError::from)?;
    Ok((opts, stop, s.max_completion_tokens.or(s.max_tokens)))
}

/// Seconds since the Unix epoch (`created`); `web-time` because std's clock panics on wasm32.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A seed for a request that gave none: the clock's nanoseconds mixed with a counter (two requests in the
/// same nanosecond still differ). Not for secrets; only for sampling variety.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = t ^ COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Fields OpenAI defines that are not implemented: a request using them is answered, with a warning in
/// `meta.warnings` saying each was ignored.
const IGNORED_FIELDS: [&str; 9] = [
    "response_format",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logit_bias",
    "frequency_penalty",
    "presence_penalty",
    "best_of",
];

/// One warning per OpenAI field in the body that is set but not implemented.
pub fn ignored_field_warnings(v: &Value) -> Vec<String> {
    IGNORED_FIELDS
        .iter()
        .filter(|&&k| match v.get(k) {
            None | Some(Value::Null) => false,
            Some(x) if k == "response_format" => x.get("type") != Some(&json!("text")),
            Some(x) if k.ends_with("_penalty") => x.as_f64() != Some(0.0),
            Some(x) if k == "best_of" => x.as_f64() != Some(1.0),
            Some(x) if k == "tool_choice" => x != "none" && x != "auto",
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        })
        .map(|k| format!("`{k}` is not supported by this server and was ignored"))
        .collect()
}

/// `max_tokens`: what was asked (refused if it cannot fit), else everything the context has left.
pub fn settle_max_tokens(
    asked: Option<u64>,
    prompt_tokens: usize,
    context: usize,
) -> Result<usize, RequestError> {
    let left = context.saturating_sub(prompt_tokens);
    match asked {
        Some(0) => Err(RequestError::bad_request(Some("max_tokens"), "max_tokens = 0: at least one token must be generated")),
        Some(n) if n > left as u64 => Err(RequestError::bad_request(
            Some("max_tokens"),
            format!(
                "the prompt has {prompt_tokens} tokens, so {left} of the context's {context} are left, fewer than max_tokens = {n}"
            ),
        )),
        Some(n) => Ok(n as usize),
        None if left == 0 => Err(RequestError::bad_request(
            Some("messages"),
            format!("the prompt has {prompt_tokens} tokens and fills the model's context of {context}"),
        )),
        None => Ok(left),
    }
}

/// A `POST /v1/chat/completions` body, read and checked up to the point where the model is needed:
/// everything the server and the browser do the same before encoding the prompt.
#[derive(Debug)]
pub struct ChatPlan {
    /// Generation options; `max_new_tokens` is settled later against the prompt ([`settle_max_tokens`]).
    pub opts: GenerationOptions,
    pub stop: StopStrings,
    /// `max_completion_tokens` or `max_tokens`, as asked.
    pub asked_max_tokens: Option<u64>,
    /// `Some(k)`: log-probabilities with the `k` best alternatives per token.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    /// The system message, if any (replaces the file's).
    pub system: Option<String>,
    /// Answered turns, stripped as upstream strips them.
    pub turns: Vec<Turn>,
    pub question: String,
    /// The one image's bytes (decoded from its data: URL).
    pub image: Option<Vec<u8>>,
    /// Fields that were set but are ignored.
    pub warnings: Vec<String>,
}

/// Reads a chat request body (a JSON object): the request fields, the sampling fields, `logprobs` /
/// `top_logprobs`, the messages. Errors carry the server's messages.
pub fn chat_plan(v: &Value) -> Result<ChatPlan, RequestError> {
    let req: ChatRequest = field_error(v)?;
    let sampling: Sampling = field_error(v)?;
    let k = match (req.logprobs, req.top_logprobs) {
        (Some(true), k) => Some(k.unwrap_or(0) as usize),
        (_, Some(k)) if k > 0 => {
            return Err(RequestError::bad_request(
                Some("top_logprobs"),
                "top_logprobs needs logprobs: true",
            ));
        }
        _ => None,
    };
    let (opts, stop, asked) = sampling_options(&sampling, k, "top_logprobs")?;
    let msgs = chat_messages(req.messages)?;
    let turns = msgs
        .turns
        .into_iter()
        .map(|(q, a)| Turn {
            question: crate::python_strip(&q).to_owned(),
            answer: crate::python_strip(&a).to_owned(),
        })
        .collect();
    Ok(ChatPlan {
        opts,
        stop,
        asked_max_tokens: asked,
        logprobs: k,
        stream: sampling.stream,
        include_usage: sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        system: msgs.system,
        turns,
        question: msgs.question,
        image: msgs.image,
        warnings: ignored_field_warnings(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(v: Value) -> Result<ChatPlan, RequestError> {
        chat_plan(&v)
    }

    #[test]
    fn a_chat_request_becomes_system_turns_question_and_image() {
        let p = plan(json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAEC"}},
                ]},
                {"role": "assistant", "content": " A chest X-ray. "},
                {"role": "user", "content": "Anything else?"},
            ],
            "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 7, "temperature": 0.5, "seed": -1, "stop": "END", "tools": [{"x": 1}],
        }))
        .unwrap();
        assert_eq!(p.system.as_deref(), Some("Be brief."));
        assert_eq!(p.turns.len(), 1);
        // Answers are stripped as upstream strips them.
        assert_eq!(p.turns[0].answer, "A chest X-ray.");
        assert_eq!(p.question, "Anything else?");
        assert_eq!(p.image.as_deref(), Some(&[0u8, 1, 2][..]));
        assert!(p.stream && p.include_usage);
        assert_eq!(p.asked_max_tokens, Some(7));
        assert_eq!(p.opts.sampling.temperature, 0.5);
        assert_eq!(p.opts.sampling.seed, u64::MAX);
        assert_eq!(
            p.warnings,
            ["`tools` is not supported by this server and was ignored"]
        );
    }

    #[test]
    fn bad_options_are_refused_naming_the_field() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (
                json!({"messages": msgs, "temperature": -1}),
                "temperature",
                "temperature = -1 is outside 0..=2",
            ),
            (
                json!({"messages": msgs, "top_p": 0}),
                "top_p",
                "top_p = 0 is outside (0, 1]",
            ),
            (
                json!({"messages": msgs, "n": 2}),
                "n",
                "n = 2: this server returns one choice per request",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "x"}]}),
                "messages[0].role",
                "role \"tool\" is not supported (system, developer, user, assistant)",
            ),
            (
                json!({"messages": msgs, "temperature": "hot"}),
                "temperature",
                "invalid request: `temperature`: ",
            ),
        ];
        for (body, param, msg) in cases {
            let e = plan(body).unwrap_err();
            assert_eq!(
                (e.status, e.kind, e.param.as_deref()),
                (400, "invalid_request_error", Some(param))
            );
            assert!(e.message.starts_with(msg), "{}", e.message);
        }
    }

    #[test]
    fn chunks_and_response_have_openais_fields() {
        let shape = ResponseShape {
            chat: true,
            stream: true,
            include_usage: true,
            id: "chatcmpl-1".into(),
            model: "m".into(),
            created: 5,
            ..Default::default()
        };
        let first = shape.started_chunk().unwrap();
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(first["meta"]["notice"], NOTICE);
        let mut off = 0;
        let t = shape.token_chunk("Hi", None, &mut off);
        assert_eq!(
            (t["object"].as_str(), off),
            (Some("chat.completion.chunk"), 2)
        );
        assert_eq!(t["usage"], Value::Null);
        let done = shape.done_chunks("length", 3, 2);
        assert_eq!(done[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(done[1]["choices"], json!([]));
        assert_eq!(done[1]["usage"], usage(3, 2));
        let r = shape.response("Hi", &[], "stop", 3, 2);
        assert_eq!(r["object"], "chat.completion");
        assert_eq!(r["choices"][0]["message"]["content"], "Hi");
        assert_eq!(r["usage"]["total_tokens"], 5);
        assert_eq!(finish_reason(crate::StopReason::MaxTokens, true), "stop");
        assert_eq!(finish_reason(crate::StopReason::MaxTokens, false), "length");
    }
}
