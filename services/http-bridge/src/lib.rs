//! http-bridge: a thin REST front over the NATS subjects (DESIGN §7). Each route of
//! [`routes::ROUTES`] becomes one subject call through the framework's client; the `err` of a
//! reply comes back as the response body with HTTP status `err.status`, no responders as 503 and
//! a timeout as 504. `Authorization`, `traceparent`, `Idempotency-Key` and `X-Request-Id` are
//! forwarded as NATS headers.
//!
//! Besides the table: `POST /api/media/upload` ([`upload`]: multipart streamed onto the upload
//! subjects), `GET /api/media/{id}/content` ([`content`]: bytes from the file store after the
//! media service grants access), `/api/uploads` ([`tus`]: tus 1.0 resumable uploads onto the same
//! subjects), `GET /healthz`, `GET /readyz`. Every request gets an
//! `X-Request-Id` (the client's, or a new one) in the logs and on the response.

pub mod analytics;
pub mod config;
pub mod content;
pub mod docs;
pub mod events;
pub mod openapi;
pub mod revocation;
pub mod routes;
pub mod server;
pub mod tus;
pub mod upload;
pub mod variants;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, head, on, post};
use bytes::Bytes;
use mediabus_auth::ContentSigner;
use mediabus_config::ExposeSecret;
use mediabus_rpc::{RpcClient, RpcError};
use mediabus_storage::BlobStore;
use serde_json::{Map, Value, json};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::config::{Settings, UploadSettings};
use crate::routes::{ROUTES, Route, Source};

/// Headers passed on to the subject as NATS headers. The client address is the one
/// [`guard_headers`] set from the TCP peer, never a client's.
const FORWARDED: [&str; 5] = ["authorization", "traceparent", "idempotency-key", "x-request-id", CLIENT_ADDR];

/// The client-address header ([`mediabus_contracts::auth::CLIENT_ADDR_HEADER`]), lowercase.
const CLIENT_ADDR: &str = "mediabus-client-addr";

/// In front of every route:
/// - an `Authorization` header that is not visible ASCII gets 401 `UNAUTHENTICATED` (it used to
///   be dropped on the way to NATS, so the request ran as anonymous);
/// - [`CLIENT_ADDR`] is replaced by the TCP peer's IP ([`server::serve`] puts it in the request's
///   `ConnectInfo`), so the auth service can throttle per source and a client cannot pose as
///   another address. Without a peer (in-process tests) the header is only removed.
async fn guard_headers(mut request: Request<Body>, next: axum::middleware::Next) -> Response {
    if request.headers().get_all(axum::http::header::AUTHORIZATION).iter().any(|v| v.to_str().is_err()) {
        return error_response(RpcError::new(
            401,
            "UNAUTHENTICATED",
            "the Authorization header must be visible ASCII: `Bearer <token>`",
        ));
    }
    let peer = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let headers = request.headers_mut();
    headers.remove(CLIENT_ADDR);
    if let Some(ip) = peer.and_then(|ip| HeaderValue::from_str(&ip.to_canonical().to_string()).ok()) {
        headers.insert(CLIENT_ADDR, ip);
    }
    next.run(request).await
}

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
    /// The media library's files (`web.dir`).
    web_dir: Arc<std::path::Path>,
    /// Access tokens of the routes the bridge authenticates itself (`/api/events`).
    verifier: mediabus_auth::Verifier,
    /// `GET /api/events`.
    events: events::Events,
    /// `/api/uploads` (tus).
    tus: tus::Tus,
    /// View/download counters, flushed to the media service (`analytics`).
    analytics: analytics::Analytics,
    /// Content grants refused since their media was removed or made private.
    revocations: revocation::Revocations,
    /// Slots for JSON-route subject calls (`http.max_in_flight`); none free: 503 at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A development secret outside `MEDIABUS__ENV=dev` (the message names the key).
    #[error(transparent)]
    DevSecret(#[from] mediabus_config::DevSecretError),
    #[error("file store: {0}")]
    Storage(#[from] mediabus_storage::StorageError),
    #[error("content signing secret: {0}")]
    Content(#[from] mediabus_auth::KeyError),
    #[error("auth keys: {0}")]
    Auth(mediabus_auth::KeyError),
}

impl AppState {
    /// State over a NATS connection and the file store of `settings.storage`.
    ///
    /// Errors: a development secret outside `env = dev`, the file store cannot be opened, or the
    /// content secret is too short.
    pub async fn new(nats: async_nats::Client, settings: &Settings) -> Result<Self, StartError> {
        settings.refuse_dev_secrets()?;
        let http = &settings.http;
        let events = events::Events::new(nats.clone(), &settings.events);
        let analytics = analytics::Analytics::new(RpcClient::new(nats.clone()));
        analytics.spawn_flusher();
        // Before any content is served: the removals of the last grant lifetime.
        let revocations = revocation::Revocations::new(&settings.content);
        revocations.follow(nats.clone(), &settings.content).await;
        Ok(Self {
            rpc: RpcClient::new(nats).with_timeout(Duration::from_millis(http.request_timeout_ms)),
            ready_services: http.ready_services.clone().into(),
            blobs: settings.storage.open().await?,
            content_signer: ContentSigner::new(settings.content.signing_secret.expose_secret())?,
            upload: settings.upload.clone(),
            json_body_limit: http.json_body_limit_bytes,
            body_idle_timeout: Duration::from_millis(http.body_idle_timeout_ms),
            docs_dir: settings.docs.assets_dir.as_path().into(),
            web_dir: settings.web.dir.as_path().into(),
            verifier: mediabus_auth::Verifier::new(&settings.auth.keys, &settings.auth.issuer, &settings.auth.audience)
                .map_err(StartError::Auth)?,
            events,
            tus: tus::Tus::new(&settings.tus),
            analytics,
            revocations,
            in_flight: Arc::new(tokio::sync::Semaphore::new(http.max_in_flight.max(1))),
        })
    }

    /// The view/download counters; flush them on shutdown ([`analytics::Analytics::flush`]).
    pub fn analytics(&self) -> analytics::Analytics {
        self.analytics.clone()
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
        .route("/api/media/{id}/hls/{*path}", get(variants::hls))
        .route("/api/events", get(events::events))
        .merge(openapi::router())
        .merge(docs::router(&state.docs_dir))
        .merge(web::router(&state.web_dir));
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
    // Every route's body may pause at most `body_idle_timeout` (reset by each chunk; 408). tus
    // routes come after this layer: they keep an identical timer of their own, which answers 408
    // from their loop (with the layer they would see a plain body error).
    let router = router
        .layer(RequestBodyTimeoutLayer::new(state.body_idle_timeout))
        .route(tus::BASE, post(tus::create).options(tus::options))
        .route("/api/uploads/{id}", head(tus::head).patch(tus::patch).delete(tus::terminate).options(tus::options))
        .route_layer(axum::middleware::from_fn(http_metrics));
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request<Body>| {
            let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let (id, traceparent) = (header("x-request-id"), header("traceparent"));
            let trace_id = traceparent.get(3..35).unwrap_or_default();
            let (method, path) = (request.method(), request.uri().path());
            let span = tracing::info_span!("http", request_id = %id, %trace_id, %method, %path);
            // Exported (OTLP) as a child of the request's traceparent, the trace its NATS calls continue.
            if let Some(trace) = mediabus_telemetry::trace::TraceContext::parse(traceparent) {
                trace.attach_to(&span);
            }
            span
        })
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO));
    router
        .with_state(state)
        .layer(axum::middleware::from_fn(guard_headers))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(trace)
        .layer(axum::middleware::from_fn(ensure_traceparent))
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
}

/// Gives every request a valid W3C `traceparent` (<https://www.w3.org/TR/trace-context/>): the
/// client's, or a new trace when it sent none or a malformed one. It is forwarded as a NATS
/// header with every subject call, so the workers' logs, events and jobs share its trace id.
async fn ensure_traceparent(mut request: Request<Body>, next: axum::middleware::Next) -> Response {
    use mediabus_telemetry::trace::TraceContext;
    let valid = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    if valid.is_none()
        && let Ok(value) = HeaderValue::from_str(&TraceContext::new_root().to_string())
    {
        request.headers_mut().insert("traceparent", value);
    }
    next.run(request).await
}

/// `mediabus_http_requests_total{route,method,status}` and
/// `mediabus_http_request_duration_seconds{route,method}` (DESIGN §12): `route` is the matched
/// path template (`/api/media/{id}`), never the raw path, so ids do not multiply the series. The
/// duration runs to the response head (a streamed body may take longer). Requests matching no
/// route are not counted.
async fn http_metrics(request: Request<Body>, next: axum::middleware::Next) -> Response {
    let route = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        let elapsed = started.elapsed().as_secs_f64();
        let status = response.status().as_u16().to_string();
        metrics::histogram!("mediabus_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
            .record(elapsed);
        metrics::counter!("mediabus_http_requests_total", "route" => route, "method" => method, "status" => status)
            .increment(1);
    }
    response
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
    // With OTLP export, the worker's span is a child of this request's `http` span.
    if let Some(hop) = mediabus_telemetry::trace::TraceContext::of_span(&tracing::Span::current()) {
        nats_headers.insert(mediabus_telemetry::trace::TRACEPARENT, hop.to_string().as_str());
    }
    nats_headers
}

/// Reads a JSON route's body: at most `json_body_limit` bytes (413); a pause longer than the body
/// idle timeout ([`RequestBodyTimeoutLayer`] in [`app`]) is 408.
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, RpcError> {
    axum::body::to_bytes(body, state.json_body_limit).await.map_err(|e| {
        if body_timed_out(&e) {
            RpcError::new(408, "REQUEST_TIMEOUT", "the request body stalled")
        } else {
            RpcError::new(
                413,
                mediabus_rpc::codes::PAYLOAD_TOO_LARGE,
                format!("the body exceeds {} bytes (or was cut off)", state.json_body_limit),
            )
        }
    })
}

/// Whether a body error comes from the body idle timeout (tower-http's `TimeoutError` anywhere in
/// its chain of sources).
pub(crate) fn body_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        next = e.source();
    }
    false
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
    // Shed load at once rather than queue without bound: the slot is held until the reply.
    let Ok(_slot) = state.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(subject = spec.subject, "overloaded: too many subject calls in flight");
        return error_response(RpcError::unavailable("the bridge is overloaded; retry shortly"));
    };
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

/// The contract's error object with HTTP status `err.status`; a 503 (overload, or no service up)
/// carries `Retry-After: 1`.
fn error_response(err: RpcError) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return (status, [(axum::http::header::RETRY_AFTER, "1")], Json(err)).into_response();
    }
    (status, Json(err)).into_response()
}

/// Liveness: the process answers.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: NATS connected, every service in `ready_services` answers `$SRV.PING.<name>`, and
/// the file store passes its health check (`files`; 2 s at most).
async fn readyz(State(state): State<AppState>) -> Response {
    let files = tokio::time::timeout(Duration::from_secs(2), state.blobs.health_check());
    let files = match files.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "file store health check failed");
            false
        }
        Err(_) => false,
    };
    let nats = state.rpc.nats();
    let connected = nats.connection_state() == async_nats::connection::State::Connected;
    let mut services = Map::new();
    for name in state.ready_services.iter() {
        let ping =
            tokio::time::timeout(Duration::from_secs(2), nats.request(format!("$SRV.PING.{name}"), Bytes::new()));
        let up = matches!(ping.await, Ok(Ok(_)));
        services.insert(name.clone(), up.into());
    }
    let ready = connected && files && services.values().all(|up| up == &Value::Bool(true));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": ready, "nats": connected, "files": files, "services": services}))).into_response()
}
