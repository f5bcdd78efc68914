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
//! - traces: [`trace::TraceContext`], the W3C `traceparent` read from and written to NATS headers;
//!   when `telemetry.otlp_endpoint` is set, [`setup`] also exports the spans over OTLP/HTTP
//!   (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>, JSON encoding) to
//!   `<endpoint>/v1/traces`, as resource `service.name` = the service name, the request spans
//!   continuing the caller's trace ([`trace::TraceContext::attach_to`]); [`shutdown`] sends what
//!   is still queued. Without an endpoint no exporter, thread or task exists.

mod otlp;
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
    /// OTLP/HTTP collector endpoint for traces, e.g. `http://collector:4318` (spans go to
    /// `POST <endpoint>/v1/traces` as JSON); plain `http://` only; empty (the default): no export.
    /// See the crate documentation.
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
    /// `telemetry.otlp_endpoint` is not an `http://` URL, or the OTLP exporter cannot be built.
    #[error("OTLP trace export: {0}")]
    Otlp(String),
}

/// Installs a text subscriber on stderr filtered by `RUST_LOG` (default `info`): for tools, tests,
/// and for reporting a configuration error before the settings (and so [`setup`]) are known.
/// Later calls, and a later [`setup`], leave the first subscriber in place.
pub fn init() {
    init_logs(LogFormat::Text, None);
}

/// Installs the log subscriber of `telemetry.format`; when `telemetry.otlp_endpoint` is set, the
/// OTLP span exporter beside it (a batch thread, exports on the current tokio runtime; see the
/// crate documentation); when `metrics.listen` is set, the Prometheus recorder and its listener (a
/// background task on the current tokio runtime). Returns the bound metrics address (useful with
/// port 0). Call once, early in `main`, and [`shutdown`] before `main` returns.
///
/// Errors: `telemetry.otlp_endpoint` is not an `http://` URL, the metrics address cannot be
/// bound, or a recorder is already installed.
pub async fn setup(
    service: &str,
    telemetry: &TelemetrySettings,
    metrics: &MetricsSettings,
) -> Result<Option<SocketAddr>, TelemetryError> {
    let endpoint = telemetry.otlp_endpoint.trim();
    if endpoint.is_empty() {
        init_logs(telemetry.format, None);
    } else {
        let (provider, tracer) = match otlp::setup(service, endpoint) {
            Ok(exporter) => exporter,
            Err(e) => {
                // Logs still, so that the caller can report the error.
                init_logs(telemetry.format, None);
                return Err(e);
            }
        };
        // A subscriber installed earlier (`init`) stays, and then nothing would feed the exporter.
        if init_logs(telemetry.format, Some(tracer)) {
            otlp::keep(provider);
            tracing::info!(service, endpoint, "exporting traces over OTLP/HTTP");
        } else {
            tracing::warn!(endpoint, "a log subscriber was already installed: traces are not exported");
        }
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

/// Sends the spans still queued for OTLP export (5 s at most) and stops the exporter: call it where
/// `main` returns, after the service has stopped. Does nothing without `telemetry.otlp_endpoint`,
/// or when called again; spans ended later are not exported. Failures are logged, not returned.
pub async fn shutdown() {
    otlp::shutdown().await;
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

/// Installs the global subscriber: logs of `format` and, with `tracer`, the layer turning spans into
/// OpenTelemetry spans. The filter (`RUST_LOG`) is the subscriber's, so both see the same spans.
/// Returns `false` when a subscriber was already installed (it stays).
fn init_logs(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.finish().with(span_layer(tracer)).try_init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format().json().with_current_span(false).with_span_list(true);
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(WithIds(json))
                .finish()
                .with(span_layer(tracer))
                .try_init()
        }
    };
    installed.is_ok()
}

/// The `tracing` → OpenTelemetry layer over subscriber `S`, when there is a tracer (`None`: no layer).
fn span_layer<S>(
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracer.map(|tracer| tracing_opentelemetry::layer().with_tracer(tracer))
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
