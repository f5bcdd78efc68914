//! Serving a [`Router`] on NATS: one queue subscription per subject on the service's queue
//! group, with a concurrency limit, a per-request timeout, panic isolation, the NestJS envelope on
//! every reply, the NATS service API (`$SRV.*`), and a graceful shutdown that loses no request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::envelope;
use crate::error::{RpcError, codes};
use crate::router::{Ctx, Input, Invoke, Route, Router};
use crate::service_api::{self, EndpointStats, Registry};

/// On shutdown, the messages a subject may still take after its last pull: the server is told to
/// stop after `pulled + DRAIN_MARGIN` deliveries in total, which covers what is already buffered or
/// on the wire, so nothing the server sent is dropped by the client.
const DRAIN_MARGIN: u64 = 256;

/// How a service presents itself and the limits it enforces.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name in `$SRV.INFO` (`A-Za-z0-9-_`), e.g. `media`.
    pub name: String,
    /// Semantic version reported by `$SRV.INFO`.
    pub version: String,
    /// One-line description reported by `$SRV.INFO`.
    pub description: String,
    /// NATS queue group every endpoint joins; members of a group share the load. Default: `name`.
    pub queue_group: String,
    /// Requests handled at once across all subjects (default 256). When all are busy, requests
    /// wait their turn (first come, first served), up to `max_queue` of them.
    pub max_concurrency: usize,
    /// Requests that may wait for one of the `max_concurrency` slots (default 1024). One more gets
    /// 503 `UNAVAILABLE` at once (NATS header `Retry-After: 1`) instead of queueing without bound.
    /// Events (no reply inbox) are never refused: they wait, as before.
    pub max_queue: usize,
    /// Longest a handler may run before the caller gets 504 `TIMEOUT` (default 30 s); shorter
    /// when the request's [`DEADLINE_HEADER`] leaves less.
    pub request_timeout: Duration,
    /// Largest body accepted, in bytes (default 1 MiB); larger ones get 413 `PAYLOAD_TOO_LARGE`.
    pub max_payload: usize,
    /// Bytes of request bodies a member holds at once, running or waiting (default 256 MiB,
    /// never less than `max_payload`): what bounds its memory when large bodies (file parts)
    /// pile up, where `max_queue` counts messages. A request that would go past it gets 503
    /// `UNAVAILABLE` (`Retry-After: 1`) at once; events wait.
    pub max_held_bytes: usize,
    /// Longest a graceful shutdown keeps taking the messages NATS still routes to this member
    /// (default 2 s); see `DRAIN_MARGIN`. Requests in flight are always finished.
    pub drain_timeout: Duration,
}

impl ServiceConfig {
    /// Defaults for service `name` at `version`: queue group = name, 256 concurrent, 30 s, 1 MiB, 2 s.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            queue_group: name.clone(),
            description: format!("mediabus {name} service"),
            name,
            version: version.into(),
            max_concurrency: 256,
            max_queue: DEFAULT_MAX_QUEUE,
            request_timeout: Duration::from_secs(30),
            max_payload: 1024 * 1024,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// The `[service]` section of a worker's settings (keys as in each worker's `defaults.toml`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServiceSettings {
    /// Queue group shared by all members of the service.
    pub queue_group: String,
    /// Requests handled at once per worker.
    pub max_concurrency: usize,
    /// Longest a request may run, in milliseconds.
    pub request_timeout_ms: u64,
    /// Largest message body, in bytes.
    pub max_payload_bytes: usize,
    /// Requests that may wait for a slot before the next gets 503 (default 1024).
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Bytes of request bodies held at once, running or waiting (default 256 MiB).
    #[serde(default = "default_max_held_bytes")]
    pub max_held_bytes: usize,
}

const DEFAULT_MAX_QUEUE: usize = 1024;
const DEFAULT_MAX_HELD_BYTES: usize = 256 * 1024 * 1024;

fn default_max_held_bytes() -> usize {
    DEFAULT_MAX_HELD_BYTES
}

fn default_max_queue() -> usize {
    DEFAULT_MAX_QUEUE
}

/// NATS header with the caller's deadline, in milliseconds since the Unix epoch (UTC), e.g.
/// `Mediabus-Deadline: 1764438000123`. [`crate::RpcClient`] sets it from its timeout; the bridge's
/// requests carry it that way. A request whose deadline has passed when a slot frees up is not run:
/// it gets 504 `TIMEOUT` (a reply nobody may read any more, but cheap, and it tells a caller with a
/// skewed clock what happened); a handler gets at most the time left. Events (no reply subject)
/// ignore it. Clocks are assumed in sync (NTP) to well under the timeouts in use.
pub const DEADLINE_HEADER: &str = "Mediabus-Deadline";

impl ServiceSettings {
    /// The [`ServiceConfig`] of service `name` at `version` with these settings.
    pub fn config(&self, name: &str, version: &str) -> ServiceConfig {
        let mut config = ServiceConfig::new(name, version);
        config.queue_group = self.queue_group.clone();
        config.max_concurrency = self.max_concurrency;
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.max_payload = self.max_payload_bytes;
        config.max_queue = self.max_queue;
        config.max_held_bytes = self.max_held_bytes;
        config
    }
}

/// The `main` of a worker binary after its settings are loaded: connects to NATS with `nats`
/// (connection name `name`), runs `start`, prints `READY` on stdout (for supervisors and tests),
/// serves until SIGTERM or SIGINT and drains. Failing to connect or start is logged and yields a
/// failure exit code.
pub async fn run_worker<F, Fut, E>(name: &str, nats: &crate::NatsSettings, start: F) -> std::process::ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<Running, E>>,
    E: std::fmt::Display,
{
    let settings = nats;
    let nats = match settings.connect(name, 1024).await {
        Ok(nats) => nats,
        Err(e) => {
            tracing::error!(error = %e, url = %settings.url, user = %settings.user, "cannot connect to NATS");
            return std::process::ExitCode::FAILURE;
        }
    };
    match start(nats).await {
        Ok(running) => {
            println!("READY");
            running.run_until_signal().await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Failure to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// NATS refused a subscription (bad subject, permissions, connection closed).
    #[error("could not subscribe on NATS: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// A router bound to its state and configuration, ready to [`Service::serve`].
pub struct Service<S> {
    config: ServiceConfig,
    router: Router<S>,
    state: S,
}

struct Shared<S> {
    state: S,
    config: ServiceConfig,
    client: Client,
    limit: Arc<Semaphore>,
    /// Requests admitted (running or waiting for `limit`): `max_concurrency + max_queue` permits.
    admitted: Arc<Semaphore>,
    /// Body bytes of admitted requests, in KiB permits ([`kib`]): `max_held_bytes`.
    held: Arc<Semaphore>,
    tasks: TaskTracker,
}

/// Permits of [`Shared::held`] a body of `len` bytes takes: whole KiB, at least one.
fn kib(len: usize) -> u32 {
    u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX)
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    /// Binds `router` to `state` under `config`.
    pub fn new(config: ServiceConfig, router: Router<S>, state: S) -> Self {
        Self { config, router, state }
    }

    /// Subscribes every subject of the router on the queue group and starts handling messages in
    /// the background. Also answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` for this service.
    ///
    /// Errors: [`ServeError::Subscribe`] when NATS refuses a subscription.
    pub async fn serve(self, client: Client) -> Result<Running, ServeError> {
        let Self { config, router, state } = self;
        let shared = Arc::new(Shared {
            state,
            limit: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            admitted: Arc::new(Semaphore::new(config.max_concurrency.max(1) + config.max_queue)),
            held: Arc::new(Semaphore::new(kib(config.max_held_bytes.max(config.max_payload)) as usize)),
            config: config.clone(),
            client: client.clone(),
            tasks: TaskTracker::new(),
        });
        let stop = CancellationToken::new();
        let mut intakes = JoinSet::new();
        let mut endpoints = Vec::new();
        for (subject, route) in router.routes {
            let subscriber = client.queue_subscribe(subject.clone(), config.queue_group.clone()).await?;
            let stats = Arc::new(EndpointStats::default());
            endpoints.push((subject.clone(), stats.clone()));
            let endpoint = Endpoint { subject, route, stats };
            intakes.spawn(intake(subscriber, Arc::new(endpoint), shared.clone(), stop.clone()));
        }
        let id = nuid::next().to_string();
        let ping = format!("$SRV.PING.{}.{id}", config.name);
        let registry = Registry { id, config, started: async_nats::datetime::now(), endpoints };
        let api_stop = CancellationToken::new();
        let api = service_api::serve(client.clone(), Arc::new(registry), api_stop.clone()).await?;
        // Answering our own ping proves the server has processed every SUB sent before it, so
        // callers on other connections reach this service as soon as `serve` returns.
        if tokio::time::timeout(Duration::from_secs(5), client.request(ping, Bytes::new())).await.is_err() {
            tracing::warn!("NATS did not route to this service within 5 s; serving anyway");
        }
        tracing::info!(service = %shared.config.name, queue_group = %shared.config.queue_group, "serving");
        Ok(Running { client, stop, intakes, tasks: shared.tasks.clone(), api_stop, api })
    }
}

/// A service that is taking requests. Call [`Running::shutdown`] to stop it without losing any.
pub struct Running {
    client: Client,
    stop: CancellationToken,
    intakes: JoinSet<()>,
    tasks: TaskTracker,
    api_stop: CancellationToken,
    api: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Graceful stop: each subject stops taking new messages (the queue group's other members get
    /// them) without dropping any the server already routed here, the requests in flight finish,
    /// the replies are flushed, and the service leaves the NATS service API.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.intakes.join_next().await.is_some() {}
        self.tasks.close();
        self.tasks.wait().await;
        // Bounded: with NATS gone, flush would wait for a reconnect that may never come.
        match tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush replies on shutdown"),
            Err(_) => tracing::warn!("NATS unreachable: replies not yet sent are lost"),
        }
        self.api_stop.cancel();
        let _ = self.api.await;
        tracing::info!("stopped");
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully (see [`Running::shutdown`]).
    pub async fn run_until_signal(self) {
        shutdown_signal().await;
        tracing::info!("signal received, draining");
        self.shutdown().await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// One subject's handlers and counters.
struct Endpoint<S> {
    subject: String,
    route: Route<S>,
    stats: Arc<EndpointStats>,
}

/// Pulls the messages of one subject.
///
/// Overload: a request is admitted when fewer than `max_concurrency + max_queue` are running or
/// waiting; otherwise it gets 503 `UNAVAILABLE` at once, so callers learn of the overload in
/// microseconds instead of timing out behind a queue. Admitted requests wait for a run slot in
/// arrival order. Events are never refused: an event waits for admission before the next message
/// is pulled (backpressure into the bounded subscription buffer, as NATS core events cannot be
/// redelivered).
///
/// Drain: a plain UNSUB makes async-nats forget the subscription at once, so messages the server
/// routed here just before it saw the UNSUB would be dropped. Instead the server is told to stop
/// after `pulled + DRAIN_MARGIN` deliveries (NATS auto-unsubscribe), which both sides count the same
/// way; the stream then ends on its own. Should traffic be too thin to reach that count within
/// `drain_timeout`, a plain unsubscribe ends it (with so little traffic, nothing is in flight).
async fn intake<S: Clone + Send + Sync + 'static>(
    mut subscriber: Subscriber,
    endpoint: Arc<Endpoint<S>>,
    shared: Arc<Shared<S>>,
    stop: CancellationToken,
) {
    let subject = &endpoint.subject;
    let mut pulled: u64 = 0;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(tokio::time::Instant::now() + shared.config.drain_timeout);
                if let Err(e) = subscriber.unsubscribe_after(pulled + DRAIN_MARGIN).await {
                    tracing::warn!(%subject, error = %e, "could not start draining");
                }
                continue;
            }
            () = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if drain_deadline.is_some() => {
                drain_deadline = None;
                // Closes the stream after the buffered messages; `stop` stays cancelled, so the
                // first branch does not run again.
                let _ = subscriber.unsubscribe().await;
                continue;
            }
            next = subscriber.next() => next,
        };
        let Some(mut message) = next else { break };
        pulled += 1;
        let span = request_span(&shared.config.name, subject, message.headers.as_ref());
        if let Some(reply) = message.reply.take_if(|reply| !is_inbox(reply)) {
            // Confused deputy: `allow_responses` would let the caller make this worker publish, with
            // its own rights, to any subject it names (`media.created`, `$JS.API...`). Never
            // answered; handled as an event, so a request handler does not run either.
            let _enter = span.enter();
            tracing::warn!(%reply, "reply subject is not an inbox: no reply, request handler not run");
        }
        let slot = match shared.admitted.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) if message.reply.is_none() => {
                shared.admitted.clone().acquire_owned().await.expect("semaphore is never closed")
            }
            Err(_) => {
                let _enter = span.enter();
                refuse_overloaded(&shared, &endpoint, message).await;
                continue;
            }
        };
        // A body past `max_payload` is refused (413) without being held: one KiB for its reply.
        let size = if message.payload.len() > shared.config.max_payload { 0 } else { message.payload.len() };
        let bytes = match shared.held.clone().try_acquire_many_owned(kib(size)) {
            Ok(permit) => permit,
            Err(_) if message.reply.is_none() => {
                shared.held.clone().acquire_many_owned(kib(size)).await.expect("semaphore is never closed")
            }
            Err(_) => {
                let _enter = span.enter();
                refuse_overloaded(&shared, &endpoint, message).await;
                continue;
            }
        };
        let admitted = Admitted { _slot: slot, _bytes: bytes };
        shared.tasks.spawn(handle(message, endpoint.clone(), shared.clone(), admitted).instrument(span));
    }
}

/// Whether `subject` is a reply inbox a worker may answer on: `_INBOX.…` (the NATS and NestJS
/// default) or a private `_INBOX_<user>.…` (mediabus_rpc::NatsSettings::inbox_prefix). A message
/// with any other reply subject is handled as an event: no reply, no request handler (DESIGN §14).
pub(crate) fn is_inbox(subject: &str) -> bool {
    subject.strip_prefix("_INBOX").is_some_and(|rest| rest.starts_with('.') || rest.starts_with('_'))
}

/// The span every log line of a request runs in: service, subject, request id (the caller's
/// `X-Request-Id`, else a new NUID) and trace id (the caller's `traceparent`, else a new one). With
/// OTLP export on, it is exported as a child of that `traceparent`.
fn request_span(service: &str, subject: &str, headers: Option<&HeaderMap>) -> tracing::Span {
    let request_id = headers
        .and_then(|h| h.get("X-Request-Id").or_else(|| h.get("x-request-id")))
        .map_or_else(|| nuid::next().to_string(), |v| v.as_str().to_owned());
    let trace = mediabus_telemetry::trace::TraceContext::from_headers(headers)
        .unwrap_or_else(mediabus_telemetry::trace::TraceContext::new_root);
    let span = tracing::info_span!("rpc", %service, %subject, %request_id, trace_id = %trace.trace_id_hex());
    trace.attach_to(&span);
    span
}

/// 503 `UNAVAILABLE` with `Retry-After: 1` to a request that found the queue full.
async fn refuse_overloaded<S>(shared: &Shared<S>, endpoint: &Endpoint<S>, message: Message) {
    let Some(reply) = message.reply else { return };
    let id = envelope::peek_id(&message.payload).map(RawValue::to_owned);
    let err = RpcError::unavailable("the service is overloaded; retry shortly");
    endpoint.stats.record(Duration::ZERO, Some(&err));
    record_metrics(&shared.config.name, &endpoint.subject, err.status, Duration::ZERO);
    tracing::warn!(max_queue = shared.config.max_queue, "overloaded: request refused");
    send_reply(&shared.client, reply, id.as_deref(), Err(err)).await;
}

/// `mediabus_requests_total` and `mediabus_request_duration_seconds` (DESIGN §12); no-ops unless
/// the binary installed a recorder (`metrics.listen`).
fn record_metrics(service: &str, subject: &str, status: u16, elapsed: Duration) {
    let labels = [("service", service.to_owned()), ("subject", subject.to_owned())];
    metrics::histogram!("mediabus_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    let [service, subject] = labels;
    metrics::counter!("mediabus_requests_total", &[service, subject, ("code", status.to_string())]).increment(1);
}

/// The time left before the request's [`DEADLINE_HEADER`]: `None` without a (readable) header,
/// `Some(ZERO)` once it has passed.
fn time_left(headers: Option<&HeaderMap>) -> Option<Duration> {
    let deadline_ms: u64 = headers?.get(DEADLINE_HEADER)?.as_str().trim().parse().ok()?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(Duration::from_millis(deadline_ms.saturating_sub(now_ms)))
}

/// What an admitted request holds until it has been answered: its slot among `max_concurrency +
/// max_queue` and its body's share of `max_held_bytes`.
struct Admitted {
    _slot: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

async fn handle<S: Clone + Send + Sync + 'static>(
    message: Message,
    endpoint: Arc<Endpoint<S>>,
    shared: Arc<Shared<S>>,
    _admitted: Admitted,
) {
    let _permit = shared.limit.clone().acquire_owned().await.expect("semaphore is never closed");
    let started = Instant::now();
    let Message { payload, reply, headers, .. } = message;
    // A deadline is the waiting caller's: an event (no reply subject) has none, and runs whole
    // even if it was published with the header of the request that caused it.
    let left = reply.as_ref().and_then(|_| time_left(headers.as_ref()));
    let (answer, outcome) = if left == Some(Duration::ZERO) {
        // The caller has given up: do not run the work (it may be a write nobody waits for).
        let id = envelope::peek_id(&payload).map(RawValue::to_owned);
        tracing::info!("deadline passed before the request ran; not running it");
        (Replying(id), Err(RpcError::timeout("the caller's deadline passed before the request ran")))
    } else {
        let limit = endpoint.route.timeout.unwrap_or(shared.config.request_timeout);
        let timeout = left.map_or(limit, |left| left.min(limit));
        process(&payload, reply.is_some(), headers, &endpoint.route, timeout, &shared).await
    };
    let elapsed = started.elapsed();
    endpoint.stats.record(elapsed, outcome.as_ref().err());
    let status = outcome.as_ref().map_or_else(|e| e.status, |_| 200);
    record_metrics(&shared.config.name, &endpoint.subject, status, elapsed);
    tracing::debug!(status, micros = elapsed.as_micros() as u64, "handled");
    match (reply, answer) {
        (Some(reply), Replying(id)) => send_reply(&shared.client, reply, id.as_deref(), outcome).await,
        _ => {
            if let Err(err) = outcome {
                tracing::warn!(status = err.status, code = %err.code, message = %err.message, "event failed");
            }
        }
    }
}

/// Whether a message gets a reply, and the request id that reply echoes.
enum Answer {
    Replying(Option<Box<RawValue>>),
    Silent,
}
use Answer::{Replying, Silent};

/// Decodes the message and runs the matching handler.
async fn process<S: Clone>(
    payload: &Bytes,
    has_inbox: bool,
    headers: Option<HeaderMap>,
    route: &Route<S>,
    timeout: Duration,
    shared: &Shared<S>,
) -> (Answer, Result<Vec<u8>, RpcError>) {
    let limit = shared.config.max_payload;
    if payload.len() > limit {
        let id = envelope::peek_id(payload).map(RawValue::to_owned);
        return (
            Replying(id),
            Err(RpcError::new(413, codes::PAYLOAD_TOO_LARGE, format!("body exceeds {limit} bytes"))),
        );
    }
    let mut headers = headers;
    if has_inbox && let Some(guard) = &route.guard {
        let ctx = Ctx { state: shared.state.clone(), headers };
        if let Err(err) = guard(&ctx) {
            return (Replying(envelope::peek_id(payload).map(RawValue::to_owned)), Err(err));
        }
        headers = ctx.headers;
    }
    if has_inbox && let Some(name) = route.raw_header.as_deref() {
        let ctx = Ctx { state: shared.state.clone(), headers };
        if ctx.header(name).is_some() {
            let Some(invoke) = &route.request else { unreachable!("binary routes have a request handler") };
            return (Replying(None), run(invoke, ctx, Input::Binary(payload), timeout).await);
        }
        headers = ctx.headers;
    }
    let incoming = match envelope::parse(payload) {
        Ok(incoming) => incoming,
        Err(_) if route.binary && route.raw_header.is_none() && has_inbox => {
            let Some(invoke) = &route.request else { unreachable!("binary routes have a request handler") };
            let ctx = Ctx { state: shared.state.clone(), headers };
            return (Replying(None), run(invoke, ctx, Input::Binary(payload), timeout).await);
        }
        Err(err) => return (Replying(None), Err(err)),
    };
    // A NestJS packet without id is an event even if a reply inbox came along; a raw payload with
    // a reply inbox is a plain NATS request (e.g. `nats req`).
    let is_request = has_inbox && (incoming.id.is_some() || !incoming.packet);
    let (answer, handler) = if is_request {
        (Replying(incoming.id.map(RawValue::to_owned)), &route.request)
    } else {
        (Silent, &route.event)
    };
    let Some(invoke) = handler else {
        let err = RpcError::new(404, codes::PATTERN_NOT_FOUND, "no handler for this kind of message on this subject");
        return (answer, Err(err));
    };
    let ctx = Ctx { state: shared.state.clone(), headers };
    (answer, run(invoke, ctx, Input::Json(incoming.data), timeout).await)
}

/// Runs a handler: decode errors are 400s, a panic is a 500, overrunning the timeout a 504.
async fn run<S>(invoke: &Invoke<S>, ctx: Ctx<S>, input: Input<'_>, timeout: Duration) -> Result<Vec<u8>, RpcError> {
    let work = match std::panic::catch_unwind(AssertUnwindSafe(|| invoke(ctx, input))) {
        Ok(Ok(work)) => work,
        Ok(Err(err)) => return Err(err),
        Err(_) => return Err(panicked()),
    };
    match tokio::time::timeout(timeout, AssertUnwindSafe(work).catch_unwind()).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => Err(panicked()),
        Err(_) => Err(RpcError::timeout(format!("handler did not finish within {} ms", timeout.as_millis()))),
    }
}

fn panicked() -> RpcError {
    // The panic message was already printed by the panic hook; the caller gets nothing of it.
    tracing::error!("handler panicked");
    RpcError::internal()
}

/// Publishes the reply envelope. Error replies also carry the NATS micro error headers
/// (`Nats-Service-Error`, `Nats-Service-Error-Code`) so micro-aware clients see the failure;
/// NestJS reads only the body.
async fn send_reply(
    client: &Client,
    reply: async_nats::Subject,
    id: Option<&RawValue>,
    outcome: Result<Vec<u8>, RpcError>,
) {
    let sent = match outcome {
        Ok(mut body) => {
            envelope::close_response(&mut body, id);
            client.publish(reply, body.into()).await
        }
        Err(err) => {
            if err.status >= 500 {
                tracing::error!(status = err.status, code = %err.code, "request failed");
            } else {
                tracing::debug!(status = err.status, code = %err.code, message = %err.message, "request rejected");
            }
            let mut headers = HeaderMap::new();
            let message: String = err.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            headers.insert(async_nats::service::NATS_SERVICE_ERROR, message.as_str());
            headers.insert(async_nats::service::NATS_SERVICE_ERROR_CODE, err.status.to_string().as_str());
            if err.status == 503 {
                // Overload or a dependency down: worth retrying soon (the bridge passes it on).
                headers.insert("Retry-After", "1");
            }
            client.publish_with_headers(reply, headers, envelope::encode_error(id, &err).into()).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not publish reply");
    }
}

#[cfg(test)]
mod reply_subject_tests {
    use super::is_inbox;

    #[test]
    fn only_inboxes_are_reply_subjects() {
        for ok in ["_INBOX.abc.1", "_INBOX_backend.abc", "_INBOX_media.x.y"] {
            assert!(is_inbox(ok), "{ok}");
        }
        for bad in ["media.created", "$JS.API.STREAM.DELETE.MEDIA_EVENTS", "_INBOX", "_INBOXES.x", "x._INBOX.y", ""] {
            assert!(!is_inbox(bad), "{bad}");
        }
    }
}
