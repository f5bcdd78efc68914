//! The one error type that crosses the wire (DESIGN §3 "Errors").
//!
//! Every failure a caller can see is an [`RpcError`]: an HTTP-equivalent `status`, a stable
//! UPPER_SNAKE `code` from [`codes`], and a `message` safe to show to the caller. Internal causes
//! are logged by the side that produced them and never put into `message`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stable error codes. Callers match on these, so they never change meaning once published.
pub mod codes {
    /// 400: the body is not JSON, or not a NestJS packet.
    pub const MALFORMED_PAYLOAD: &str = "MALFORMED_PAYLOAD";
    /// 400: the JSON does not have the shape the subject expects (wrong type, missing field).
    pub const INVALID_PAYLOAD: &str = "INVALID_PAYLOAD";
    /// 404: the subject has no request handler on this service (e.g. it only takes events).
    pub const PATTERN_NOT_FOUND: &str = "PATTERN_NOT_FOUND";
    /// 413: the body is larger than the service's `max_payload`.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// 500: the handler failed unexpectedly (including a panic). Details are only in the logs.
    pub const INTERNAL: &str = "INTERNAL";
    /// 503: nobody serves the subject (NATS "no responders"), or NATS is unreachable.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    /// 504: no reply within the deadline (caller side), or the handler overran its timeout.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// Used when a remote error carries no code of its own (e.g. a NestJS `throw new Error()`).
    pub const REMOTE_ERROR: &str = "REMOTE_ERROR";
}

/// A failure as the caller sees it: `{"status":404,"code":"NOT_FOUND","message":"...","details":...}`.
///
/// `status` is the HTTP-equivalent number (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503, 504);
/// the HTTP bridge uses it as the response status unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct RpcError {
    /// HTTP-equivalent status code.
    pub status: u16,
    /// Stable machine-readable code, UPPER_SNAKE.
    pub code: String,
    /// Human-readable, safe to show to the caller.
    pub message: String,
    /// Optional structured detail (e.g. which field failed validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl RpcError {
    /// An error with the given status, code and message, and no details.
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), details: None }
    }

    /// Attaches structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400 `INVALID_PAYLOAD`: `message` should say which field and why.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::new(400, codes::INVALID_PAYLOAD, message)
    }

    /// 500 `INTERNAL` with a generic message; log the cause before returning this.
    pub fn internal() -> Self {
        Self::new(500, codes::INTERNAL, "internal error")
    }

    /// 503 `UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, codes::UNAVAILABLE, message)
    }

    /// 504 `TIMEOUT`.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, codes::TIMEOUT, message)
    }

    /// Reads the `err` of a reply envelope leniently: NestJS sends `{status, message}` objects whose
    /// `status` may be the string `"error"` (plain `throw new Error()`), or a bare string. Anything
    /// without a numeric status becomes a 500 so callers always get the contract's shape.
    pub fn from_remote(err: Value) -> Self {
        match err {
            Value::Object(mut map) => {
                let status = map
                    .get("status")
                    .and_then(Value::as_u64)
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (400..600).contains(s))
                    .unwrap_or(500);
                let code = match map.remove("code") {
                    Some(Value::String(code)) => code,
                    _ => codes::REMOTE_ERROR.to_owned(),
                };
                let message = match map.remove("message") {
                    Some(Value::String(message)) => message,
                    _ => "remote error".to_owned(),
                };
                Self { status, code, message, details: map.remove("details") }
            }
            Value::String(message) => Self::new(500, codes::REMOTE_ERROR, message),
            _ => Self::new(500, codes::REMOTE_ERROR, "remote error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nestjs_rpc_exception_keeps_its_status_code_and_message() {
        let err = RpcError::from_remote(json!({"status":422,"code":"NEST_FAIL","message":"no"}));
        assert_eq!(err, RpcError::new(422, "NEST_FAIL", "no"));
    }

    #[test]
    fn a_plain_nestjs_error_becomes_a_500() {
        let err = RpcError::from_remote(json!({"status":"error","message":"Internal server error"}));
        assert_eq!((err.status, err.code.as_str()), (500, codes::REMOTE_ERROR));
        assert_eq!(err.message, "Internal server error");
    }

    #[test]
    fn details_are_omitted_from_the_wire_when_absent() {
        let wire = serde_json::to_string(&RpcError::new(404, "NOT_FOUND", "gone")).unwrap();
        assert_eq!(wire, r#"{"status":404,"code":"NOT_FOUND","message":"gone"}"#);
    }
}
