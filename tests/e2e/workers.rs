//! Worker processes sharing one queue group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use mediabus_e2e::WorkerProcess;
use mediabus_rpc::RpcClient;
use mediabus_testkit::NatsServer;
use serde_json::{Value, json};

const WORKER: &str = env!("CARGO_BIN_EXE_test-worker");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_2000_requests_and_each_gets_exactly_one_reply() {
    let server = NatsServer::start();
    let _a = WorkerProcess::spawn(WORKER, &server.url(), &["--name", "a"]);
    let _b = WorkerProcess::spawn(WORKER, &server.url(), &["--name", "b"]);
    let nats = async_nats::connect(server.url()).await.unwrap();

    // Our own reply subjects, so a duplicate reply would be seen rather than discarded (under
    // `_INBOX.`: workers answer inboxes only).
    let mut replies = nats.subscribe("_INBOX.replies.>").await.unwrap();
    nats.flush().await.unwrap();
    const N: usize = 2000;
    for i in 0..N {
        let packet = json!({"pattern": "rust.whoami", "data": {}, "id": format!("r{i}")});
        nats.publish_with_reply("rust.whoami", format!("_INBOX.replies.{i}"), packet.to_string().into()).await.unwrap();
    }
    nats.flush().await.unwrap();

    let mut per_request = vec![0u32; N];
    let mut per_worker: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    // Collect until every request is answered, then a grace period to catch duplicates.
    while let Ok(Some(msg)) = tokio::time::timeout(
        if received < N { Duration::from_secs(10) } else { Duration::from_millis(300) },
        replies.next(),
    )
    .await
    {
        let i: usize = msg.subject.rsplit('.').next().unwrap().parse().unwrap();
        let reply: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(reply["id"], format!("r{i}"), "reply correlates with its request");
        per_request[i] += 1;
        *per_worker.entry(reply["response"]["worker"].as_str().unwrap().to_owned()).or_default() += 1;
        received += 1;
    }
    assert!(per_request.iter().all(|&n| n == 1), "every request gets exactly one reply");
    for worker in ["a", "b"] {
        let share = per_worker.get(worker).copied().unwrap_or(0);
        assert!(share * 5 >= N, "worker {worker} handled {share} of {N} (< 20%): {per_worker:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let server = NatsServer::start();
    let mut a = WorkerProcess::spawn(WORKER, &server.url(), &["--name", "a"]);
    let _b = WorkerProcess::spawn(WORKER, &server.url(), &["--name", "b"]);
    let rpc = RpcClient::new(async_nats::connect(server.url()).await.unwrap()).with_timeout(Duration::from_secs(5));

    // Steady load: 16 callers in a loop, each request taking ~5 ms of handler time.
    let running = Arc::new(AtomicBool::new(true));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let (rpc, running) = (rpc.clone(), running.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while running.load(Ordering::Relaxed) {
                    match rpc.call::<_, Value>("rust.slow", &json!({"ms": 5})).await {
                        Ok(_) => ok += 1,
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    a.terminate();
    let status = tokio::task::spawn_blocking(move || a.wait()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, Ordering::Relaxed);

    let (mut ok, mut failed) = (0, Vec::new());
    for caller in callers {
        let (o, f) = caller.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(status.success(), "worker a exits 0 after SIGTERM: {status:?}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(ok > 500, "load was steady: {ok} requests");
}
