//! Shared pieces of the end-to-end tests and benchmarks: the test worker's subject table (served
//! in-process or by the `test-worker` binary), a handle on worker processes, and the benchmarks'
//! load generator ([`bench`]) and a small streaming HTTP client ([`http`]).

pub mod bench;
pub mod http;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mediabus_rpc::{Body, Ctx, Router, RpcError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Subject where `rust.event` reports each event it handled, as `{"worker":..,"data":..}`.
pub const EVENTS_SEEN: &str = "test.events.seen";

/// State of the test worker.
#[derive(Clone)]
pub struct TestState {
    /// Name of this worker, returned by `rust.whoami` and `rust.slow`.
    pub worker: Arc<str>,
    /// For `rust.event` to report back.
    pub nats: async_nats::Client,
    /// Requests of `rust.slow` running now, and the most seen at once.
    pub in_flight: Arc<AtomicUsize>,
    pub peak_in_flight: Arc<AtomicUsize>,
}

impl TestState {
    pub fn new(worker: &str, nats: async_nats::Client) -> Self {
        Self { worker: worker.into(), nats, in_flight: Arc::default(), peak_in_flight: Arc::default() }
    }
}

#[derive(Deserialize)]
struct Count {
    n: u32,
}

#[derive(Deserialize)]
struct Slow {
    ms: u64,
}

/// The test subjects:
/// - `rust.echo`: returns its data;
/// - `rust.fail`: 422 `RUST_FAIL`;
/// - `rust.missing_type`: wants `{n: u32}`, returns it;
/// - `rust.panic`: panics;
/// - `rust.slow` `{ms}`: sleeps, returns `{worker, peak}` (peak concurrent `rust.slow` calls);
/// - `rust.whoami`: returns `{worker}`;
/// - `rust.headers`: returns the `authorization` and `traceparent` headers it got;
/// - `rust.bytes`: takes JSON or raw bytes, returns `{json}` or `{binaryLen, part}` (header `Part-Number`);
/// - `rust.guarded`: as `rust.bytes`, behind a guard that wants `Authorization: Bearer let-me-in`
///   (401 `UNAUTHORIZED` otherwise, before the body is decoded);
/// - `rust.event` (event): publishes `{worker, data}` on [`EVENTS_SEEN`].
pub fn test_router() -> Router<TestState> {
    Router::new()
        // Echoes the JSON text untouched, so the benchmark measures the framework, not serde_json::Value.
        .request("rust.echo", |_: Ctx<TestState>, data: Box<RawValue>| async move { Ok::<_, RpcError>(data) })
        .request("rust.fail", |_: Ctx<TestState>, _: Value| async move {
            Err::<(), _>(RpcError::new(422, "RUST_FAIL", "rust says no"))
        })
        .request("rust.missing_type", |_: Ctx<TestState>, c: Count| async move { Ok::<_, RpcError>(json!({"n": c.n})) })
        .request("rust.panic", |_: Ctx<TestState>, _: Value| async move {
            if true {
                panic!("handler bug: secret internals");
            }
            Ok::<(), RpcError>(())
        })
        .request("rust.slow", slow)
        .request("rust.whoami", |ctx: Ctx<TestState>, _: Value| async move {
            Ok::<_, RpcError>(json!({"worker": &*ctx.state.worker}))
        })
        .request("rust.headers", |ctx: Ctx<TestState>, _: Value| async move {
            Ok::<_, RpcError>(json!({
                "authorization": ctx.header("Authorization"),
                "traceparent": ctx.header("traceparent"),
                "bearer": ctx.bearer_token(),
            }))
        })
        .binary_request("rust.bytes", |ctx: Ctx<TestState>, body: Body| async move {
            Ok::<_, RpcError>(match body {
                Body::Json(data) => json!({"json": data}),
                Body::Binary(bytes) => json!({"binaryLen": bytes.len(), "part": ctx.header("Part-Number")}),
            })
        })
        .binary_request("rust.guarded", |_: Ctx<TestState>, body: Body| async move {
            Ok::<_, RpcError>(match body {
                Body::Json(data) => json!({"json": data}),
                Body::Binary(bytes) => json!({"binaryLen": bytes.len()}),
            })
        })
        .guard("rust.guarded", |ctx: &Ctx<TestState>| match ctx.bearer_token() {
            Some("let-me-in") => Ok(()),
            _ => Err(RpcError::new(401, "UNAUTHORIZED", "no entry")),
        })
        .event("rust.event", |ctx: Ctx<TestState>, data: Value| async move {
            let report = json!({"worker": &*ctx.state.worker, "data": data});
            ctx.state
                .nats
                .publish(EVENTS_SEEN, report.to_string().into())
                .await
                .map_err(|_| RpcError::unavailable("cannot report event"))
        })
}

async fn slow(ctx: Ctx<TestState>, input: Slow) -> Result<Value, RpcError> {
    let state = &ctx.state;
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(input.ms)).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(json!({"worker": &*state.worker, "peak": state.peak_in_flight.load(Ordering::SeqCst)}))
}

/// A `test-worker` process, killed on drop unless it already exited.
pub struct WorkerProcess {
    child: Child,
    /// What followed `READY` on its first line (the bridge: its listening address).
    ready: String,
}

impl WorkerProcess {
    /// Starts `binary` (the `test-worker` executable) with `args`, connected to `nats_url`, and waits
    /// for it to print `READY`.
    pub fn spawn(binary: &str, nats_url: &str, args: &[&str]) -> Self {
        Self::spawn_with_env(binary, &[("NATS_URL", nats_url)], args)
    }

    /// Starts `binary` with `args` and extra environment `env`, and waits for it to print `READY`
    /// (alone, or followed by a space and details: see [`WorkerProcess::ready_info`]).
    ///
    /// `MEDIABUS__ENV=dev` is set (the services then accept their built-in development secrets,
    /// DESIGN §12) unless `env` sets it otherwise.
    pub fn spawn_with_env(binary: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .env("MEDIABUS__ENV", "dev")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read worker stdout");
        let line = line.trim();
        let ready = match line.strip_prefix("READY") {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => rest.trim().to_owned(),
            _ => panic!("worker did not start: {line:?}"),
        };
        Self { child, ready }
    }

    /// What the process printed after `READY` (empty if nothing): the http-bridge prints the
    /// address it listens on, so tests can give it port 0 and never race for a port.
    pub fn ready_info(&self) -> &str {
        &self.ready
    }

    /// The port of the `host:port` address the process printed after `READY` (the http-bridge).
    pub fn ready_port(&self) -> u16 {
        let port = self.ready.rsplit(':').next().and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| panic!("no address after READY: {:?}", self.ready))
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for worker")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An access token (one hour) for `user` with role `user`, signed with the development HS256 key
/// of services/media-service/defaults.toml (kid `dev`): what workers running on their built-in
/// defaults accept. For tests and benchmarks that start the service binaries as they ship.
pub fn dev_token(user: &str) -> String {
    const DEV_SECRET: &str = "dev-only-secret-change-me-0123456789abcdef";
    let key = mediabus_auth::SigningKeyConfig::hs256("dev", DEV_SECRET);
    let signer = mediabus_auth::Signer::new(&key, "mediabus", "mediabus-api").expect("dev signing key");
    signer.sign(user, &[mediabus_auth::Role::User], Duration::from_secs(3600)).expect("sign").0
}

/// Path of the workspace binary `name` built beside the running test (a test executable lives in
/// `target/<profile>/deps/`, the binaries one level up). `scripts/test` builds every binary first.
///
/// Panics, saying how to build it, if it is missing.
pub fn built_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("own path");
    let path = exe.parent().and_then(std::path::Path::parent).expect("target dir").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` (scripts/test does)", path.display());
    path.to_str().expect("utf-8 path").to_owned()
}
