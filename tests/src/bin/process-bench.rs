//! process-bench: end-to-end processing latency (issue 11): from sending `upload_file` with a
//! 12 MP JPEG to receiving its `media.processed` event, over `--uploads N` (default 50) uploads
//! one after another, through a real nats-server, one media-service and one media-processor
//! (release binaries beside this one), on local disk and SQLite. Prints p50, p99 and max, and the
//! time of the upload reply alone (the rest is queueing, decoding, resizing, encoding, writing).
//!
//! Usage: `process-bench [--uploads N]`, run by `scripts/bench` (`--only process`).

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use base64::Engine;
use futures_util::StreamExt;
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{sibling_bin, summary};
use mediabus_rpc::RpcClient;
use mediabus_testkit::NatsServer;
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let uploads: usize = args
        .iter()
        .position(|a| a == "--uploads")
        .and_then(|i| args.get(i + 1))
        .map_or(50, |n| n.parse().expect("--uploads N"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    let photo = path("photo.jpg");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=4000x3000,noise=alls=12:allf=u",
            "-frames:v",
            "1",
        ])
        .args(["-q:v", "3", "-y", &photo])
        .status()
        .expect("run ffmpeg");
    assert!(made.success(), "ffmpeg could not write the 12 MP JPEG");
    let bytes = std::fs::read(&photo).unwrap();
    let buffer = base64::engine::general_purpose::STANDARD.encode(&bytes);

    let server = NatsServer::start();
    let url = server.url();
    let (db, files) = (path("media.db"), path("files"));
    let service = |user: &str| {
        vec![
            ("MEDIABUS__NATS__URL", url.clone()),
            ("MEDIABUS__NATS__USER", user.to_owned()),
            ("MEDIABUS__NATS__PASSWORD", server.password(user)),
            ("MEDIABUS__STORE__PATH", db.clone()),
            ("MEDIABUS__STORAGE__ROOT", files.clone()),
            ("RUST_LOG", "warn".to_owned()),
        ]
    };
    let spawn = |binary: &str, env: Vec<(&str, String)>| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        WorkerProcess::spawn_with_env(&sibling_bin(binary), &env, &[])
    };
    let _media = spawn("media-service", service("media"));
    let _processor = spawn("media-processor", service("processor"));

    // As a backend service would: call upload_file, follow media.processed.
    let nats = mediabus_rpc::NatsSettings::new(&url)
        .with_user("backend", server.password("backend"))
        .connect("process-bench", 1024)
        .await
        .expect("connect as backend");
    let mut processed = nats.subscribe("media.processed").await.expect("subscribe media.processed");
    let rpc = RpcClient::new(nats.clone()).with_timeout(Duration::from_secs(60));
    let mut auth = HeaderMap::new();
    auth.insert("Authorization", format!("Bearer {}", mediabus_e2e::dev_token("bench-user")).as_str());
    let request = json!({"file": {"buffer": buffer, "originalname": "photo.jpg", "mimetype": "image/jpeg"}});

    let (mut total, mut replies) = (Vec::with_capacity(uploads), Vec::with_capacity(uploads));
    for _ in 0..uploads {
        let start = Instant::now();
        let media: Value = rpc.call_with_headers("upload_file", &request, auth.clone()).await.expect("upload_file");
        replies.push(start.elapsed());
        let id = media["id"].as_str().expect("media id").to_owned();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(120), processed.next())
                .await
                .expect("media.processed within 2 minutes")
                .expect("subscription open");
            let event: Value = serde_json::from_slice(&message.payload).expect("event JSON");
            if event["data"]["id"] == id.as_str() {
                assert_eq!(event["data"]["status"], "READY", "processing failed: {event}");
                break;
            }
        }
        total.push(start.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |v: &mut Vec<Duration>, q: f64| {
        v.sort();
        v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
    };
    let (p50, p99, max) = (pick(&mut total, 0.50), pick(&mut total, 0.99), pick(&mut total, 1.0));
    let reply_p50 = pick(&mut replies, 0.50);
    println!(
        "12 MP JPEG ({:.1} MB), {uploads} uploads: upload → media.processed p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
         (upload_file reply alone: p50 {:.0} ms)",
        bytes.len() as f64 / 1e6,
        ms(p50),
        ms(p99),
        ms(max),
        ms(reply_p50)
    );
    summary("upload → media.processed, 12 MP JPEG, p50", ms(p50), "ms", "-", None, "-");
    summary("upload → media.processed, 12 MP JPEG, p99", ms(p99), "ms", "-", None, "-");
}
