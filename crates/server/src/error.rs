//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status
//! (OpenAI API reference, "Error codes"; llama-server answers the same shape).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meddr_runtime::RuntimeError;
use serde_json::json;

/// One failed request: the status, OpenAI's error `type`, the offending parameter and a message that names
/// the offending value.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    /// 400 `invalid_request_error`.
    pub fn bad_request(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            message: message.into(),
        }
    }

    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            param: None,
            message: message.into(),
        }
    }

    /// The error's JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": match self.status.as_u16() {
                401 => Some("invalid_api_key"),
                413 => Some("request_too_large"),
                429 => Some("rate_limit_exceeded"),
                _ => None,
            },
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

/// A runtime error as the client should see it: what the request asked for that cannot be done is 400,
/// anything the model or device did is 500.
impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::InvalidOption { field, .. } => ApiError::bad_request(Some(field), e.to_string()),
            RuntimeError::ContextOverflow { .. } | RuntimeError::ConversationFull { .. } => {
                ApiError::bad_request(Some("messages"), e.to_string())
            }
            RuntimeError::NoChatTemplate => ApiError::bad_request(
                Some("messages"),
                "this model file has no chat template (a plain llama GGUF): use POST /v1/completions with a raw \
                 prompt",
            ),
            RuntimeError::EmptyPrompt | RuntimeError::ImageTokens { .. } | RuntimeError::NoVisionEncoder => {
                ApiError::bad_request(Some("messages"), e.to_string())
            }
            RuntimeError::Tokenizer(_) | RuntimeError::ChatTemplate { .. } => {
                ApiError::bad_request(Some("messages"), e.to_string())
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string()),
        }
    }
}
