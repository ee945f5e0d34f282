//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the matching HTTP status
//! (OpenAI API reference, "Error codes"; llama-server answers the same shape).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use meddr_runtime::openai::RequestError;
use meddr_runtime::RuntimeError;

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

    /// The error's JSON body (the shared layer's: the browser package rejects with the same fields).
    pub fn body(&self) -> serde_json::Value {
        RequestError {
            status: self.status.as_u16(),
            kind: self.kind,
            param: self.param.clone(),
            message: self.message.clone(),
        }
        .body()
    }
}

/// A request the shared OpenAI layer (`meddr_runtime::openai`) refused or failed, with its status.
impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            kind: e.kind,
            param: e.param,
            message: e.message,
        }
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

/// A runtime error as the client should see it (the shared layer's mapping: what the request asked for
/// that cannot be done is 400, anything the model or device did is 500).
impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        RequestError::from(e).into()
    }
}
