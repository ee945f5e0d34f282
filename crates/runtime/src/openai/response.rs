//! Response objects: `chat.completion` / `text_completion` bodies and the streamed `chat.completion.chunk`
//! objects (OpenAI API reference, late 2026), built the same way by the server and the browser package.

use serde_json::{json, Value};

use super::NOTICE;
use crate::StopReason;

/// One generated token's log-probability in OpenAI's terms.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// `(token, bytes, logprob)`, best first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

/// OpenAI's `finish_reason`: `"length"` when `max_tokens` ran out, else `"stop"` (the end-of-turn token or
/// a stop string; `stop_string_hit` says a stop string ended the answer, which the generation loop sees as
/// a cancellation).
pub fn finish_reason(stop_reason: StopReason, stop_string_hit: bool) -> &'static str {
    match stop_reason {
        StopReason::MaxTokens if !stop_string_hit => "length",
        _ => "stop",
    }
}

/// `usage`: prompt, completion and total token counts.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Log-probabilities in the endpoint's shape: chat's `{"content": [{token, logprob, bytes, top_logprobs}]}`,
/// or the legacy completions shape `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`.
/// `offset`: the byte offset of the first token's text in the answer (streams).
pub fn logprobs_json(chat: bool, lps: &[TokenLogprob], offset: usize) -> Value {
    if chat {
        let content: Vec<Value> = lps
            .iter()
            .map(|t| {
                json!({
                    "token": t.token,
                    "logprob": t.logprob,
                    "bytes": t.bytes,
                    "top_logprobs": t.top.iter().map(|(tok, b, lp)| json!({"token": tok, "logprob": lp, "bytes": b})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({"content": content, "refusal": null})
    } else {
        let mut off = offset;
        let mut text_offset = Vec::new();
        for t in lps {
            text_offset.push(off);
            off += t.token.len();
        }
        json!({
            "tokens": lps.iter().map(|t| &t.token).collect::<Vec<_>>(),
            "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "top_logprobs": lps.iter().map(|t| t.top.iter().map(|(tok, _, lp)| (tok.clone(), json!(lp))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            "text_offset": text_offset,
        })
    }
}

/// How a response is written: which object, streamed or not, with usage chunks or not, and the fields
/// every chunk repeats.
#[derive(Debug, Clone, Default)]
pub struct ResponseShape {
    /// `chat.completion(.chunk)`; false: `text_completion`.
    pub chat: bool,
    pub stream: bool,
    /// `stream_options.include_usage`: every chunk has `usage: null`, and a last chunk with no choices
    /// carries the counts.
    pub include_usage: bool,
    pub logprobs: bool,
    /// `chatcmpl-N` / `cmpl-N`.
    pub id: String,
    /// Shown in the first chunk's (or the response's) `meta.warnings`.
    pub warnings: Vec<String>,
    pub model: String,
    /// Unix seconds.
    pub created: u64,
}

impl ResponseShape {
    fn chunk(&self, choice: Value, usage_set: bool) -> Value {
        let mut c = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "system_fingerprint": null,
        });
        if self.include_usage && !usage_set {
            c["usage"] = Value::Null;
        }
        c
    }

    /// The chunk sent when generation starts (chat only: the assistant role, the notice and the warnings).
    pub fn started_chunk(&self) -> Option<Value> {
        self.chat.then(|| {
            let mut c = self.chunk(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}), false);
            c["meta"] = json!({"notice": NOTICE, "warnings": self.warnings});
            c
        })
    }

    /// A chunk with new answer text; `offset` is the answer's length so far in bytes (advanced here).
    pub fn token_chunk(
        &self,
        text: &str,
        logprob: Option<&TokenLogprob>,
        offset: &mut usize,
    ) -> Value {
        let lp = if self.logprobs {
            logprob.map(|l| logprobs_json(self.chat, std::slice::from_ref(l), *offset))
        } else {
            None
        };
        *offset += text.len();
        let choice = if self.chat {
            json!({"index": 0, "delta": {"content": text}, "logprobs": lp, "finish_reason": null})
        } else {
            json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": null})
        };
        self.chunk(choice, false)
    }

    /// The last chunks: the one with `finish_reason`, then (with `include_usage`) the usage chunk.
    pub fn done_chunks(
        &self,
        finish_reason: &str,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) -> Vec<Value> {
        let choice = if self.chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish_reason})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish_reason})
        };
        let mut v = vec![self.chunk(choice, false)];
        if self.include_usage {
            let mut u = self.chunk(Value::Null, true);
            u["choices"] = json!([]);
            u["usage"] = usage(prompt_tokens, completion_tokens);
            v.push(u);
        }
        v
    }

    /// The whole non-streamed response object.
    pub fn response(
        &self,
        text: &str,
        lps: &[TokenLogprob],
        finish_reason: &str,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) -> Value {
        let lp = self.logprobs.then(|| logprobs_json(self.chat, lps, 0));
        let choice = if self.chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp, "finish_reason": finish_reason})
        } else {
            json!({"index": 0, "text": text, "logprobs": lp, "finish_reason": finish_reason})
        };
        json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens),
            "system_fingerprint": null,
            "meta": {"notice": NOTICE, "warnings": self.warnings},
        })
    }
}
