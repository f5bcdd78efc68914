//! Operations (DESIGN §12) over real processes: each `/metrics` parses as Prometheus text (by the
//! reference parser of the PyPI `prometheus-client`) and counts exactly the requests sent; one
//! upload's JSON log lines in the bridge, the media service and the processor share one trace id,
//! and so do the spans the three export over OTLP/HTTP to an in-test receiver; a request past its
//! `Mediabus-Deadline` is not run; overload gets 503 with `Retry-After` at once, in the bridge and
//! in the framework.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use mediabus_e2e::http::{Reply, call, collect, file_body, form_around, form_content_type, send};
use mediabus_e2e::{built_bin, dev_token};
use mediabus_rpc::{DEADLINE_HEADER, ServiceConfig, codes};
use mediabus_testkit::{NatsServer, media_files, repo_root};
use serde_json::{Value, json};

use crate::App;

/// A service binary run with JSON logs captured in a file, killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
    /// What followed `READY` (the bridge: its address).
    ready: String,
}

impl Proc {
    /// Starts binary `name` with `env` (plus JSON logs and a metrics listener on a port of the
    /// system's choosing) and waits for `READY`.
    fn start(name: &str, dir: &Path, tag: &str, env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("{tag}.log"));
        let mut child = Command::new(built_bin(name))
            .env("MEDIABUS__ENV", "dev")
            .env("MEDIABUS__TELEMETRY__FORMAT", "json")
            .env("MEDIABUS__METRICS__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,mediabus_rpc=debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let ready = line.trim().strip_prefix("READY").unwrap_or_else(|| {
            panic!("{name} did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        Self { child, log, ready: ready.trim().to_owned() }
    }

    /// The JSON log lines written so far.
    fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The metrics address, from the start-up log line (`listen` field).
    fn metrics_addr(&self) -> String {
        self.log_lines()
            .iter()
            .find_map(|l| {
                let message = l["fields"]["message"].as_str()?;
                message.starts_with("metrics at").then(|| l["fields"]["listen"].as_str().unwrap().to_owned())
            })
            .unwrap_or_else(|| panic!("no metrics line in {}", self.log.display()))
    }

    /// Sends SIGTERM and waits (30 s at most) for the process to exit.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let kill = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} still runs 30 s after SIGTERM", self.log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn metrics_port(&self) -> u16 {
        self.metrics_addr().rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `GET /metrics`, parsed by prometheus_client: `name{labels}` → value.
    async fn metrics(&self) -> Metrics {
        let reply = call(self.metrics_port(), "GET", "/metrics", &[], Bytes::new()).await;
        assert_eq!(reply.status, 200);
        assert!(reply.header("content-type").starts_with("text/plain"), "{}", reply.header("content-type"));
        parse_prometheus(&reply.body)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples by name and sorted labels: `mediabus_requests_total{code="200",service="media",…}`.
type Metrics = BTreeMap<String, f64>;

/// Parses Prometheus text with the reference parser (`.venv`, scripts/requirements.txt); panics on
/// text it refuses.
fn parse_prometheus(text: &[u8]) -> Metrics {
    const SCRIPT: &str = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(repo_root().join(".venv/bin/python"))
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python in .venv (scripts/setup)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "not Prometheus text: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(text)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> = serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value)| {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{name}{{{}}}", labels.join(",")), value)
        })
        .collect()
}

/// The value of `name` with exactly `labels` (0 when absent: a counter never incremented).
fn sample(metrics: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(&str, &str)> = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    metrics.get(&format!("{name}{{{}}}", labels.join(","))).copied().unwrap_or(0.0)
}

/// nats-server, one media worker and the bridge (and optionally a processor), JSON logs and metrics on.
struct Stack {
    dir: tempfile::TempDir,
    nats: NatsServer,
    media: Proc,
    bridge: Proc,
    processor: Option<Proc>,
}

impl Stack {
    fn start(processor: bool, bridge_extra: &[(&str, &str)]) -> Self {
        Self::start_with(processor, bridge_extra, &[])
    }

    /// [`Stack::start`] with `all_extra` in every process's environment too.
    fn start_with(processor: bool, bridge_extra: &[(&str, &str)], all_extra: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let (files, db) = (dir.path().join("files"), dir.path().join("media.db"));
        let env = |user: &str| {
            let mut env = vec![
                ("MEDIABUS__NATS__URL", nats.url()),
                ("MEDIABUS__NATS__USER", user.to_owned()),
                ("MEDIABUS__NATS__PASSWORD", nats.password(user)),
                ("MEDIABUS__STORAGE__ROOT", files.to_str().unwrap().to_owned()),
                ("MEDIABUS__STORE__PATH", db.to_str().unwrap().to_owned()),
            ];
            env.extend(all_extra.iter().map(|(k, v)| (*k, v.to_string())));
            env
        };
        let media = Proc::start("media-service", dir.path(), "media", &env("media"));
        let mut bridge_env = env("bridge");
        bridge_env.push(("MEDIABUS__HTTP__LISTEN", "127.0.0.1:0".into()));
        bridge_env.extend(bridge_extra.iter().map(|(k, v)| (*k, v.to_string())));
        let bridge = Proc::start("http-bridge", dir.path(), "bridge", &bridge_env);
        let processor = processor.then(|| Proc::start("media-processor", dir.path(), "processor", &env("processor")));
        Self { dir, nats, media, bridge, processor }
    }

    fn port(&self) -> u16 {
        self.bridge.ready.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Uploads `path` (multipart) with extra request headers; the reply.
    async fn upload(&self, token: &str, path: &Path, headers: &[(&str, &str)]) -> Reply {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (prefix, suffix) = form_around(&[], name, "application/octet-stream", &[]);
        let length = prefix.len() as u64 + std::fs::metadata(path).unwrap().len() + suffix.len() as u64;
        let mut request = Request::post("/api/media/upload")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, form_content_type())
            .header(CONTENT_LENGTH, length);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        collect(send(self.port(), request.body(file_body(path, prefix, suffix).0).unwrap()).await).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metrics_endpoint_parses_and_counts_the_requests_sent() {
    let stack = Stack::start(false, &[]);
    let token = dev_token("alice");
    let bearer = format!("Bearer {token}");
    let png = &media_files().png;
    let size = std::fs::metadata(png).unwrap().len() as f64;
    let created = stack.upload(&token, png, &[]).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    for _ in 0..7 {
        let reply = call(stack.port(), "GET", &format!("/api/media/{id}"), &[("authorization", &bearer)], "").await;
        assert_eq!(reply.status, 200);
    }
    for n in 0..3 {
        let path = format!("/api/media/missing-{n}");
        assert_eq!(call(stack.port(), "GET", &path, &[("authorization", &bearer)], "").await.status, 404);
    }

    let media = stack.media.metrics().await;
    let find_one = |code: &str| {
        sample(&media, "mediabus_requests_total", &[("service", "media"), ("subject", "media.findOne"), ("code", code)])
    };
    assert_eq!((find_one("200"), find_one("404")), (7.0, 3.0), "{media:#?}");
    let findone_labels = [("service", "media"), ("subject", "media.findOne")];
    assert_eq!(sample(&media, "mediabus_request_duration_seconds_count", &findone_labels), 10.0);
    let uploads = [("service", "media"), ("subject", "upload_file"), ("code", "200")];
    assert_eq!(sample(&media, "mediabus_requests_total", &uploads), 1.0);
    assert_eq!(sample(&media, "mediabus_upload_bytes_total", &[("service", "media-service")]), size);

    let bridge = stack.bridge.metrics().await;
    let http = |status: &str| {
        let labels = [("route", "/api/media/{id}"), ("method", "GET"), ("status", status)];
        sample(&bridge, "mediabus_http_requests_total", &labels)
    };
    assert_eq!((http("200"), http("404")), (7.0, 3.0), "{bridge:#?}");
    let upload = [("route", "/api/media/upload"), ("method", "POST"), ("status", "201")];
    assert_eq!(sample(&bridge, "mediabus_http_requests_total", &upload), 1.0);
    let duration = [("route", "/api/media/{id}"), ("method", "GET")];
    assert_eq!(sample(&bridge, "mediabus_http_request_duration_seconds_count", &duration), 10.0);
    assert_eq!(sample(&bridge, "mediabus_upload_bytes_total", &[("service", "http-bridge")]), size);
    // Histograms (buckets), not summaries.
    assert!(bridge.keys().any(|k| k.starts_with("mediabus_http_request_duration_seconds_bucket{")), "{bridge:#?}");
    assert!(media.keys().any(|k| k.starts_with("mediabus_request_duration_seconds_bucket{")), "{media:#?}");
    // No raw paths as labels: ids would multiply the series without bound.
    assert!(!bridge.keys().any(|k| k.contains(&id)), "{bridge:#?}");

    // Beside /metrics: liveness, and the media service's readiness (document and file store).
    let port = stack.media.metrics_port();
    assert_eq!(call(port, "GET", "/healthz", &[], Bytes::new()).await.status, 200);
    let ready = call(port, "GET", "/readyz", &[], Bytes::new()).await;
    assert_eq!(
        (ready.status.as_u16(), ready.json()),
        (200, json!({"ready": true, "checks": {"store": true, "files": true}}))
    );
    let readyz = call(stack.port(), "GET", "/readyz", &[], Bytes::new()).await;
    assert_eq!(readyz.json()["files"], true, "{:?}", readyz.json());

    // `$SRV.STATS` stays beside the metrics.
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let stats = nats.request("$SRV.STATS.media", Bytes::new()).await.unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let endpoint = stats["endpoints"].as_array().unwrap().iter().find(|e| e["subject"] == "media.findOne").unwrap();
    assert_eq!(endpoint["num_requests"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_logs_one_trace_id_in_the_bridge_the_media_service_and_the_processor() {
    let stack = Stack::start(true, &[]);
    let token = dev_token("alice");
    let trace_id = mediabus_telemetry::trace::TraceContext::new_root().trace_id_hex();
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let created = stack.upload(&token, &media_files().png, &[("traceparent", &traceparent)]).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // A line of the trace: `trace_id` at its top level (lifted from its spans).
    let traced = |lines: &[Value]| -> Vec<Value> {
        lines.iter().filter(|l| l["trace_id"] == trace_id.as_str()).cloned().collect()
    };
    let processor = stack.processor.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = traced(&processor.log_lines()).iter().any(|l| l["fields"]["message"] == "job done");
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the processor logged no finished job in trace {trace_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bridge = traced(&stack.bridge.log_lines());
    assert!(!bridge.is_empty(), "no bridge line in trace {trace_id}");
    assert!(bridge.iter().all(|l| l["request_id"].as_str().is_some_and(|r| !r.is_empty())), "{bridge:?}");
    let media = traced(&stack.media.log_lines());
    let handled = media.iter().find(|l| l["fields"]["message"] == "handled").unwrap_or_else(|| panic!("{media:?}"));
    let span = &handled["spans"][0];
    assert_eq!((span["name"].as_str(), span["subject"].as_str()), (Some("rpc"), Some("upload_file")), "{handled}");
    assert!(span["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{handled}");
    assert_eq!((&handled["request_id"], &handled["trace_id"]), (&span["request_id"], &span["trace_id"]));
    // And the same request id on both sides of NATS.
    assert!(bridge.iter().any(|l| l["request_id"] == span["request_id"]), "{bridge:?} vs {handled}");

    // Without a client traceparent the bridge starts a trace and the worker continues it.
    let before = stack.media.log_lines().len();
    let bearer = format!("Bearer {token}");
    let reply = call(stack.port(), "GET", &format!("/api/media/{id}"), &[("authorization", &bearer)], "").await;
    assert_eq!(reply.status, 200);
    let lines = stack.media.log_lines();
    let handled = lines[before..].iter().find(|l| l["fields"]["message"] == "handled").expect("a handled line");
    let new_trace = handled["spans"][0]["trace_id"].as_str().unwrap();
    assert!(new_trace.len() == 32 && new_trace != trace_id, "{handled}");
    let bridge = stack.bridge.log_lines();
    assert!(bridge.iter().any(|l| l["trace_id"] == new_trace), "the bridge logged another trace id");
    drop(stack.dir);
}

/// An OTLP/HTTP trace receiver (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>) on
/// 127.0.0.1, a port of the system's choosing: keeps the JSON body of every `POST /v1/traces`
/// (an `ExportTraceServiceRequest`) and answers `{}` (full success); anything else is counted as
/// rejected and answered 400.
struct OtlpReceiver {
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    rejected: Arc<AtomicUsize>,
}

impl OtlpReceiver {
    async fn start() -> Self {
        use axum::http::{StatusCode, header};
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(AtomicUsize::new(0));
        let (kept, refused) = (requests.clone(), rejected.clone());
        let receive = move |headers: axum::http::HeaderMap, body: Bytes| async move {
            let json = headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/json");
            match serde_json::from_slice::<Value>(&body) {
                Ok(request) if json => {
                    kept.lock().unwrap().push(request);
                    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}")
                }
                _ => {
                    refused.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], "{}")
                }
            }
        };
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { port, requests, rejected }
    }

    /// Every span received so far with its resource's `service.name`. OTLP JSON: `resourceSpans[]`
    /// → `resource.attributes` and `scopeSpans[]` → `spans[]`, ids as lowercase hex.
    fn spans(&self) -> Vec<(String, Value)> {
        let requests = self.requests.lock().unwrap().clone();
        let mut out = Vec::new();
        for resource_spans in requests.iter().flat_map(|r| r["resourceSpans"].as_array().cloned().unwrap_or_default()) {
            let service = attribute(&resource_spans["resource"], "service.name").unwrap_or_default().to_owned();
            for scope in resource_spans["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
        out
    }
}

/// The string value of attribute `key` of an OTLP JSON resource or span (`attributes: [{key,
/// value: {stringValue}}]`).
fn attribute<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    item["attributes"].as_array()?.iter().find(|a| a["key"] == key)?["value"]["stringValue"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upload_exports_spans_of_one_trace_over_otlp_from_the_bridge_the_media_service_and_the_processor() {
    let collector = OtlpReceiver::start().await;
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    // Batches every 100 ms rather than the default 5 s.
    let otlp = [("MEDIABUS__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let stack = Stack::start_with(true, &[], &otlp);
    let token = dev_token("alice");
    let trace_id = mediabus_telemetry::trace::TraceContext::new_root().trace_id_hex();
    let client_span = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let created = stack.upload(&token, &media_files().png, &[("traceparent", &traceparent)]).await;
    assert_eq!(created.status, 201, "{:?}", created.json());

    // Each service's request span of the upload: the bridge's HTTP request, the media service's
    // `upload_file`, the processor's job (exported once the job has ended).
    let wanted = [("http-bridge", "http"), ("media-service", "rpc"), ("media-processor", "job")];
    let deadline = Instant::now() + Duration::from_secs(60);
    let spans = loop {
        let spans: Vec<(String, Value)> =
            collector.spans().into_iter().filter(|(_, span)| span["traceId"] == trace_id.as_str()).collect();
        let all_in =
            wanted.iter().all(|(service, name)| spans.iter().any(|(s, span)| s == service && span["name"] == *name));
        if all_in {
            break spans;
        }
        assert!(Instant::now() < deadline, "not every service exported a span of trace {trace_id}: {spans:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(collector.rejected.load(Ordering::SeqCst), 0, "the receiver refused an export request");
    let find = |service: &str, name: &str| {
        spans.iter().find(|(s, span)| s == service && span["name"] == name).map(|(_, span)| span.clone()).unwrap()
    };
    // The bridge continues the client's context: its span's parent is the client's span.
    let http = find("http-bridge", "http");
    assert_eq!(http["parentSpanId"], client_span, "{http:#}");
    assert_eq!(attribute(&http, "method"), Some("POST"), "{http:#}");
    // The span fields are the attributes, the trace id among them as in the JSON logs.
    let rpc = find("media-service", "rpc");
    assert_eq!(attribute(&rpc, "subject"), Some("upload_file"), "{rpc:#}");
    assert_eq!(attribute(&rpc, "trace_id"), Some(trace_id.as_str()), "{rpc:#}");
    assert!(attribute(&rpc, "request_id").is_some_and(|r| !r.is_empty()), "{rpc:#}");
    let job = find("media-processor", "job");
    assert_eq!(attribute(&job, "trace_id"), Some(trace_id.as_str()), "{job:#}");
    // One chain: each hop sends its own span on as the next hop's parent.
    assert_eq!(rpc["parentSpanId"], http["spanId"], "the worker's span is a child of the bridge's");
    assert_eq!(job["parentSpanId"], rpc["spanId"], "the job's span is a child of the worker's");
    // Nothing in the trace started a trace of its own: every span has a parent, and the ids are 8 bytes.
    for (service, span) in &spans {
        let (id, parent) =
            (span["spanId"].as_str().unwrap_or_default(), span["parentSpanId"].as_str().unwrap_or_default());
        assert!(id.len() == 16 && parent.len() == 16, "{service}: {span:#}");
    }
    // The JSON logs are as without export: their lines carry the same trace id.
    assert!(
        stack.media.log_lines().iter().any(|l| l["trace_id"] == trace_id.as_str()),
        "no media log line in trace {trace_id}"
    );
    assert!(
        stack.bridge.log_lines().iter().any(|l| l["trace_id"] == trace_id.as_str()),
        "no bridge log line in trace {trace_id}"
    );
    drop(stack.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_still_queued_are_exported_when_a_service_stops() {
    let collector = OtlpReceiver::start().await;
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    // No timed export within the test (10 min): only the flush on shutdown sends them.
    let otlp = [("MEDIABUS__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "600000")];
    let mut stack = Stack::start_with(false, &[], &otlp);
    let trace_id = mediabus_telemetry::trace::TraceContext::new_root().trace_id_hex();
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let bearer = format!("Bearer {}", dev_token("alice"));
    let headers = [("authorization", bearer.as_str()), ("traceparent", traceparent.as_str())];
    let reply = call(stack.port(), "GET", "/api/media/missing", &headers, "").await;
    assert_eq!(reply.status, 404);
    assert!(collector.spans().is_empty(), "exported before the shutdown: {:#?}", collector.spans());

    for proc in [&mut stack.bridge, &mut stack.media] {
        let status = proc.terminate().await;
        assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&proc.log).unwrap_or_default());
    }
    let spans: Vec<(String, Value)> =
        collector.spans().into_iter().filter(|(_, span)| span["traceId"] == trace_id.as_str()).collect();
    let has = |service: &str, name: &str| spans.iter().any(|(s, span)| s == service && span["name"] == name);
    assert!(has("http-bridge", "http") && has("media-service", "rpc"), "{spans:#?}");
    assert_eq!(collector.rejected.load(Ordering::SeqCst), 0, "the receiver refused an export request");
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn a_request_past_its_deadline_is_not_run_and_the_deadline_bounds_the_handler() {
    let app = App::with_defaults().await;
    let request = |deadline: u64, ms: u64| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DEADLINE_HEADER, deadline.to_string().as_str());
        let body = json!({"pattern": "rust.slow", "data": {"ms": ms}, "id": "1"}).to_string();
        let request = async_nats::Request::new().payload(body.into()).headers(headers);
        let nats = app.nats.clone();
        async move {
            let reply = nats.send_request("rust.slow", request.timeout(Some(Duration::from_secs(5)))).await.unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let expired = request(unix_ms() - 1000, 10).await;
    assert_eq!(expired["err"]["code"], codes::TIMEOUT, "{expired}");
    assert_eq!(app.state.peak_in_flight.load(Ordering::SeqCst), 0, "the handler ran");

    // 300 ms left: the handler (2 s) is cut at the deadline, not at the 30 s request timeout.
    let started = Instant::now();
    let cut = request(unix_ms() + 300, 2000).await;
    assert_eq!(cut["err"]["code"], codes::TIMEOUT, "{cut}");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());

    let fine = request(unix_ms() + 5000, 10).await;
    assert!(fine["err"].is_null(), "{fine}");
}

/// Six concurrent `rust.slow` calls of 1.5 s with `extra` in their data, on a service that runs
/// one at a time: asserts that two are served and four refused with 503 `UNAVAILABLE` at once.
async fn two_served_four_refused(config: ServiceConfig, extra: Value) {
    let app = App::spawn(config).await;
    let rpc = app.rpc();
    let calls = (0..6).map(|_| {
        let (rpc, mut data) = (rpc.clone(), json!({"ms": 1500}));
        data["pad"] = extra.clone();
        async move {
            let started = Instant::now();
            let result = rpc.call::<_, Value>("rust.slow", &data).await;
            (result, started.elapsed())
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let ok = results.iter().filter(|(r, _)| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.as_ref().is_err_and(|e| e.status == 503)).collect();
    assert_eq!((ok, refused.len()), (2, 4), "{results:?}");
    assert!(refused.iter().all(|(_, took)| *took < Duration::from_millis(500)), "{refused:?}");
    assert!(refused.iter().all(|(r, _)| r.as_ref().unwrap_err().code == codes::UNAVAILABLE));
}

#[tokio::test]
async fn the_framework_answers_503_at_once_when_its_queue_is_full() {
    let mut config = ServiceConfig::new("test", "0.1.0");
    config.max_concurrency = 1;
    config.max_queue = 1;
    two_served_four_refused(config, Value::Null).await;
}

/// `max_held_bytes` bounds the body bytes a member holds, running or waiting: with room for two
/// 40 KiB requests, the others get 503 at once although the message queue has room.
#[tokio::test]
async fn the_framework_answers_503_when_held_bodies_reach_max_held_bytes() {
    let mut config = ServiceConfig::new("test", "0.1.0");
    config.max_concurrency = 1;
    config.max_queue = 100;
    config.max_held_bytes = 100 * 1024;
    // The budget is never below one body of `max_payload`.
    config.max_payload = 64 * 1024;
    two_served_four_refused(config, json!("x".repeat(40 * 1024))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_answers_503_with_retry_after_when_its_calls_are_all_in_flight_and_passes_its_deadline() {
    let stack =
        Stack::start(false, &[("MEDIABUS__HTTP__MAX_IN_FLIGHT", "1"), ("MEDIABUS__HTTP__REQUEST_TIMEOUT_MS", "3000")]);
    // A member of the queue group that takes media.findOne and never answers: the call holds the
    // bridge's only slot until its deadline.
    let nats = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut hole = nats.queue_subscribe("media.findOne", "media".to_owned()).await.unwrap();
    nats.flush().await.unwrap();
    // The real worker competes on the same queue group: retry until the hole gets one.
    let bearer = format!("Bearer {}", dev_token("alice"));
    let port = stack.port();
    let held = tokio::spawn({
        let bearer = bearer.clone();
        async move {
            loop {
                let sent_at = unix_ms();
                let reply = call(port, "GET", "/api/media/held", &[("authorization", &bearer)], "").await;
                if reply.status == 504 {
                    return (sent_at, reply);
                }
            }
        }
    });
    let message = tokio::time::timeout(Duration::from_secs(10), hole.next()).await.expect("a held call").unwrap();
    let deadline: u64 = message.headers.as_ref().unwrap().get(DEADLINE_HEADER).unwrap().as_str().parse().unwrap();
    let left = deadline.saturating_sub(unix_ms());
    assert!((1000..=3000).contains(&left), "the deadline leaves {left} ms of the bridge's 3000");

    let started = Instant::now();
    let refused = call(port, "GET", "/api/media/other", &[("authorization", &bearer)], "").await;
    assert_eq!(refused.status, 503, "{:?}", refused.json());
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(refused.json()["code"], codes::UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());

    let (sent_at, timed_out) = tokio::time::timeout(Duration::from_secs(15), held).await.unwrap().unwrap();
    assert_eq!(timed_out.status, 504);
    assert!(unix_ms() >= sent_at + 2900);
    // The slot is free again.
    let reply = call(port, "GET", "/api/media/free", &[("authorization", &bearer)], "").await;
    assert!(reply.status == 404 || reply.status == 504, "{}", reply.status);
}
