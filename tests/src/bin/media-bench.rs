//! media-bench: the media service under load, next to baselines measured in the same run.
//!
//! 1. `media.findOne` (SQLite store, token checked, access rule applied) vs the framework's echo
//!    subject given the same request (body and Authorization header): throughput and latency at
//!    concurrency 64; and, for reference, vs echo of the body alone.
//! 2. A 256 MiB chunked upload over NATS (binary `upload.part`s of `partSize`, 4 in flight) vs
//!    `cp` of the same file on the same disk, in MiB/s; and the worker's peak RSS meanwhile.
//!
//! Usage: `media-bench [--seconds N] [--upload-only]`, run by `scripts/bench` (which builds the release binaries
//! `media-service` and `test-worker` next to this one).

use std::io::Read;
use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{
    ROUNDS, Target, compare, connect_clients, peak_rss_kib, report, seconds_arg, sibling_bin, write_video,
};
use mediabus_rpc::RpcClient;
use mediabus_testkit::NatsServer;
use serde_json::{Value, json};

const UPLOAD_MIB: usize = 256;
const PARTS_IN_FLIGHT: usize = 4;

#[tokio::main]
async fn main() {
    let seconds = seconds_arg();
    // Under data/ (git-ignored) on the repository's disk, so `cp` and the file store share it.
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();

    let server = NatsServer::start();
    let url = server.url();
    let (db, files) = (path("media.db"), path("files"));
    let password = server.password("media");
    let env = [
        ("MEDIABUS__NATS__URL", url.as_str()),
        ("MEDIABUS__NATS__PASSWORD", password.as_str()),
        ("MEDIABUS__STORE__PATH", db.as_str()),
        ("MEDIABUS__STORAGE__ROOT", files.as_str()),
    ];
    let media = WorkerProcess::spawn_with_env(&sibling_bin("media-service"), &env, &[]);
    let _echo = WorkerProcess::spawn(&sibling_bin("test-worker"), &url, &["--name", "bench"]);
    let clients = connect_clients(&url).await;
    let rpc = RpcClient::new(clients[0].clone()).with_timeout(std::time::Duration::from_secs(60));
    let token = mediabus_e2e::dev_token("bench-user");
    let mut auth = HeaderMap::new();
    auth.insert("Authorization", format!("Bearer {token}").as_str());

    // 1. findOne vs echo (skipped with `--upload-only`).
    if !std::env::args().any(|a| a == "--upload-only") {
        let created: Value = rpc
            .call_with_headers(
                "media.create",
                &json!({"originalName": "a.png", "mimeType": "image/png", "size": 1, "url": "/a.png"}),
                auth.clone(),
            )
            .await
            .expect("media.create");
        // The same request to both subjects, Authorization header included: the ratio is the cost of
        // what findOne adds to the framework's round trip (token check, store read, access rule, the
        // document as reply).
        let packet = |pattern: &str| {
            let body = json!({"pattern": pattern, "data": {"id": created["id"]}, "id": "6311e0d955b769e75d1e5"});
            let mut target = Target::new(pattern, Bytes::from(body.to_string()));
            target.headers = auth.clone();
            target
        };
        let (find_one, echo) = (packet("media.findOne"), packet("rust.echo"));
        println!(
            "media.findOne (SQLite, private media, owner's token) vs echo of the same request, {ROUNDS} alternating \
             rounds of {seconds} s"
        );
        println!("{:<11} {:>5} {:>12} {:>9} {:>9}", "subject", "conc", "req/s", "p50 µs", "p99 µs");
        report(64, "echo", "findOne", &compare(&clients, &echo, &find_one, 64, seconds).await);
        println!("target: findOne throughput >= 0.75 of echo");
        // For reference: echo without the header, the framework's bare round trip.
        let mut bare = echo.clone();
        bare.headers = HeaderMap::new();
        report(64, "echo (bare)", "findOne", &compare(&clients, &bare, &find_one, 64, seconds).await);
    }

    // 2. Chunked upload vs cp.
    let source = path("source.mp4");
    let checksum = format!("sha256:{}", write_video(&source, UPLOAD_MIB));
    let start = Instant::now();
    let copied = std::process::Command::new("cp").arg(&source).arg(path("copy.mp4")).status().unwrap();
    assert!(copied.success());
    let cp_secs = start.elapsed().as_secs_f64();
    let rss_before = peak_rss_kib(media.id()).unwrap_or(0);

    let start = Instant::now();
    let upload: Value = rpc
        .call_with_headers("upload.create", &json!({"originalName": "big.mp4", "size": UPLOAD_MIB << 20}), auth.clone())
        .await
        .expect("upload.create");
    let upload_id = upload["uploadId"].as_str().unwrap().to_owned();
    let part_size = upload["partSize"].as_u64().unwrap() as usize;
    let mut file = std::fs::File::open(&source).unwrap();
    let parts = std::iter::from_fn(|| {
        let mut buf = vec![0u8; part_size];
        let n = read_full(&mut file, &mut buf);
        (n > 0).then(|| {
            buf.truncate(n);
            Bytes::from(buf)
        })
    });
    futures_util::stream::iter(parts.enumerate())
        .map(|(i, chunk)| {
            let (nats, mut headers, upload_id) = (clients[i % clients.len()].clone(), auth.clone(), upload_id.clone());
            async move {
                headers.insert("Upload-Id", upload_id.as_str());
                headers.insert("Part-Number", (i + 1).to_string().as_str());
                let reply =
                    nats.request_with_headers("upload.part", headers, chunk).await.map_err(|e| e.to_string())?;
                if reply.payload.starts_with(b"{\"err\"") {
                    return Err(String::from_utf8_lossy(&reply.payload).into_owned());
                }
                Ok(())
            }
        })
        .buffer_unordered(PARTS_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .expect("upload.part");
    let parts_secs = start.elapsed().as_secs_f64();
    let done: Value =
        rpc.call_with_headers("upload.complete", &json!({"uploadId": upload_id}), auth).await.expect("upload.complete");
    let upload_secs = start.elapsed().as_secs_f64();
    assert_eq!(done["size"].as_u64(), Some((UPLOAD_MIB as u64) << 20));
    assert_eq!(done["checksum"].as_str(), Some(checksum.as_str()), "uploaded checksum: {done}");
    let rss_peak = peak_rss_kib(media.id()).unwrap_or(0);

    let mib = UPLOAD_MIB as f64;
    println!(
        "\nchunked upload of {UPLOAD_MIB} MiB over NATS ({} MiB parts, {PARTS_IN_FLIGHT} in flight) vs cp on the same disk",
        part_size >> 20,
    );
    println!("cp       {:>8.1} MiB/s", mib / cp_secs);
    println!("upload   {:>8.1} MiB/s   ratio {:.2} (target >= 0.3)", mib / upload_secs, cp_secs / upload_secs);
    println!(
        "         parts {parts_secs:.2} s, upload.complete (assemble, hash, fsync) {:.2} s",
        upload_secs - parts_secs
    );
    println!(
        "worker peak RSS {:.1} MiB (before the upload {:.1} MiB; target < 64 MiB)",
        rss_peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}
