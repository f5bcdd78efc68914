//! media-bench: the media service under load, next to baselines measured in the same run.
//!
//! 1. `media.findOne` (SQLite store, token checked, access rule applied) vs the framework's echo
//!    subject given the same request (body and Authorization header): throughput and latency at
//!    concurrency 64; and, for reference, vs echo of the body alone.
//! 2. Scale-out: `media.findOne` throughput at concurrency 64 with 1, 2 and 3 media-service
//!    processes sharing the SQLite file (one queue group), each figure against the 1-member one
//!    (target: it must not fall as members are added).
//! 3. A 256 MiB chunked upload over NATS (binary `upload.part`s of `partSize`, 4 in flight) vs
//!    `cp` of the same file on the same disk, in MiB/s; and the worker's peak RSS meanwhile.
//!
//! Usage: `media-bench [--seconds N] [--only findone|scale|upload]` (`--upload-only` = `--only
//! upload`), run by `scripts/bench` (which builds the release binaries
//! `media-service` and `test-worker` next to this one).

use std::io::Read;
use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{
    ROUNDS, Target, compare, connect_clients, measure, peak_rss_kib, report, seconds_arg, sibling_bin, summary,
    write_video,
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
    let args: Vec<String> = std::env::args().collect();
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    let only = if args.iter().any(|a| a == "--upload-only") { Some("upload") } else { only };
    let run = |section: &str| only.is_none_or(|o| o == section);
    let _echo = WorkerProcess::spawn(&sibling_bin("test-worker"), &url, &["--name", "bench"]);
    let clients = connect_clients(&url).await;
    let rpc = RpcClient::new(clients[0].clone()).with_timeout(std::time::Duration::from_secs(60));
    let token = mediabus_e2e::dev_token("bench-user");
    let mut auth = HeaderMap::new();
    auth.insert("Authorization", format!("Bearer {token}").as_str());

    // 1. findOne vs echo; 2. scale-out.
    if run("findone") || run("scale") {
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
        if run("findone") {
            println!(
                "media.findOne (SQLite, private media, owner's token) vs echo of the same request, {ROUNDS} alternating \
             rounds of {seconds} s"
            );
            println!("{:<11} {:>5} {:>12} {:>9} {:>9}", "subject", "conc", "req/s", "p50 µs", "p99 µs");
            let c = compare(&clients, &echo, &find_one, 64, seconds).await;
            report(64, "echo", "findOne", &c);
            println!("target: findOne throughput >= 0.75 of echo");
            let what = "media.findOne (SQLite), conc 64";
            summary(what, c.other.throughput, "req/s", "echo, same request and header", Some(c.ratio()), ">= 0.75");
            // For reference: echo without the header, the framework's bare round trip.
            let mut bare = echo.clone();
            bare.headers = HeaderMap::new();
            report(64, "echo (bare)", "findOne", &compare(&clients, &bare, &find_one, 64, seconds).await);
        }
        if run("scale") {
            scale_out(&clients, &find_one, &env, seconds).await;
        }
    }
    if !run("upload") {
        return;
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
    let what = "chunked upload over NATS, 256 MiB";
    summary(what, mib / upload_secs, "MiB/s", "cp on the same disk", Some(cp_secs / upload_secs), ">= 0.3");
    println!(
        "         parts {parts_secs:.2} s, upload.complete (assemble, hash, fsync) {:.2} s",
        upload_secs - parts_secs
    );
    println!(
        "worker peak RSS {:.1} MiB (before the upload {:.1} MiB; target < 64 MiB)",
        rss_peak as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    summary("media worker peak RSS, 256 MiB upload", rss_peak as f64 / 1024.0, "MiB", "-", None, "< 64");
}

/// findOne throughput at concurrency 64 with 1, 2 and 3 media-service members (the first is
/// already running), [`ROUNDS`] rounds each, the median round reported; a row and a summary line
/// per member count, its ratio to the 1-member figure.
async fn scale_out(clients: &[async_nats::Client], find_one: &Target, env: &[(&str, &str)], seconds: u64) {
    println!(
        "\nscale-out: media.findOne at concurrency 64 by media-service members (one SQLite file), median of {ROUNDS} \
         rounds of {seconds} s, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<11} {:>12} {:>9} {:>9} {:>10}", "members", "req/s", "p50 µs", "p99 µs", "vs 1");
    let mut extra = Vec::new();
    let mut one = 0.0;
    for members in 1..=3 {
        if members > 1 {
            // READY is printed once subscribed: the new member takes its share from the next request.
            extra.push(WorkerProcess::spawn_with_env(&sibling_bin("media-service"), env, &[]));
        }
        let mut rounds: Vec<_> = Vec::new();
        for _ in 0..ROUNDS {
            rounds.push(measure(clients, find_one, 64, seconds).await);
        }
        rounds.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        let m = &rounds[rounds.len() / 2];
        if members == 1 {
            one = m.throughput;
        }
        let ratio = m.throughput / one;
        println!("{members:<11} {:>12.0} {:>9} {:>9} {ratio:>10.2}", m.throughput, m.p50_us, m.p99_us);
        let name = format!("scale-out: findOne, {members} member(s), conc 64");
        summary(&name, m.throughput, "req/s", "1 member", Some(ratio), ">= 1.0 (not falling)");
    }
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
