//! http-bridge: a thin REST front over the NATS subjects (DESIGN §7). Each route of
//! [`routes::ROUTES`] becomes one subject call through the framework's client; the `err` of a
//! reply comes back as the response body with HTTP status `err.status`, no responders as 503 and
//! a timeout as 504. `Authorization`, `traceparent` and `Idempotency-Key` are forwarded as NATS
//! headers. Also `GET /healthz` and `GET /readyz`.

pub mod config;
pub mod routes;

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use bytes::Bytes;
use mediabus_rpc::{RpcClient, RpcError};
use serde_json::{Map, Value, json};

use crate::routes::{ROUTES, Route, Source};

/// Headers passed on to the subject as NATS headers.
const FORWARDED: [&str; 3] = ["authorization", "traceparent", "idempotency-key"];

/// What every request handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    rpc: RpcClient,
    ready_services: Vec<String>,
}

impl AppState {
    /// State over a NATS connection: calls time out after `timeout` (504).
    pub fn new(nats: async_nats::Client, timeout: Duration, ready_services: Vec<String>) -> Self {
        Self { rpc: RpcClient::new(nats).with_timeout(timeout), ready_services }
    }
}

/// The bridge's router: the route table, health endpoints, body limit.
pub fn app(state: AppState, json_body_limit: usize) -> Router {
    let mut router = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
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
                      body: Bytes| { forward(spec, state, path, query, headers, body) },
            ),
        );
    }
    router.layer(DefaultBodyLimit::max(json_body_limit)).with_state(state)
}

/// Calls `spec.subject` with the request's data and headers; maps the reply onto HTTP.
async fn forward(
    spec: &'static Route,
    State(state): State<AppState>,
    Path(path): Path<HashMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let data = match data_of(spec, path, query.as_deref(), &body) {
        Ok(data) => data,
        Err(err) => return error_response(err),
    };
    let mut nats_headers = async_nats::HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            nats_headers.insert(name, value);
        }
    }
    match state.rpc.call_with_headers::<_, Value>(spec.subject, &data, nats_headers).await {
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
    for name in &state.ready_services {
        let ping =
            tokio::time::timeout(Duration::from_secs(2), nats.request(format!("$SRV.PING.{name}"), Bytes::new()));
        let up = matches!(ping.await, Ok(Ok(_)));
        services.insert(name.clone(), up.into());
    }
    let ready = connected && services.values().all(|up| up == &Value::Bool(true));
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"ready": ready, "nats": connected, "services": services}))).into_response()
}
