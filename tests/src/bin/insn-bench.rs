//! insn-bench: instructions per request of a worker, counted by valgrind's callgrind, which a
//! loaded machine does not disturb the way it does requests per second.
//!
//! For each worker (the framework's echo, `test-worker`; its bare async-nats responder,
//! `test-worker --raw`; `media.findOne` in `media-service` on SQLite with the owner's token) two
//! runs under `valgrind --tool=callgrind` send the same warm-up, then 0 or `N` more sequential
//! requests, and end with SIGTERM (callgrind writes its totals at exit). The difference of the two
//! totals over `N` is the worker's instructions per request: start-up, warm-up and shutdown cancel
//! out. Only the worker is counted, not nats-server nor the client.
//!
//! Usage: `insn-bench [--requests N]` (default 2000); run by `scripts/bench --instructions`, which
//! builds the release binaries next to this one.

use std::path::Path;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{sibling_bin, summary};
use mediabus_rpc::RpcClient;
use mediabus_testkit::NatsServer;
use serde_json::{Value, json};

const WARM_UP: usize = 200;

/// Which worker, and how to start and ask it.
#[derive(Clone, Copy, PartialEq)]
enum Worker {
    Raw,
    Echo,
    FindOne,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--requests")
        .and_then(|i| args.get(i + 1))
        .map_or(2000, |v| v.parse().expect("--requests N"));
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let server = NatsServer::start();

    println!(
        "instructions per request (callgrind, the worker process only; ({WARM_UP} + {n}) - {WARM_UP} requests, sequential)"
    );
    println!("{:<34} {:>14}", "worker", "instr/request");
    let mut per = Vec::new();
    for (name, worker) in [
        ("bare async-nats responder", Worker::Raw),
        ("echo via framework", Worker::Echo),
        ("media.findOne (SQLite)", Worker::FindOne),
    ] {
        let base = total_instructions(&server, dir.path(), worker, 0).await;
        let with_n = total_instructions(&server, dir.path(), worker, n).await;
        let each = with_n.saturating_sub(base) as f64 / n as f64;
        println!("{name:<34} {each:>14.0}");
        per.push(each);
    }
    summary(
        "echo via framework, instructions",
        per[1],
        "instr/req",
        "bare async-nats responder",
        Some(per[1] / per[0]),
        "-",
    );
    summary("media.findOne, instructions", per[2], "instr/req", "echo via framework", Some(per[2] / per[1]), "-");
}

/// Runs `worker` under callgrind for [`WARM_UP`] + `extra` requests and returns its total
/// instruction count.
async fn total_instructions(server: &NatsServer, dir: &Path, worker: Worker, extra: usize) -> u64 {
    let out = dir.join(format!("callgrind-{}-{extra}.out", worker as u8));
    let out_arg = format!("--callgrind-out-file={}", out.display());
    let (url, password) = (server.url(), server.password("media"));
    let db = dir.join(format!("media-{extra}.db")).to_str().unwrap().to_owned();
    let files = dir.join("files").to_str().unwrap().to_owned();
    let (bin, env, worker_args): (String, Vec<(&str, &str)>, Vec<&str>) = match worker {
        Worker::Raw => (sibling_bin("test-worker"), vec![("NATS_URL", url.as_str())], vec!["--raw"]),
        Worker::Echo => (sibling_bin("test-worker"), vec![("NATS_URL", url.as_str())], vec!["--name", "insn"]),
        Worker::FindOne => (
            sibling_bin("media-service"),
            vec![
                ("MEDIABUS__NATS__URL", url.as_str()),
                ("MEDIABUS__NATS__PASSWORD", password.as_str()),
                ("MEDIABUS__STORE__PATH", db.as_str()),
                ("MEDIABUS__STORAGE__ROOT", files.as_str()),
                ("RUST_LOG", "warn"),
            ],
            vec![],
        ),
    };
    let mut valgrind_args = vec!["--tool=callgrind", out_arg.as_str(), bin.as_str()];
    valgrind_args.extend(worker_args);
    let mut process = WorkerProcess::spawn_with_env("valgrind", &env, &valgrind_args);

    let client = async_nats::connect(&url).await.expect("connect");
    let token = mediabus_e2e::dev_token("insn-user");
    let mut headers = HeaderMap::new();
    let (subject, body) = match worker {
        Worker::Raw => ("bench.raw", json!({"pattern": "rust.echo", "data": {"text": "hello", "n": 42}, "id": "1"})),
        Worker::Echo => ("rust.echo", json!({"pattern": "rust.echo", "data": {"text": "hello", "n": 42}, "id": "1"})),
        Worker::FindOne => {
            headers.insert("Authorization", format!("Bearer {token}").as_str());
            let rpc = RpcClient::new(client.clone()).with_timeout(Duration::from_secs(60));
            let created: Value = rpc
                .call_with_headers(
                    "media.create",
                    &json!({"originalName": "a.png", "mimeType": "image/png", "size": 1, "url": "/a.png"}),
                    headers.clone(),
                )
                .await
                .expect("media.create");
            ("media.findOne", json!({"pattern": "media.findOne", "data": {"id": created["id"]}, "id": "1"}))
        }
    };
    let body = Bytes::from(body.to_string());
    // READY can come before the server has the subscription (slow under valgrind): poll until a
    // first request is answered (not counted: both runs make it).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.request_with_headers(subject, headers.clone(), body.clone()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "{subject}: no answer under callgrind in 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..WARM_UP + extra {
        let reply = client.request_with_headers(subject, headers.clone(), body.clone()).await.expect("request");
        assert!(!reply.payload.starts_with(b"{\"err\""), "error reply: {:?}", reply.payload);
    }
    process.terminate();
    assert!(process.wait().success() || out.exists(), "worker under callgrind exited badly");
    let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("callgrind totals")
}
