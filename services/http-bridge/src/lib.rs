//! http-bridge: a thin REST front over the NATS subjects (DESIGN §7). Each route of
//! [`routes::ROUTES`] becomes one subject call through the framework's client; the `err` of a
//! reply comes back as the response body with HTTP status `err.status`, no responders as 503 and
//! a timeout as 504. `Authorization`, `traceparent`, `Idempotency-Key` and `X-Request-Id` are
//! forwarded as NATS headers.
//!
//! Besides the table: `POST /api/media/upload` ([`upload`]: multipart streamed onto the upload
//! subjects), `GET /api/media/{id}/content` ([`content`]: bytes from the file store after the
//! media service grants access), `GET /healthz`, `GET /readyz`. Every request gets an
//! `X-Request-Id` (the client's, or a new one) in the logs and on the response.

pub mod config;
pub mod content;
pub mod docs;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post};
use bytes::Bytes;
use mediabus_auth::ContentSigner;
use mediabus_rpc::{RpcClient, RpcError};
use mediabus_storage::BlobStore;
use serde_json::{Map, Value, json};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::{Settings, UploadSettings};
use crate::routes::{ROUTES, Route, Source};

/// Headers passed on to the subject as NATS headers.
const FORWARDED: [&str; 4] = ["authorization", "traceparent", "idempotency-key", "x-request-id"];

/// What every request handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    rpc: RpcClient,
    ready_services: Arc<[String]>,
    blobs: Arc<dyn BlobStore>,
    content_signer: ContentSigner,
    upload: UploadSettings,
    json_body_limit: usize,
    body_idle_timeout: Duration,
    /// Swagger UI's files (`docs.assets_dir`).
    docs_dir: Arc<std::path::Path>,
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("file store: {0}")]
    Storage(#[from] mediabus_storage::StorageError),
    #[error("content signing secret: {0}")]
    Content(#[from] mediabus_auth::KeyError),
}

impl AppState {
    /// State over a NATS connection and the file store of `settings.storage`.
    ///
    /// Errors: the file store cannot be opened, or the content secret is too short.
    pub async fn new(nats: async_nats::Client, settings: &Settings) -> Result<Self, StartError> {
        let http = &settings.http;
        Ok(Self {
            rpc: RpcClient::new(nats).with_timeout(Duration::from_millis(http.request_timeout_ms)),
            ready_services: http.ready_services.clone().into(),
            blobs: settings.storage.open().await?,
            content_signer: ContentSigner::new(&settings.content.signing_secret)?,
            upload: settings.upload.clone(),
            json_body_limit: http.json_body_limit_bytes,
            body_idle_timeout: Duration::from_millis(http.body_idle_timeout_ms),
            docs_dir: settings.docs.assets_dir.as_path().into(),
        })
    }
}

/// The bridge's router: the route table, upload, content, health endpoints; request ids and
/// request logging around all of it.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/media/upload", post(upload::upload))
        .route("/api/media/{id}/content", get(content::content))
        .merge(openapi::router())
        .merge(docs::router(&state.docs_dir));
    for spec in &ROUTES {
        let filter = MethodFilter::try_from(spec.method.clone()).expect("standard method");
        router = router.route(
            spec.path,
            on(
                filter,
                move |state: State<AppState>,
                      path: Path<HashMap<String, String>>,
                      query: RawQuery,
                      headers: HeaderMap,
                      body: Body| { forward(spec, state, path, query, headers, body) },
            ),
        );
    }
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<Body>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));
    router
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
}

/// Request ids for requests that come without `X-Request-Id`: NUIDs (22 characters, unique
/// without coordination, like NATS inbox names).
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&nuid::next()).ok().map(RequestId::new)
    }
}

/// The request headers that travel on as NATS headers ([`FORWARDED`]).
fn nats_headers(headers: &HeaderMap) -> async_nats::HeaderMap {
    let mut nats_headers = async_nats::HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            nats_headers.insert(name, value);
        }
    }
    nats_headers
}

/// Reads a JSON route's body: at most `json_body_limit` bytes (413), within the body idle
/// timeout (408).
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, RpcError> {
    match tokio::time::timeout(state.body_idle_timeout, axum::body::to_bytes(body, state.json_body_limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(RpcError::new(
            413,
            mediabus_rpc::codes::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {} bytes (or was cut off)", state.json_body_limit),
        )),
        Err(_) => Err(RpcError::new(408, "REQUEST_TIMEOUT", "the request body stalled")),
    }
}

/// Calls `spec.subject` with the request's data and headers; maps the reply onto HTTP.
async fn forward(
    spec: &'static Route,
    State(state): State<AppState>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(&state, body).await {
        Ok(body) => body,
        Err(err) => return error_response(err),
    };
    let data = match data_of(spec, path, query.as_deref(), &body) {
        Ok(data) => data,
        Err(err) => return error_response(err),
    };
    match state.rpc.call_with_headers::<_, Value>(spec.subject, &data, nats_headers(&headers)).await {
        Ok(response) => (spec.ok, Json(response)).into_response(),
        Err(err) => error_response(err),
    }
}

/// Assembles the subject's `data`: body (JSON object), then query, then path parameters.
fn data_of(spec: &Route, path: HashMap<String, String>, query: Option<&str>, body: &[u8]) -> Result<Value, RpcError> {
    let mut data = Map::new();
    if spec.source == Source::Body && !body.is_empty() {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => data = object,
            Ok(_) => return Err(RpcError::invalid_payload("the body must be a JSON object")),
            Err(e) => {
                return Err(RpcError::new(400, mediabus_rpc::codes::MALFORMED_PAYLOAD, format!("invalid JSON: {e}")));
            }
        }
    }
    if spec.source == Source::Query {
        for (key, value) in query.map(parse_query).unwrap_or_default() {
            data.insert(key.clone(), routes::typed_query_value(&key, &value));
        }
    }
    for (key, value) in path {
        data.insert(key, Value::String(value));
    }
    Ok(Value::Object(data))
}

/// `a=1&b=x%20y` → pairs, percent- and plus-decoded (application/x-www-form-urlencoded).
fn parse_query(query: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&format!("/?{query}").parse().expect("valid uri"))
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The contract's error object with HTTP status `err.status`.
fn error_response(err: RpcError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(err)).into_response()
}

/// Liveness: the process answers.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: NATS connected and every service in `ready_services` answers `$SRV.PING.<name>`.
async fn readyz(State(state): State<AppState>) -> Response {
    let nats = state.rpc.nats();
    let connected = nats.connection_state() == async_nats::connection::State::Connected;
    let mut services = Map::new();
    for name in state.ready_services.iter() {
        let ping =
            tokio::time::timeout(Duration::from_secs(2), nats.request(format!("$SRV.PING.{name}"), Bytes::new()));
        let up = matches!(ping.await, Ok(Ok(_)));
        services.insert(name.clone(), up.into());
    }
    let ready = connected && services.values().all(|up| up == &Value::Bool(true));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": ready, "nats": connected, "services": services}))).into_response()
}
