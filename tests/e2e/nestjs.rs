//! Interop with real NestJS apps (tests/nestjs: NestJS 11 + `nats` 2.x; tests/nestjs12: NestJS 12 +
//! `@nats-io/transport-node`), both ways: a NestJS `ClientProxy` calling Rust handlers, and the
//! Rust client calling NestJS `@MessagePattern` handlers.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use mediabus_e2e::EVENTS_SEEN;
use mediabus_rpc::{RpcClient, RpcError, codes};
use mediabus_testkit::{NatsServer, repo_root};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::App;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn script(harness: &str, name: &str) -> std::path::PathBuf {
    repo_root().join("tests").join(harness).join(name)
}

/// Runs the harness's `client.js` scenario against the Rust test service and checks every step.
async fn nestjs_client_talks_to_rust(harness: &str) {
    let app = App::with_defaults().await;
    let mut seen = app.nats.subscribe(EVENTS_SEEN).await.unwrap();
    app.nats.flush().await.unwrap();

    let output = Command::new("node")
        .arg(script(harness, "client.js"))
        .env("NATS_URL", app.server.url())
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("run node (scripts/setup installs the harness)");
    assert!(output.status.success(), "client.js failed: {:?}", output.status);
    let got: Value = serde_json::from_slice(&output.stdout).expect("client.js prints one JSON object");

    assert_eq!(got["echo"], json!({"text": "héllo", "n": 42, "nested": {"a": [1, 2, 3]}}));
    assert_eq!(got["fail"], json!({"status": 422, "code": "RUST_FAIL", "message": "rust says no"}));
    assert_eq!(
        (got["badType"]["status"].clone(), got["badType"]["code"].clone()),
        (json!(400), json!(codes::INVALID_PAYLOAD))
    );
    assert_eq!(got["emitted"], true);
    assert_eq!(got["concurrentOk"], 200, "every concurrent reply correlated by id");
    assert_eq!(got["headers"]["bearer"], "abc");
    assert_eq!(got["headers"]["traceparent"], TRACEPARENT);

    let event = tokio::time::timeout(Duration::from_secs(5), seen.next()).await.expect("event handled").unwrap();
    let report: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(report["data"], json!({"seq": 7}));
}

/// Starts the harness's `server.js` and calls its `@MessagePattern` handlers with [`RpcClient`].
async fn rust_client_talks_to_nestjs(harness: &str) {
    let server = NatsServer::start();
    let mut nest = Command::new("node")
        .arg(script(harness, "server.js"))
        .env("NATS_URL", server.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut ready = String::new();
    let stdout = nest.stdout.take().unwrap();
    tokio::time::timeout(Duration::from_secs(30), BufReader::new(stdout).read_line(&mut ready))
        .await
        .expect("NestJS server starts")
        .unwrap();
    assert_eq!(ready.trim(), "READY");

    let rpc = RpcClient::new(async_nats::connect(server.url()).await.unwrap()).with_timeout(Duration::from_secs(5));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Bearer from-rust");
    headers.insert("traceparent", TRACEPARENT);
    let data = json!({"text": "héllo", "list": [1, 2]});
    let reply: Value = rpc.call_with_headers("nest.echo", &data, headers).await.unwrap();
    assert_eq!(
        reply,
        json!({"echo": data, "headers": {"authorization": "Bearer from-rust", "traceparent": TRACEPARENT}})
    );

    let err = rpc.call::<_, Value>("nest.fail", &json!({})).await.unwrap_err();
    assert_eq!(err, RpcError::new(422, "NEST_FAIL", "nest says no"));

    nest.start_kill().unwrap();
    nest.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nestjs11_client_calls_rust_handlers() {
    nestjs_client_talks_to_rust("nestjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_calls_nestjs11_handlers() {
    rust_client_talks_to_nestjs("nestjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nestjs12_client_calls_rust_handlers() {
    nestjs_client_talks_to_rust("nestjs12").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_calls_nestjs12_handlers() {
    rust_client_talks_to_nestjs("nestjs12").await;
}
