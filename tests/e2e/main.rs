//! End-to-end tests against a real nats-server (started per test by mediabus-testkit).
//!
//! - `framework`: the pattern framework served in-process: envelope, bad input, limits,
//!   service API, client errors, reconnect.
//! - `workers`: worker processes on one queue group: load sharing and rolling restart.
//! - `nestjs`: interop with real NestJS 11 (and 12) `ClientProxy` and `@MessagePattern` apps.
//! - `bridge`: the HTTP bridge in front of the real media service (`stack`: that in-process stack).
//! - `access`: real tokens from the auth service against the media access matrix through the
//!   bridge, and forged tokens refused with 401 on every kind of route.
//! - `schemathesis`: the bridge, in front of the real media and auth services, fuzzed against
//!   its own `/openapi.json` by schemathesis.
//! - `http`: bridge and media workers as processes over real HTTP: uploads, content, limits.
//! - `permissions`: the NATS users and permissions of nats/permissions.conf, enforced.
//! - `tus`: tus 1.0 resumable uploads (`/api/uploads`): tuspy across two bridges (local files and
//!   S3), every extension over raw HTTP, 1 GiB with bounded bridge memory, quotas, the expiry sweep.
//! - `events`: `GET /api/events` (Server-Sent Events) over real HTTP: own media, resume, visibility.
//! - `cli`: the `mediabus` CLI against bridges and workers: resumable directory upload, ls, get, rm.
//! - `web`: the web app at `/` in headless Chromium (Playwright) over the whole stack.
//! - `analytics`: view/download counts through the bridge, flushed to the media service.
//! - `observability`: /metrics of every process parsed and counted, one trace id across bridge,
//!   media service and processor logs, deadlines honoured, overload refused with 503 at once.
//! - `attacks`: issue 12 items 2, 3, 7, 8, 9 against bridge processes: active content types,
//!   revoked content URLs, pre-auth uploads and part headers, connection caps, slow loris, idle bodies.
//! - `faults`: a media worker and a NATS cluster node killed under load, a nats-server restarted:
//!   no acknowledged create lost or doubled, errors stop within 5 s, JetStream keeps flowing.
//! - `variants`: `?variant=thumb|preview` and HLS through the bridge, played from a signed URL alone.

mod access;
mod analytics;
mod attacks;
mod bridge;
mod cli;
mod events;
mod faults;
mod framework;
mod hardening;
mod http;
mod nestjs;
mod observability;
mod permissions;
mod schemathesis;
mod stack;
mod tus;
mod variants;
mod web;
mod workers;

use std::time::Duration;

use mediabus_e2e::{TestState, test_router};
use mediabus_rpc::{Running, Service, ServiceConfig};
use mediabus_testkit::NatsServer;
use serde_json::Value;

/// A nats-server with the test service running in-process under `config`.
struct App {
    server: NatsServer,
    nats: async_nats::Client,
    state: TestState,
    running: Running,
}

impl App {
    async fn spawn(config: ServiceConfig) -> Self {
        let server = NatsServer::start();
        let nats = mediabus_rpc::connect(&server.url(), "test-app", 1024).await.expect("connect");
        let state = TestState::new("in-process", nats.clone());
        let running = Service::new(config, test_router(), state.clone()).serve(nats.clone()).await.expect("serve");
        Self { server, nats, state, running }
    }

    async fn with_defaults() -> Self {
        Self::spawn(ServiceConfig::new("test", "0.1.0")).await
    }

    fn rpc(&self) -> mediabus_rpc::RpcClient {
        mediabus_rpc::RpcClient::new(self.nats.clone()).with_timeout(Duration::from_secs(5))
    }

    /// Sends `body` as-is with a reply inbox and returns the reply parsed as JSON.
    async fn raw_request(&self, subject: &str, body: impl Into<bytes::Bytes>) -> Value {
        let reply = tokio::time::timeout(Duration::from_secs(5), self.nats.request(subject.to_owned(), body.into()))
            .await
            .expect("reply in time")
            .expect("request");
        serde_json::from_slice(&reply.payload).expect("reply is JSON")
    }
}
