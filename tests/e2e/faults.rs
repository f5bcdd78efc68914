//! Faults under load (issue 13, DESIGN §12), every process real and on 127.0.0.1:
//!
//! - a media worker SIGKILLed under mixed load: every acknowledged create stays readable, no
//!   Idempotency-Key makes two documents, failures are limited to the requests in flight;
//! - a node of a 3-node NATS cluster SIGKILLed under load: clients and workers fail over, errors
//!   stop within 5 s, JetStream events (MEDIA_EVENTS, R3) and jobs (MEDIA_JOBS, R3) keep flowing;
//! - a single nats-server restarted under HTTP load: workers and the bridge reconnect, errors stop
//!   within 5 s.
//!
//! The issue asks for 20 s of load with the kill at 10 s; these runs are 10 s (kill at 5 s) and
//! shorter, so the whole file stays near a minute on 2 cores. Each prints its figures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use base64::Engine;
use futures_util::StreamExt;
use mediabus_e2e::http::call;
use mediabus_e2e::{WorkerProcess, built_bin, dev_token};
use mediabus_rpc::{NatsSettings, RpcClient};
use mediabus_testkit::{NatsCluster, NatsServer, media_files};
use serde_json::{Value, json};

/// Requests in flight at once, as the issue asks.
const CONCURRENCY: usize = 32;
/// How long a client waits for one reply: a request to a killed worker fails after this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Errors must stop this long after a fault.
const RECOVERY: Duration = Duration::from_secs(5);

/// One logical request of the load: a create and its one retry count as one.
struct Record {
    /// Since the load started.
    started: Duration,
    /// Since the load started.
    finished: Duration,
    ok: bool,
    error: String,
}

/// What a load run saw.
#[derive(Default)]
struct Seen {
    records: Vec<Record>,
    /// `(Idempotency-Key, id)` of every create that got a success reply.
    created: Vec<(String, String)>,
    /// Attempts that failed, retries included.
    failed_attempts: usize,
}

/// Mixed load on `clients` (round robin) as `alice`: per 4 requests one `media.create` with its
/// own Idempotency-Key (retried once with the same key on failure), one `media.findAll`, two
/// `media.findOne` of media created before. `fault` runs at `fault_at` (on a blocking thread)
/// while the load goes on; returns what was seen and when the fault finished (since the start).
async fn load<F: FnOnce() + Send + 'static>(
    clients: Vec<RpcClient>,
    duration: Duration,
    fault_at: Duration,
    fault: F,
) -> (Seen, Duration) {
    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = Arc::new(clients);
    let token = format!("Bearer {}", dev_token("alice"));
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task| {
            let (seen, clients, token) = (seen.clone(), clients.clone(), token.clone());
            tokio::spawn(async move {
                let mut n = 0usize;
                while start.elapsed() < duration {
                    n += 1;
                    let client = &clients[(task + n) % clients.len()];
                    let started = start.elapsed();
                    let known = {
                        let seen = seen.lock().unwrap();
                        (!seen.created.is_empty())
                            .then(|| seen.created[(n * 7919 + task) % seen.created.len()].1.clone())
                    };
                    let (ok, error) = match (n % 4, known) {
                        (0, _) => {
                            let key = format!("fault-{task}-{n}");
                            let mut result = create(client, &token, &key).await;
                            if result.is_err() {
                                seen.lock().unwrap().failed_attempts += 1;
                                // The retry goes to another connection (another node in a cluster).
                                result = create(&clients[(task + n + 1) % clients.len()], &token, &key).await;
                            }
                            match result {
                                Ok(id) => {
                                    seen.lock().unwrap().created.push((key, id));
                                    (true, String::new())
                                }
                                Err(e) => (false, format!("create: {e}")),
                            }
                        }
                        (1, _) | (_, None) => {
                            outcome(call_as(client, &token, "media.findAll", json!({"limit": 20})).await)
                        }
                        (_, Some(id)) => outcome(call_as(client, &token, "media.findOne", json!({"id": id})).await),
                    };
                    let mut seen = seen.lock().unwrap();
                    if !ok {
                        seen.failed_attempts += 1;
                    }
                    seen.records.push(Record { started, finished: start.elapsed(), ok, error });
                }
            })
        })
        .collect();
    tokio::time::sleep_until((start + fault_at).into()).await;
    tokio::task::spawn_blocking(fault).await.expect("fault");
    let fault_done = start.elapsed();
    for task in tasks {
        task.await.expect("load task");
    }
    let seen = Arc::try_unwrap(seen).ok().expect("tasks done").into_inner().unwrap();
    (seen, fault_done)
}

fn outcome(result: Result<Value, String>) -> (bool, String) {
    match result {
        Ok(_) => (true, String::new()),
        Err(e) => (false, e),
    }
}

/// Calls `subject` with `Authorization: <bearer>`; the error as text.
async fn call_as(client: &RpcClient, bearer: &str, subject: &str, data: Value) -> Result<Value, String> {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", bearer);
    client.call_with_headers(subject, &data, headers).await.map_err(|e| e.to_string())
}

/// `media.create` of a link with Idempotency-Key `key` (also in its metadata); the new id.
async fn create(client: &RpcClient, bearer: &str, key: &str) -> Result<String, String> {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", bearer);
    headers.insert("Idempotency-Key", key);
    let data = json!({
        "originalName": format!("{key}.png"), "mimeType": "image/png", "size": 1,
        "url": format!("https://example.com/{key}.png"), "metadata": {"key": key},
    });
    let media: Value = client.call_with_headers("media.create", &data, headers).await.map_err(|e| e.to_string())?;
    media["id"].as_str().map(str::to_owned).ok_or_else(|| format!("no id in {media}"))
}

/// Checks the load's outcome on `client`: every acknowledged create reads back, and no key made
/// two documents (alice's media listed page by page and counted by `metadata.key`).
async fn check_creates(client: &RpcClient, seen: &Seen) {
    let bearer = format!("Bearer {}", dev_token("alice"));
    let missing: Vec<String> = futures_util::stream::iter(seen.created.iter())
        .map(|(_, id)| {
            let bearer = bearer.clone();
            async move {
                call_as(client, &bearer, "media.findOne", json!({"id": id})).await.err().map(|e| format!("{id}: {e}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(missing.is_empty(), "acknowledged creates not readable: {missing:?}");

    let mut by_key = std::collections::HashMap::<String, usize>::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = json!({"userId": "alice", "limit": 100});
        if let Some(cursor) = &cursor {
            query["cursor"] = json!(cursor);
        }
        let page = call_as(client, &bearer, "media.findByUser", query).await.expect("list alice's media");
        for media in page["items"].as_array().expect("items") {
            if let Some(key) = media["metadata"]["key"].as_str() {
                *by_key.entry(key.to_owned()).or_default() += 1;
            }
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let twice: Vec<_> = by_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys with more than one document: {twice:?}");
    for (key, _) in &seen.created {
        assert_eq!(by_key.get(key), Some(&1), "acknowledged create {key} listed once");
    }
}

/// Env of a worker binary as NATS `user` on `urls`, sharing the stores under `dir`.
fn worker_env(urls: &str, user: &str, password: &str, dir: &std::path::Path, replicas: &str) -> Vec<(String, String)> {
    [
        ("MEDIABUS__NATS__URL", urls.to_owned()),
        ("MEDIABUS__NATS__USER", user.to_owned()),
        ("MEDIABUS__NATS__PASSWORD", password.to_owned()),
        ("MEDIABUS__STORAGE__ROOT", dir.join("files").to_string_lossy().into_owned()),
        ("MEDIABUS__STORE__PATH", dir.join("media.db").to_string_lossy().into_owned()),
        ("MEDIABUS__JETSTREAM__REPLICAS", replicas.to_owned()),
        ("RUST_LOG", "error".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn spawn(binary: &str, env: &[(String, String)]) -> WorkerProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    WorkerProcess::spawn_with_env(&built_bin(binary), &env, &[])
}

/// A client connected as the `backend` user to `urls` (comma-separated: failover order).
async fn backend(urls: &str, password: &str) -> RpcClient {
    let settings = NatsSettings::new(urls).with_user("backend", password);
    RpcClient::new(settings.connect("fault-load", 4096).await.expect("connect")).with_timeout(CALL_TIMEOUT)
}

/// When the last failing request started and when it failed, in seconds relative to `fault`
/// (negative: before it; zeros if none failed).
fn last_failure(records: &[Record], fault: Duration) -> (f64, f64) {
    let last = records.iter().filter(|r| !r.ok).max_by_key(|r| r.finished);
    let relative = |t: Duration| t.as_secs_f64() - fault.as_secs_f64();
    last.map_or((0.0, 0.0), |r| (relative(r.started), relative(r.finished)))
}

fn summary(seen: &Seen) -> (usize, usize) {
    (seen.records.len(), seen.records.iter().filter(|r| !r.ok).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_load_loses_no_acknowledged_create_and_duplicates_none() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = worker_env(&nats.url(), "media", &nats.password("media"), dir.path(), "1");
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| spawn("media-service", &env)).collect();
    // Dropping a WorkerProcess SIGKILLs it.
    let victim = workers.remove(1);
    let clients = vec![backend(&nats.url(), &nats.password("backend")).await];

    let (seen, killed) =
        load(clients.clone(), Duration::from_secs(10), Duration::from_secs(5), move || drop(victim)).await;

    let (total, failed) = summary(&seen);
    // nats-server drops the dead worker's subscription once it reads the closed socket, which may
    // lag the kill by a moment on a busy machine: requests sent in that moment count as in flight.
    let noticed = killed + Duration::from_millis(500);
    let late: Vec<_> = seen.records.iter().filter(|r| !r.ok && r.started > noticed).map(|r| &r.error).collect();
    println!(
        "worker kill: {total} requests ({} creates acknowledged) in 10 s at concurrency {CONCURRENCY}; \
         {failed} failed ({} failed attempts, retries included), worker killed at {killed:?}",
        seen.created.len(),
        seen.failed_attempts
    );
    assert!(seen.created.len() > 50 && total > 200, "the load ran: {total} requests");
    // Only requests already sent when the worker died may fail: at most one per client task.
    assert!(late.is_empty(), "requests started 0.5 s after the kill failed: {late:?}");
    assert!(failed <= CONCURRENCY, "{failed} failures, more than the {CONCURRENCY} in flight");
    check_creates(&clients[0], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_node_killed_under_load_fails_over_and_jetstream_keeps_flowing() {
    let cluster = NatsCluster::start();
    let dir = tempfile::tempdir().unwrap();
    // Each worker and each client starts on its own node and knows the other two.
    let _workers: Vec<WorkerProcess> = (0..3)
        .map(|i| {
            let env = worker_env(&cluster.urls_from(i), "media", &cluster.password("media"), dir.path(), "3");
            spawn("media-service", &env)
        })
        .collect();
    let env = worker_env(&cluster.urls_from(1), "processor", &cluster.password("processor"), dir.path(), "3");
    let _processor = spawn("media-processor", &env);
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(backend(&cluster.urls_from(i), &cluster.password("backend")).await);
    }
    // The harness user, on node 2 first, reads the streams' state.
    let observer = mediabus_rpc::connect(&cluster.urls_from(2), "fault-observer", 64).await.unwrap();
    for stream in ["MEDIA_EVENTS", "MEDIA_JOBS"] {
        let info = stream_info(&observer, stream).await;
        assert_eq!(info["config"]["num_replicas"], 3, "{stream} is R3: {info}");
    }
    let png = std::fs::read(&media_files().png).unwrap();
    upload_until_ready(&clients[2], &png).await;

    // Node 0: the first node of worker 0 and client 0.
    let cluster = Arc::new(Mutex::new(cluster));
    let victim = cluster.clone();
    let (seen, killed) =
        load(clients.clone(), Duration::from_secs(10), Duration::from_secs(3), move || victim.lock().unwrap().kill(0))
            .await;

    let (total, failed) = summary(&seen);
    let (started, ended) = last_failure(&seen.records, killed);
    println!(
        "NATS node kill: {total} requests in 10 s at concurrency {CONCURRENCY} over 3 nodes; {failed} failed \
         ({} failed attempts); node killed at {killed:?}; the last failing request started at {started:+.3} s and \
         failed at {ended:+.3} s from the kill",
        seen.failed_attempts
    );
    let late: Vec<_> =
        seen.records.iter().filter(|r| !r.ok && r.started > killed + RECOVERY).map(|r| &r.error).collect();
    assert!(late.is_empty(), "errors more than {RECOVERY:?} after the kill: {late:?}");
    assert!(seen.records.iter().any(|r| r.ok && r.started > killed + RECOVERY), "the load went on after recovery");
    check_creates(&clients[1], &seen).await;

    // Events are still captured by MEDIA_EVENTS (R3, two nodes left): 20 more creates, 20 more
    // `media.created` in the stream.
    let count = |info: Value| info["state"]["subjects"]["media.created"].as_u64().unwrap_or(0);
    let before = count(stream_info(&observer, "MEDIA_EVENTS").await);
    let bearer = format!("Bearer {}", dev_token("alice"));
    for n in 0..20 {
        create(&clients[n % 3], &bearer, &format!("after-{n}")).await.expect("create after the kill");
    }
    let deadline = Instant::now() + RECOVERY;
    loop {
        let now = count(stream_info(&observer, "MEDIA_EVENTS").await);
        if now >= before + 20 {
            assert_eq!(now, before + 20);
            break;
        }
        assert!(Instant::now() < deadline, "MEDIA_EVENTS holds {} of 20 new events", now - before);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Jobs still flow through MEDIA_JOBS (R3) to the processor.
    upload_until_ready(&clients[1], &png).await;
    let info = stream_info(&observer, "MEDIA_EVENTS").await;
    println!(
        "MEDIA_EVENTS after the kill: leader {}, replicas {}",
        info["cluster"]["leader"], info["cluster"]["replicas"]
    );

    // The node comes back and catches up: every replica of both streams current again.
    let healed = Instant::now();
    let node_2 = cluster.lock().unwrap().url(2);
    let restarting = cluster.clone();
    tokio::task::spawn_blocking(move || restarting.lock().unwrap().restart(0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for stream in ["MEDIA_EVENTS", "MEDIA_JOBS"] {
        loop {
            // Asked on a fresh connection to node 2 each time; while the node rejoins, no answer
            // is a "not yet".
            let fresh = mediabus_rpc::connect(&node_2, "fault-heal", 64).await.expect("connect to node 2");
            let info = try_stream_info(&fresh, stream).await.unwrap_or_default();
            let replicas = info["cluster"]["replicas"].as_array().cloned().unwrap_or_default();
            if replicas.len() == 2 && replicas.iter().all(|r| r["current"] == true) {
                break;
            }
            if Instant::now() > deadline {
                // What each node answers, and its log, for the failure message.
                let (urls, logs): (Vec<String>, Vec<String>) = {
                    let cluster = cluster.lock().unwrap();
                    (0..3).map(|i| (cluster.url(i), cluster.log_tail(i))).unzip()
                };
                for (i, (url, log)) in urls.iter().zip(&logs).enumerate() {
                    let fresh = mediabus_rpc::connect(url, "fault-diagnosis", 64).await.unwrap();
                    eprintln!(
                        "node {i} on {stream}: {:?}\nlog of node {i}:\n{log}",
                        try_stream_info(&fresh, stream).await
                    );
                }
                panic!("{stream} replicas not current: {info}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!("node restarted and both streams fully replicated again in {:?}", healed.elapsed());
}

/// `$JS.API.STREAM.INFO.<stream>` with per-subject counts (raw JetStream API).
async fn stream_info(nats: &async_nats::Client, stream: &str) -> Value {
    let info = try_stream_info(nats, stream).await.unwrap_or_else(|| panic!("no info on {stream} within 2 s"));
    assert!(info.get("error").is_none(), "{stream}: {info}");
    info
}

/// [`stream_info`], `None` without an answer within 2 s.
async fn try_stream_info(nats: &async_nats::Client, stream: &str) -> Option<Value> {
    let body = json!({"subjects_filter": ">"}).to_string();
    let request = nats.request(format!("$JS.API.STREAM.INFO.{stream}"), body.into_bytes().into());
    let reply = tokio::time::timeout(Duration::from_secs(2), request).await.ok()?.ok()?;
    serde_json::from_slice(&reply.payload).ok()
}

/// Uploads `png` as alice through `upload_file` and polls `media.findOne` until the processor
/// has made it READY (its job went through MEDIA_JOBS).
async fn upload_until_ready(client: &RpcClient, png: &[u8]) {
    let client = RpcClient::new(client.nats().clone()).with_timeout(Duration::from_secs(30));
    let bearer = format!("Bearer {}", dev_token("alice"));
    let file = json!({"buffer": base64::engine::general_purpose::STANDARD.encode(png), "originalname": "tiny.png"});
    let media = call_as(&client, &bearer, "upload_file", json!({"file": file})).await.expect("upload");
    let id = media["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let media = call_as(&client, &bearer, "media.findOne", json!({"id": id})).await.expect("findOne");
        match media["status"].as_str() {
            Some("READY") => return,
            Some("PROCESSING") if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => panic!("upload did not become READY: {media}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_server_gets_workers_and_the_bridge_back_within_seconds() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let media_env = worker_env(&nats.url(), "media", &nats.password("media"), dir.path(), "1");
    let _workers: Vec<WorkerProcess> = (0..2).map(|_| spawn("media-service", &media_env)).collect();
    let mut bridge_env = worker_env(&nats.url(), "bridge", &nats.password("bridge"), dir.path(), "1");
    bridge_env.retain(|(k, _)| !k.starts_with("MEDIABUS__STORE__") && !k.starts_with("MEDIABUS__JETSTREAM__"));
    bridge_env.push(("MEDIABUS__HTTP__LISTEN".into(), "127.0.0.1:0".into()));
    bridge_env.push(("MEDIABUS__HTTP__REQUEST_TIMEOUT_MS".into(), "2000".into()));
    // The 503s and 504s of the outage are expected: not logged.
    bridge_env.push(("RUST_LOG".into(), "error,tower_http=off".into()));
    let bridge = spawn("http-bridge", &bridge_env);
    let port = bridge.ready_port();
    let bearer = format!("Bearer {}", dev_token("alice"));
    let created = call(
        port,
        "POST",
        "/api/media",
        &[("authorization", &bearer), ("content-type", "application/json")],
        json!({"originalName": "a.png", "mimeType": "image/png", "size": 1, "url": "https://example.com/a.png"})
            .to_string(),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let id = created.json()["id"].as_str().unwrap().to_owned();

    // 8 HTTP clients for 8 s; the server is killed at 2 s and started again on its port.
    let start = Instant::now();
    let records = Arc::new(Mutex::new(Vec::<Record>::new()));
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let (records, bearer, id) = (records.clone(), bearer.clone(), id.clone());
            tokio::spawn(async move {
                let mut n = task;
                while start.elapsed() < Duration::from_secs(8) {
                    n += 1;
                    let path = if n % 2 == 0 { format!("/api/media/{id}") } else { "/api/media?limit=5".to_owned() };
                    let started = start.elapsed();
                    let reply = tokio::time::timeout(
                        Duration::from_secs(3),
                        call(port, "GET", &path, &[("authorization", &bearer)], ""),
                    )
                    .await;
                    let (ok, error) = match reply {
                        Ok(reply) if reply.status == 200 => (true, String::new()),
                        Ok(reply) => (false, format!("{path}: {}", reply.status)),
                        Err(_) => (false, format!("{path}: no reply in 3 s")),
                    };
                    records.lock().unwrap().push(Record { started, finished: start.elapsed(), ok, error });
                }
            })
        })
        .collect();
    let nats = Arc::new(Mutex::new(nats));
    tokio::time::sleep_until((start + Duration::from_secs(2)).into()).await;
    let server = nats.clone();
    let killed = start.elapsed();
    let restarted = tokio::task::spawn_blocking(move || {
        let mut server = server.lock().unwrap();
        server.kill();
        server.resume();
        start.elapsed()
    })
    .await
    .unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let records = records.lock().unwrap();
    let failed = records.iter().filter(|r| !r.ok).count();
    let (started, ended) = last_failure(&records, killed);
    println!(
        "nats-server restart: {} HTTP requests at concurrency 8, {failed} failed; killed at {killed:?}, listening \
         again {:?} later; the last failing request started at {started:+.3} s and failed at {ended:+.3} s from the kill",
        records.len(),
        restarted - killed
    );
    let late: Vec<_> = records.iter().filter(|r| !r.ok && r.started > restarted + RECOVERY).map(|r| &r.error).collect();
    assert!(late.is_empty(), "errors more than {RECOVERY:?} after the restart: {late:?}");
    assert!(records.iter().any(|r| r.ok && r.started > restarted + RECOVERY), "served after the restart");
}
