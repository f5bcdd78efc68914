//! The subject table: which typed handler serves which subject.
//!
//! ```
//! use mediabus_rpc::{Ctx, Router, RpcError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct FindOne { id: String }
//! #[derive(Serialize)]
//! struct Media { id: String }
//!
//! async fn find_one(_ctx: Ctx<()>, input: FindOne) -> Result<Media, RpcError> {
//!     Ok(Media { id: input.id })
//! }
//! async fn on_created(_ctx: Ctx<()>, _media: serde_json::Value) -> Result<(), RpcError> {
//!     Ok(())
//! }
//!
//! let router = Router::new()
//!     .request("media.findOne", find_one)
//!     .event("media.created", on_created);
//! assert_eq!(router.subjects().collect::<Vec<_>>(), ["media.created", "media.findOne"]);
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::envelope;
use crate::error::RpcError;

/// What a handler sees besides its typed input: the service state and the NATS headers.
pub struct Ctx<S> {
    /// The state given to [`crate::Service::new`] (cloned per request; wrap big state in `Arc`).
    pub state: S,
    /// NATS headers of the request (`Authorization`, `traceparent`, `Idempotency-Key`, ...).
    pub headers: Option<HeaderMap>,
}

impl<S> Ctx<S> {
    /// The first value of header `name`, matched case-insensitively (nats.js sends `authorization`,
    /// Go and Rust clients `Authorization`).
    pub fn header(&self, name: &str) -> Option<&str> {
        let headers = self.headers.as_ref()?;
        if let Some(value) = headers.get(name) {
            return Some(value.as_str());
        }
        headers
            .iter()
            .find(|(key, _)| AsRef::<str>::as_ref(key).eq_ignore_ascii_case(name))
            .and_then(|(_, values)| values.first())
            .map(|v| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header (scheme matched case-insensitively).
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("Authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
    }

    /// The headers worth passing on when this handler calls another service or emits an event:
    /// `Authorization` and `traceparent` (W3C trace context; with OTLP export on, naming this
    /// request's span as the parent, see `TraceContext::of_span`).
    pub fn forwarded_headers(&self) -> HeaderMap {
        let mut out = HeaderMap::new();
        for name in crate::FORWARDED_HEADERS {
            if let Some(value) = self.header(name) {
                out.insert(name, value);
            }
        }
        // With OTLP export, events and jobs are children of this request's span.
        if let Some(hop) = mediabus_telemetry::trace::TraceContext::of_span(&tracing::Span::current()) {
            out.insert(mediabus_telemetry::trace::TRACEPARENT, hop.to_string().as_str());
        }
        out
    }
}

/// The input of a [`Router::binary_request`] handler.
#[derive(Debug, Clone)]
pub enum Body {
    /// The body was JSON: the packet's `data` (or the whole raw JSON payload).
    Json(Box<RawValue>),
    /// The body was not JSON: the bytes as sent, metadata in the NATS headers.
    Binary(Bytes),
}

/// What a type-erased handler receives.
pub(crate) enum Input<'a> {
    Json(&'a RawValue),
    Binary(&'a Bytes),
}

/// The reply body a request handler produces: [`envelope::open_response`] followed by its result
/// serialized as JSON (empty for event handlers).
pub(crate) type Reply = Result<Vec<u8>, RpcError>;
pub(crate) type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
/// A check of a request's headers that runs before its body is decoded ([`Router::guard`]).
pub(crate) type Guard<S> = Arc<dyn Fn(&Ctx<S>) -> Result<(), RpcError> + Send + Sync>;

/// A type-erased handler: decodes its input (synchronously, so errors are 400s before any work
/// starts) and returns the future that does the work.
pub(crate) type Invoke<S> = Arc<dyn Fn(Ctx<S>, Input<'_>) -> Result<BoxReply, RpcError> + Send + Sync>;

/// The handlers bound to one subject. A subject may take requests, events, or both.
pub(crate) struct Route<S> {
    pub(crate) request: Option<Invoke<S>>,
    pub(crate) event: Option<Invoke<S>>,
    /// Whether a body that is not JSON goes to the request handler (as [`Body::Binary`]) instead
    /// of being refused with 400 `MALFORMED_PAYLOAD`.
    pub(crate) binary: bool,
    /// Set by [`Router::binary_request_by_header`]: the body is raw bytes exactly when the request
    /// carries this header, and JSON otherwise (never guessed from the bytes).
    pub(crate) raw_header: Option<String>,
    /// Set by [`Router::timeout`]: replaces the service's `request_timeout` for this subject.
    pub(crate) timeout: Option<std::time::Duration>,
    /// Set by [`Router::guard`]: runs on requests before their body is decoded.
    pub(crate) guard: Option<Guard<S>>,
}

/// The subject table of a service: `subject → handler`, built like an axum `Router`.
pub struct Router<S> {
    pub(crate) routes: BTreeMap<String, Route<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Self { routes: BTreeMap::new() }
    }
}

impl<S: Send + 'static> Router<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves requests on `subject` (NestJS `@MessagePattern`): the packet's `data` is decoded into
    /// `T` (400 `INVALID_PAYLOAD` on mismatch), and the handler's `Ok(R)` becomes the `response`,
    /// its `Err(E)` the `err` object.
    ///
    /// Panics at start-up (not per request) if `subject` already has a request handler.
    pub fn request<T, R, E, F, Fut>(mut self, subject: &str, handler: F) -> Self
    where
        T: DeserializeOwned,
        R: Serialize + 'static,
        E: Into<RpcError>,
        F: Fn(Ctx<S>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let invoke = erase(handler, write_response);
        let route = self.route(subject);
        assert!(route.request.is_none(), "two request handlers for subject {subject}");
        route.request = Some(invoke);
        self
    }

    /// Serves requests on `subject` whose body may be JSON or raw bytes (e.g. a file chunk with its
    /// metadata in NATS headers): the handler gets a [`Body`] and decodes it itself.
    ///
    /// Panics at start-up if `subject` already has a request handler.
    pub fn binary_request<R, E, F, Fut>(mut self, subject: &str, handler: F) -> Self
    where
        R: Serialize + 'static,
        E: Into<RpcError>,
        F: Fn(Ctx<S>, Body) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let invoke: Invoke<S> = Arc::new(move |ctx, input| {
            let body = match input {
                Input::Json(data) => Body::Json(data.to_owned()),
                Input::Binary(bytes) => Body::Binary(bytes.clone()),
            };
            Ok(finish(handler(ctx, body), write_response))
        });
        let route = self.route(subject);
        assert!(route.request.is_none(), "two request handlers for subject {subject}");
        route.request = Some(invoke);
        route.binary = true;
        self
    }

    /// As [`Router::binary_request`], but the request says which form its body has: raw bytes
    /// when it carries header `raw_header` (matched case-insensitively), JSON otherwise. A chunk
    /// of a file can be anything, valid JSON or white space included, so it must not be guessed.
    ///
    /// Panics at start-up if `subject` already has a request handler.
    pub fn binary_request_by_header<R, E, F, Fut>(self, subject: &str, raw_header: &str, handler: F) -> Self
    where
        R: Serialize + 'static,
        E: Into<RpcError>,
        F: Fn(Ctx<S>, Body) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let mut router = self.binary_request(subject, handler);
        router.route(subject).raw_header = Some(raw_header.to_owned());
        router
    }

    /// Gives `subject` its own handler timeout instead of the service's `request_timeout` (for
    /// work that is long by nature, e.g. completing a multi-GiB upload). A caller's deadline
    /// header still shortens it.
    pub fn timeout(mut self, subject: &str, timeout: std::time::Duration) -> Self {
        self.route(subject).timeout = Some(timeout);
        self
    }

    /// Runs `check` on every request to `subject` before its body is decoded; an `Err` is the
    /// reply and the body is never parsed. For subjects whose bodies are large (file bytes): a
    /// caller without a valid token then costs a header lookup and a signature check, not the
    /// decoding of megabytes. Events on the subject are not checked.
    pub fn guard<E, F>(mut self, subject: &str, check: F) -> Self
    where
        E: Into<RpcError>,
        F: Fn(&Ctx<S>) -> Result<(), E> + Send + Sync + 'static,
    {
        self.route(subject).guard = Some(Arc::new(move |ctx| check(ctx).map_err(Into::into)));
        self
    }

    /// Handles events on `subject` (NestJS `@EventPattern`, packets without `id`): no reply is sent;
    /// an error is logged and counted.
    ///
    /// Panics at start-up if `subject` already has an event handler.
    pub fn event<T, E, F, Fut>(mut self, subject: &str, handler: F) -> Self
    where
        T: DeserializeOwned,
        E: Into<RpcError>,
        F: Fn(Ctx<S>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let invoke = erase(handler, |_: &()| Ok(Vec::new()));
        let route = self.route(subject);
        assert!(route.event.is_none(), "two event handlers for subject {subject}");
        route.event = Some(invoke);
        self
    }

    /// The subjects in the table, sorted.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
    }

    fn route(&mut self, subject: &str) -> &mut Route<S> {
        self.routes.entry(subject.to_owned()).or_insert(Route {
            request: None,
            event: None,
            binary: false,
            raw_header: None,
            timeout: None,
            guard: None,
        })
    }
}

/// A request handler's output as the opening of its reply envelope.
fn write_response<R: Serialize>(value: &R) -> serde_json::Result<Vec<u8>> {
    let mut out = envelope::open_response();
    serde_json::to_writer(&mut out, value)?;
    Ok(out)
}

fn erase<S, T, R, E, F, Fut>(handler: F, encode: fn(&R) -> serde_json::Result<Vec<u8>>) -> Invoke<S>
where
    T: DeserializeOwned,
    R: 'static,
    E: Into<RpcError>,
    F: Fn(Ctx<S>, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    Arc::new(move |ctx, input| {
        let Input::Json(data) = input else {
            return Err(RpcError::new(400, crate::codes::MALFORMED_PAYLOAD, "body is not JSON"));
        };
        let input: T =
            serde_json::from_str(data.get()).map_err(|e| RpcError::invalid_payload(format!("invalid data: {e}")))?;
        Ok(finish(handler(ctx, input), encode))
    })
}

/// Boxes a handler's work together with the encoding of its output.
fn finish<R: 'static, E: Into<RpcError>>(
    work: impl Future<Output = Result<R, E>> + Send + 'static,
    encode: fn(&R) -> serde_json::Result<Vec<u8>>,
) -> BoxReply {
    Box::pin(async move {
        let output = work.await.map_err(Into::into)?;
        encode(&output).map_err(|e| {
            tracing::error!(error = %e, "response does not serialize to JSON");
            RpcError::internal()
        })
    })
}
