//! OTLP trace export (DESIGN §12): when `telemetry.otlp_endpoint` is set, [`crate::setup`] adds a
//! `tracing-opentelemetry` layer whose spans a batch span processor sends as OTLP/HTTP JSON
//! (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>) to `POST <endpoint>/v1/traces`, with the
//! resource attribute `service.name` = the binary's service name.
//!
//! - Spans: every `tracing` span the log filter lets through (`RUST_LOG`), named as in the logs
//!   (`http`, `rpc`, `job`), its fields as attributes, its events as span events. The request
//!   spans continue the W3C context they received ([`crate::trace::TraceContext::attach_to`]), so a
//!   request's spans in every service share the trace id its logs carry.
//! - Batching: the SDK's batch processor (its own thread), tuned by the standard variables
//!   `OTEL_BSP_SCHEDULE_DELAY` (ms between exports, default 5000), `OTEL_BSP_MAX_QUEUE_SIZE`
//!   (2048 spans; more are dropped) and `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (512).
//!   `OTEL_EXPORTER_OTLP_HEADERS` adds request headers (e.g. a collector's token);
//!   `OTEL_RESOURCE_ATTRIBUTES` adds resource attributes.
//! - Transport: one HTTP/1.1 request per batch over a new TCP connection, at most 10 s each, run on
//!   the tokio runtime that called `setup`. Plain `http://` only: no TLS client is built in, so the
//!   collector is one beside the service (an OpenTelemetry Collector or agent).
//! - Shutdown: [`crate::shutdown`] exports the spans still queued (5 s at most).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::TelemetryError;

/// The traces signal's path under an OTLP/HTTP endpoint (OTLP spec, "OTLP/HTTP Request").
const TRACES_PATH: &str = "/v1/traces";

/// How long one export request may take: connect, send, and read the response.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest collector response read (an `ExportTraceServiceResponse`, normally `{}`).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The provider [`setup`] started, until [`shutdown`] takes it.
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// The exporting tracer for `service`, sending to `endpoint` (`http://host:port`, optionally with a
/// path prefix; [`TRACES_PATH`] is appended). Its provider is kept for [`shutdown`] by [`keep`].
/// Must run inside a tokio runtime: the exports run on it.
///
/// Errors: `endpoint` is not an absolute `http://` URL, or the exporter cannot be built.
pub(crate) fn setup(service: &str, endpoint: &str) -> Result<(SdkTracerProvider, SdkTracer), TelemetryError> {
    let url = traces_url(endpoint)?;
    let client = HyperClient { runtime: tokio::runtime::Handle::current(), timeout: EXPORT_TIMEOUT };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url.to_string())
        .with_timeout(EXPORT_TIMEOUT)
        .with_http_client(client)
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build();
    let tracer = provider.tracer("mediabus");
    Ok((provider, tracer))
}

/// Keeps `provider` for [`shutdown`] (replacing, and shutting down, an earlier one).
pub(crate) fn keep(provider: SdkTracerProvider) {
    let earlier = PROVIDER.lock().unwrap_or_else(PoisonError::into_inner).replace(provider);
    if let Some(earlier) = earlier {
        let _ = earlier.shutdown();
    }
}

/// Exports the spans still queued and stops the exporter; see [`crate::shutdown`].
pub(crate) async fn shutdown() {
    let Some(provider) = PROVIDER.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
    // The SDK blocks its caller until its thread has exported, and the export itself runs on this
    // runtime: wait off the runtime's threads, so a current-thread runtime can run the export.
    match tokio::task::spawn_blocking(move || provider.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "OTLP exporter shutdown"),
        Err(e) => tracing::warn!(error = %e, "OTLP exporter shutdown task"),
    }
}

/// `<endpoint>/v1/traces`, after checking that `endpoint` is an absolute `http://` URL with a host.
fn traces_url(endpoint: &str) -> Result<Uri, TelemetryError> {
    let invalid = |why: &str| TelemetryError::Otlp(format!("telemetry.otlp_endpoint {endpoint:?}: {why}"));
    let url = format!("{}{TRACES_PATH}", endpoint.trim().trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|e| invalid(&format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("https is not supported (no TLS client): use a collector over http://")),
        _ => return Err(invalid("expected http://host:port")),
    }
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(invalid("expected http://host:port, without a query"));
    }
    Ok(uri)
}

/// The exporter's HTTP client: each request a task on `runtime` (the SDK calls it from its own
/// thread, outside any runtime), bounded by `timeout`.
#[derive(Debug)]
struct HyperClient {
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move { tokio::time::timeout(timeout, send(request)).await });
        match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("no response within {timeout:?}").into()),
            // The runtime is shutting down (the process is exiting): the batch is lost.
            Err(e) => Err(format!("export task: {e}").into()),
        }
    }
}

/// One HTTP/1.1 request on a new connection; the response whatever its status (the exporter
/// judges it), its body read up to [`MAX_RESPONSE_BYTES`].
async fn send(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().ok_or("the export URL has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // Drives the connection until the response is read and `sender` dropped.
    let driver = tokio::spawn(connection);
    // Origin form (`/v1/traces`) and a Host header, as HTTP/1.1 sends to a server (RFC 9112 §3.2).
    let origin = parts.uri.path_and_query().map_or(TRACES_PATH, |p| p.as_str());
    parts.uri = origin.parse()?;
    parts.headers.insert(header::HOST, authority.as_str().parse()?);
    let response = sender.send_request(Request::from_parts(parts, Full::new(body))).await?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
    drop(sender);
    let _ = driver.await;
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_endpoint_with_v1_traces_over_http_only() {
        let url = |endpoint: &str| traces_url(endpoint).map(|u| u.to_string()).map_err(|e| e.to_string());
        assert_eq!(url("http://collector:4318").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(url("http://collector:4318/").unwrap(), "http://collector:4318/v1/traces");
        assert_eq!(url(" http://127.0.0.1:4318/otlp ").unwrap(), "http://127.0.0.1:4318/otlp/v1/traces");
        for bad in
            ["collector:4318", "https://collector:4318", "ftp://collector", "http://", "http://c:1/?a=b", "not a url"]
        {
            assert!(url(bad).unwrap_err().contains("telemetry.otlp_endpoint"), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_client_posts_the_body_with_a_host_header_and_returns_the_response() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"{\"resourceSpans\":[]}") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let client = HyperClient { runtime: tokio::runtime::Handle::current(), timeout: Duration::from_secs(5) };
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Bytes::from_static(b"{\"resourceSpans\":[]}"))
            .unwrap();
        let response = client.send_bytes(request).await.unwrap();
        assert_eq!((response.status().as_u16(), response.body().as_ref()), (200, b"{}".as_slice()));
        let seen = server.await.unwrap();
        assert!(seen.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{port}\r\n")), "{seen}");
    }

    #[tokio::test]
    async fn an_unreachable_collector_is_an_error_not_a_hang() {
        // A port just freed: nothing listens there.
        let port = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let client = HyperClient { runtime: tokio::runtime::Handle::current(), timeout: Duration::from_secs(5) };
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/traces")).body(Bytes::new()).unwrap();
        assert!(client.send_bytes(request).await.is_err());
    }
}
