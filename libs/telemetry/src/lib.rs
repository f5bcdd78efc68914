//! Operations support shared by every mediabus binary (DESIGN §12):
//!
//! - logs: [`setup`] installs a `tracing` subscriber writing to stderr, JSON lines
//!   (`telemetry.format = "json"`, the production default) or human-readable text (`"text"`,
//!   what `scripts/dev` sets), filtered by `RUST_LOG` (default `info`). Request spans carry
//!   `request_id` and `trace_id`; in JSON every line inside a request has both at the top level
//!   (from its innermost span that has them), beside the list of its spans (`"spans": [{"name":
//!   "rpc", "subject": …, "request_id": …, "trace_id": …}]`);
//! - metrics: [`setup`] installs the Prometheus recorder of the `metrics` facade and serves its
//!   text (format 0.0.4) on `metrics.listen` at `GET /metrics`, with `GET /healthz` (liveness)
//!   and `GET /readyz` (the checks of [`add_readiness_check`]) beside it; off when
//!   `metrics.listen` is empty, and then every `metrics::counter!` is a no-op;
//! - traces: [`trace::TraceContext`], the W3C `traceparent` read from and written to NATS headers.
//!
//! OTLP export (`telemetry.otlp_endpoint`) is not compiled into this build: the OpenTelemetry
//! exporter's dependency tree (tonic/prost or an HTTP client) is not worth its build cost here, so a
//! set endpoint is reported once at start-up and trace ids still flow through headers and logs.

pub mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// `[telemetry]` of every binary's settings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TelemetrySettings {
    /// `json` (JSON lines, production) or `text` (human-readable, development).
    pub format: LogFormat,
    /// OTLP collector endpoint; empty: no export. See the crate documentation.
    #[serde(default)]
    pub otlp_endpoint: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, `target`, `spans`.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[metrics]` of every binary's settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MetricsSettings {
    /// `host:port` of the Prometheus listener (`GET /metrics`, `GET /healthz`); empty: off.
    #[serde(default)]
    pub listen: String,
}

/// Why [`setup`] failed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `metrics.listen` could not be bound.
    #[error("metrics listener on {listen}: {source}")]
    Listen { listen: String, source: std::io::Error },
    /// A metrics recorder was already installed in this process.
    #[error("metrics recorder: {0}")]
    Recorder(String),
}

/// Installs a text subscriber on stderr filtered by `RUST_LOG` (default `info`): for tools, tests,
/// and for reporting a configuration error before the settings (and so [`setup`]) are known.
/// Later calls, and a later [`setup`], leave the first subscriber in place.
pub fn init() {
    init_logs(LogFormat::Text);
}

/// Installs the log subscriber of `telemetry.format` and, when `metrics.listen` is set, the
/// Prometheus recorder and its listener (a background task on the current tokio runtime).
/// Returns the bound metrics address (useful with port 0). Call once, early in `main`.
///
/// Errors: the metrics address cannot be bound, or a recorder is already installed.
pub async fn setup(
    service: &str,
    telemetry: &TelemetrySettings,
    metrics: &MetricsSettings,
) -> Result<Option<SocketAddr>, TelemetryError> {
    init_logs(telemetry.format);
    if !telemetry.otlp_endpoint.is_empty() {
        tracing::warn!(
            endpoint = %telemetry.otlp_endpoint,
            "telemetry.otlp_endpoint is set but OTLP export is not built in; trace ids stay in headers and logs"
        );
    }
    if metrics.listen.is_empty() {
        return Ok(None);
    }
    let handle = install_recorder()?;
    let listener = tokio::net::TcpListener::bind(&metrics.listen)
        .await
        .map_err(|source| TelemetryError::Listen { listen: metrics.listen.clone(), source })?;
    let local =
        listener.local_addr().map_err(|source| TelemetryError::Listen { listen: metrics.listen.clone(), source })?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(move || render(handle.clone())))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    });
    tracing::info!(service, listen = %local, "metrics at http://{local}/metrics");
    Ok(Some(local))
}

type Check = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// The checks `GET /readyz` runs on the metrics listener.
static READINESS: Mutex<Vec<(&'static str, Check)>> = Mutex::new(Vec::new());

/// Adds a check to `GET /readyz` of the metrics listener, e.g. the document store's health check.
/// `/readyz` runs every check (2 s at most each) and answers 200 `{"ready":true,"checks":{name:
/// true}}`, or 503 with the failing ones `false` (their errors are logged). A check added again
/// under the same `name` replaces the earlier one.
pub fn add_readiness_check<F, Fut>(name: &'static str, check: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let check: Check = Arc::new(move || Box::pin(check()));
    let mut checks = READINESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // One check per name: a service started again in the same process (tests) replaces its own.
    checks.retain(|(existing, _)| *existing != name);
    checks.push((name, check));
}

async fn readyz() -> axum::response::Response {
    use axum::response::IntoResponse;
    let checks: Vec<(&'static str, Check)> =
        READINESS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let mut body = String::from("{\"checks\":{");
    let mut ready = true;
    for (i, (name, check)) in checks.iter().enumerate() {
        let ok = match tokio::time::timeout(Duration::from_secs(2), check()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(check = name, error = %e, "readiness check failed");
                false
            }
            Err(_) => {
                tracing::warn!(check = name, "readiness check timed out");
                false
            }
        };
        ready &= ok;
        let comma = if i == 0 { "" } else { "," };
        body.push_str(&format!("{comma}\"{name}\":{ok}"));
    }
    body.push_str(&format!("}},\"ready\":{ready}}}"));
    let status = if ready { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().with_current_span(false).with_span_list(true);
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithIds(json))
                .try_init()
        }
    };
}

/// A JSON event format that lifts `request_id` and `trace_id` from the event's innermost span
/// carrying them to the top level of the line, so log tools can filter on them directly.
struct WithIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithIds<F>
where
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(&line) else {
            return writer.write_str(&line);
        };
        let spans = object.get("spans").and_then(|s| s.as_array()).cloned().unwrap_or_default();
        for key in ["request_id", "trace_id"] {
            if let Some(value) = spans.iter().rev().find_map(|span| span.get(key)) {
                object.insert(key.to_owned(), value.clone());
            }
        }
        let mut out = serde_json::Value::Object(object).to_string();
        out.push('\n');
        writer.write_str(&out)
    }
}

/// Histogram buckets of every `*_seconds` metric, in seconds: 1 ms to 1 min.
const SECONDS_BUCKETS: [f64; 14] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];

fn install_recorder() -> Result<PrometheusHandle, TelemetryError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| TelemetryError::Recorder(e.to_string()))?;
    describe();
    // Without the exporter's own runtime, its upkeep (histogram compaction) is ours to run.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

async fn render(handle: PrometheusHandle) -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// The metric names of DESIGN §12, with their HELP text.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!("mediabus_requests_total", "Requests handled per subject, by reply status (200 = success)");
    describe_histogram!("mediabus_request_duration_seconds", Unit::Seconds, "Time to handle a request, per subject");
    describe_counter!("mediabus_http_requests_total", "HTTP requests per matched route, method and status");
    describe_histogram!(
        "mediabus_http_request_duration_seconds",
        Unit::Seconds,
        "Time to the response head, per matched route and method"
    );
    describe_counter!("mediabus_upload_bytes_total", Unit::Bytes, "File bytes received by uploads");
    describe_counter!("mediabus_jobs_total", "Processing jobs finished, by kind and outcome");
    describe_histogram!("mediabus_job_duration_seconds", Unit::Seconds, "Time to run a processing job, per kind");
    describe_gauge!("mediabus_jobs_pending", "Jobs waiting in MEDIA_JOBS for this consumer");
}
