//! The processing queue end to end, with the real binaries: a nats-server (each process as its
//! own NATS user of nats/permissions.conf), a `media-service` and `media-processor` workers
//! sharing one SQLite file and one file store, real media made by ffmpeg.
//!
//! Needs the binaries built: `cargo build --bins -p media-processor -p media-service`
//! (`scripts/test` builds every binary first).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use base64::Engine;
use futures_util::StreamExt;
use mediabus_rpc::{RpcClient, RpcError};
use mediabus_storage::StorageConfig;
use mediabus_testkit::{NatsServer, SeaweedS3, files_under, media_files};
use serde_json::{Value, json};

/// The W3C trace context every request of these tests carries.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// How long a job may take in these tests before a wait fails.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

/// A worker process, killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `binary` with `env` and waits for it to print `READY`.
    fn spawn(binary: &Path, env: &[(String, String)]) -> Self {
        let mut child = Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "{} did not start", binary.display());
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Peak resident memory (VmHWM), KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Pids of this process's `ffmpeg` children.
    fn ffmpeg_children(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            if comm == "ffmpeg" && ppid == Some(self.pid()) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// nats-server, one media-service, processors, and a client, sharing a temp dir.
struct Stack {
    nats: NatsServer,
    dir: tempfile::TempDir,
    _media: Proc,
    processors: Vec<Proc>,
    client: async_nats::Client,
    rpc: RpcClient,
    /// `MEDIABUS__STORAGE__*` of every process (empty: the local store under `dir/files`).
    storage: Vec<(&'static str, String)>,
}

impl Stack {
    /// The stack with `processors` processors configured by `extra` (`MEDIABUS__JOBS__...`).
    async fn start(processors: usize, extra: &[(&str, &str)]) -> Self {
        Self::start_on(Vec::new(), processors, extra).await
    }

    /// [`Stack::start`] with every process on the file store `storage` (`MEDIABUS__STORAGE__*`).
    async fn start_on(storage: Vec<(&'static str, String)>, processors: usize, extra: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut media_env = env(&nats, dir.path(), "media", &[]);
        media_env.extend(storage.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let media = Proc::spawn(&sibling_bin("media-service"), &media_env);
        let client = async_nats::connect(nats.url()).await.unwrap();
        let rpc = RpcClient::new(client.clone()).with_timeout(Duration::from_secs(30));
        let mut stack = Self { nats, dir, _media: media, processors: Vec::new(), client, rpc, storage };
        for _ in 0..processors {
            stack.add_processor(extra);
        }
        stack
    }

    fn add_processor(&mut self, extra: &[(&str, &str)]) {
        let mut env = env(&self.nats, self.dir.path(), "processor", extra);
        env.extend(self.storage.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.processors.push(Proc::spawn(Path::new(env!("CARGO_BIN_EXE_media-processor")), &env));
    }

    /// Calls `subject` as `user` (a dev token), with [`TRACEPARENT`].
    async fn call(&self, subject: &str, user: Option<&str>, data: Value) -> Result<Value, RpcError> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        if let Some(user) = user {
            headers.insert("Authorization", format!("Bearer {}", token(user)).as_str());
        }
        self.rpc.call_with_headers(subject, &data, headers).await
    }

    /// Uploads `bytes` as `name` through `upload_file`, as `user`.
    async fn upload(&self, user: &str, name: &str, bytes: &[u8]) -> Value {
        let file = json!({"buffer": base64::engine::general_purpose::STANDARD.encode(bytes), "originalname": name});
        self.call("upload_file", Some(user), json!({"file": file})).await.expect("upload")
    }

    async fn find(&self, user: &str, id: &str) -> Value {
        self.call("media.findOne", Some(user), json!({"id": id})).await.expect("findOne")
    }

    /// Polls `media.findOne` until the media is `READY` or `FAILED`.
    async fn settled(&self, user: &str, id: &str) -> Value {
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            let media = self.find(user, id).await;
            if media["status"] == "READY" || media["status"] == "FAILED" {
                return media;
            }
            assert!(Instant::now() < deadline, "{id} still {} after {JOB_DEADLINE:?}", media["status"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Files of the shared file store whose path contains `part`.
    fn stored(&self, part: &str) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("files")).into_iter().filter(|p| p.to_string_lossy().contains(part)).collect()
    }
}

/// The environment of a worker as `user` on `nats`, with files and documents under `dir`.
fn env(nats: &NatsServer, dir: &Path, user: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("MEDIABUS__ENV", "dev".to_owned()),
        ("MEDIABUS__NATS__URL", nats.url()),
        ("MEDIABUS__NATS__USER", user.to_owned()),
        ("MEDIABUS__NATS__PASSWORD", nats.password(user)),
        ("MEDIABUS__STORAGE__ROOT", dir.join("files").to_string_lossy().into_owned()),
        ("MEDIABUS__STORE__PATH", dir.join("media.db").to_string_lossy().into_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env
}

/// A binary of the workspace built next to this test.
fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(path.exists(), "{} is missing: cargo build --bins -p media-service", path.display());
    path
}

/// An hour-long access token for `user`: role `admin` for the user named `admin`, `user` for
/// any other; signed with the development key of services/media-service/defaults.toml.
fn token(user: &str) -> String {
    let key = mediabus_auth::SigningKeyConfig::hs256("dev", "dev-only-secret-change-me-0123456789abcdef");
    let signer = mediabus_auth::Signer::new(&key, "mediabus", "mediabus-api").unwrap();
    let role = if user == "admin" { mediabus_auth::Role::Admin } else { mediabus_auth::Role::User };
    signer.sign(user, &[role], Duration::from_secs(3600)).unwrap().0
}

/// Whether process `pid` has ended: gone, or a zombie its new parent has not reaped yet.
fn ended(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    let state = stat.rfind(')').and_then(|close| stat[close + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Polls until every process of `pids` has ended (the children of a killed processor die with it).
async fn wait_ended(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(alive) = pids.iter().find(|&&pid| !ended(pid)) {
        assert!(Instant::now() < deadline, "ffmpeg {alive} outlived its killed processor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Inode and modification time of `path`: both change when a variant is written again (the file
/// store writes a temp file and renames it over the old one).
fn file_stamp(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.modified().unwrap())
}

/// The shared consumer's info, as an operator reads it (`nats consumer info`).
async fn consumer_info(client: &async_nats::Client) -> async_nats::jetstream::consumer::Info {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("MEDIA_JOBS").await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("media-processor").await.unwrap();
    consumer.info().await.unwrap().clone()
}

/// Subject of JetStream's max-deliveries advisories for the job consumer, captured by the stream
/// `MEDIA_JOBS_EXHAUSTED`.
const ADVISORY_SUBJECT: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MEDIA_JOBS.media-processor";

/// The advisories stored in `MEDIA_JOBS_EXHAUSTED` (handled ones included: limits retention).
async fn advisories_stored(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("MEDIA_JOBS_EXHAUSTED").await.unwrap().info().await.unwrap().state.messages
}

/// Polls the processors' consumer of `MEDIA_JOBS_EXHAUSTED` until every advisory was delivered
/// and acked (the last step of a handling), and returns its info.
async fn advisories_settled(client: &async_nats::Client) -> async_nats::jetstream::consumer::Info {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("MEDIA_JOBS_EXHAUSTED").await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("media-processor").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = consumer.info().await.unwrap().clone();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return info;
        }
        assert!(Instant::now() < deadline, "advisories not all acked: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The jobs left in the work queue `MEDIA_JOBS`.
async fn jobs_left(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("MEDIA_JOBS").await.unwrap().info().await.unwrap().state.messages
}

/// Counts `media.processed` per media id, as published.
struct Processed {
    sub: async_nats::Subscriber,
    seen: Vec<Value>,
}

impl Processed {
    async fn watch(client: &async_nats::Client) -> Self {
        let sub = client.subscribe("media.processed").await.unwrap();
        client.flush().await.unwrap();
        Self { sub, seen: Vec::new() }
    }

    /// The events received so far (waiting up to `within` for at least `at_least` for `id`).
    async fn of(&mut self, id: &str, at_least: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let count = self.seen.iter().filter(|m| m["data"]["id"] == id).count();
            if count >= at_least {
                // Drain what is already here, without waiting.
                while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), self.sub.next()).await {
                    self.seen.push(serde_json::from_slice(&msg.payload).unwrap());
                }
                return self.seen.iter().filter(|m| m["data"]["id"] == id).cloned().collect();
            }
            match tokio::time::timeout_at(deadline, self.sub.next()).await {
                Ok(Some(msg)) => self.seen.push(serde_json::from_slice(&msg.payload).unwrap()),
                _ => return self.seen.iter().filter(|m| m["data"]["id"] == id).cloned().collect(),
            }
        }
    }
}

fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-y", "-nostdin", "-loglevel", "error"])
        .args(args)
        .arg(out)
        .status()
        .expect("ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg failed for {}", out.display());
}

/// A `width`×`height` H.264 + AAC MP4 of `seconds` (testsrc and a sine).
fn mp4(dir: &Path, name: &str, width: u32, height: u32, seconds: u32) -> Vec<u8> {
    let out = dir.join(name);
    let size = format!("testsrc=size={width}x{height}:rate=25");
    let t = seconds.to_string();
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &size,
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            &t,
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "30",
            "-c:a",
            "aac",
            "-shortest",
        ],
        &out,
    );
    std::fs::read(out).unwrap()
}

/// A PNG whose header declares `width`×`height` (RGB, 8 bits) followed by a few bytes of data: a
/// decompression bomb's shape, refused before any pixel is allocated.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: a few bytes only.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn variant_names(media: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        media["variants"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// Uploads of an image, a PDF and audio are `PROCESSING` at once, then `READY` with their
/// details and variants, each with exactly one `media.processed`; a media registered by URL is
/// not processed. A backend following the `media.*` events sees them without the caller's
/// `Authorization`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_processed_once_and_events_carry_no_credentials() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let backend = async_nats::ConnectOptions::new()
        .user_and_password("backend".into(), stack.nats.password("backend"))
        .connect(stack.nats.url())
        .await
        .unwrap();
    // Each event subject rather than `media.*`: nats/permissions.conf lets `backend` subscribe to
    // the events only, since `media.*` would also deliver other callers' requests (and tokens).
    let mut events = futures_util::stream::select_all(
        futures_util::future::join_all(
            ["media.created", "media.updated", "media.removed", "media.processed"].map(|s| backend.subscribe(s)),
        )
        .await
        .into_iter()
        .map(Result::unwrap),
    );
    backend.flush().await.unwrap();

    let files = media_files();
    let mut uploaded = Vec::new();
    for (path, kind) in [(&files.png, "png"), (&files.pdf, "pdf"), (&files.wav, "wav")] {
        let media = stack.upload("alice", &format!("sample.{kind}"), &std::fs::read(path).unwrap()).await;
        assert_eq!(media["status"], "PROCESSING", "{kind}: {media}");
        assert_eq!(media["failureReason"], Value::Null);
        uploaded.push((kind, media["id"].as_str().unwrap().to_owned()));
    }
    for (kind, id) in &uploaded {
        let media = stack.settled("alice", id).await;
        assert_eq!(media["status"], "READY", "{kind}: {media}");
        assert_eq!(media["failureReason"], Value::Null);
        let details = &media["details"];
        match *kind {
            "png" => {
                assert_eq!((details["width"].as_u64(), details["height"].as_u64()), (Some(160), Some(120)));
                assert_eq!(details["orientation"], 1);
                assert!(details["thumbhash"].as_str().is_some_and(|h| !h.is_empty()));
                assert_eq!(variant_names(&media), ["preview", "thumb"]);
                let thumb = media["variants"].as_array().unwrap().iter().find(|v| v["name"] == "thumb").unwrap();
                assert_eq!(thumb["url"], format!("/api/media/{id}/content?variant=thumb"));
                assert_eq!((thumb["mimeType"].as_str(), thumb["width"].as_u64()), (Some("image/webp"), Some(160)));
                assert!(thumb["size"].as_u64().unwrap() > 0);
                assert_eq!(stack.stored(&format!("variants/{id}/")).len(), 2, "thumb.webp and preview.jpg");
            }
            "pdf" => {
                assert_eq!(details["pageCount"], 1);
                assert_eq!(variant_names(&media), ["thumb"]);
            }
            _ => {
                assert!(details["durationMs"].as_u64().unwrap().abs_diff(1000) <= 100, "{details}");
                assert!(media["variants"].as_array().unwrap().is_empty());
            }
        }
        let events = processed.of(id, 1, Duration::from_secs(5)).await;
        assert_eq!(events.len(), 1, "{kind}: one media.processed");
        assert_eq!(events[0]["pattern"], "media.processed");
        assert_eq!(events[0]["data"]["status"], "READY");
        assert!(events[0].get("id").is_none(), "an event packet has no id");
    }

    // media.create (a URL) is READY and gets no job.
    let by_url =
        json!({"originalName": "a.png", "mimeType": "image/png", "size": 3, "url": "https://example.com/a.png"});
    let by_url = stack.call("media.create", Some("alice"), by_url).await.unwrap();
    assert_eq!(by_url["status"], "READY");

    // The backend saw media.created and media.processed, never with credentials; the trace
    // context of a request travels on.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, events.next()).await else { break };
        let headers = msg.headers.clone().unwrap_or_default();
        assert!(
            headers.iter().all(|(k, _)| !AsRef::<str>::as_ref(k).eq_ignore_ascii_case("authorization")),
            "{} carries an Authorization header",
            msg.subject
        );
        let traceparent = headers.get("traceparent").map(|v| v.as_str().to_owned());
        assert_eq!(traceparent.as_deref(), Some(TRACEPARENT), "{} carries the request's trace context", msg.subject);
        seen.insert(msg.subject.to_string());
    }
    assert!(seen.contains("media.created") && seen.contains("media.processed"), "{seen:?}");
}

/// A PNG declaring 100000×100000 pixels ends `FAILED` with a readable reason while the
/// processor stays small; a truncated MP4 ends `FAILED`; reprocessing is for the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_fail_cleanly_and_reprocess_is_for_the_owner() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let bomb = stack.upload("alice", "bomb.png", &png_declaring(100_000, 100_000)).await;
    let bomb_id = bomb["id"].as_str().unwrap();
    let failed = stack.settled("alice", bomb_id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let reason = failed["failureReason"].as_str().expect("a reason");
    assert!(reason.contains("100000") && reason.to_lowercase().contains("pixel"), "readable: {reason}");
    let peak = stack.processors[0].peak_rss_kib();
    assert!(peak < 256 * 1024, "processor peak RSS {peak} KiB");
    eprintln!("processor peak RSS after the 100000×100000 PNG: {} MiB", peak / 1024);
    assert_eq!(processed.of(bomb_id, 1, Duration::from_secs(5)).await[0]["data"]["status"], "FAILED");

    let dir = tempfile::tempdir().unwrap();
    let whole = mp4(dir.path(), "whole.mp4", 320, 240, 2);
    let truncated = stack.upload("alice", "cut.mp4", &whole[..whole.len() * 3 / 5]).await;
    let cut = stack.settled("alice", truncated["id"].as_str().unwrap()).await;
    assert_eq!(cut["status"], "FAILED", "{cut}");
    assert!(cut["failureReason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(cut["variants"].as_array().unwrap().is_empty());

    // Reprocess: others get 404 (a private media), anonymous 401; the owner requeues it, and
    // the run ends again with one more media.processed.
    let not_found = stack.call("media.reprocess", Some("bob"), json!({"id": bomb_id})).await.unwrap_err();
    assert_eq!(not_found.status, 404);
    assert_eq!(stack.call("media.reprocess", None, json!({"id": bomb_id})).await.unwrap_err().status, 401);
    let again = stack.call("media.reprocess", Some("alice"), json!({"id": bomb_id})).await.unwrap();
    assert_eq!((again["status"].as_str(), again["failureReason"].as_str()), (Some("PROCESSING"), None));
    let failed_again = stack.settled("alice", bomb_id).await;
    assert_eq!(failed_again["failureReason"].as_str(), Some(reason));
    assert_eq!(processed.of(bomb_id, 2, Duration::from_secs(10)).await.len(), 2);
    // An admin may reprocess another user's private media.
    let by_admin = stack.call("media.reprocess", Some("admin"), json!({"id": bomb_id})).await.unwrap();
    assert_eq!(by_admin["status"], "PROCESSING", "{by_admin}");
    assert_eq!(stack.settled("alice", bomb_id).await["failureReason"].as_str(), Some(reason));
    assert_eq!(processed.of(bomb_id, 3, Duration::from_secs(10)).await.len(), 3);
}

/// SIGKILL a processor in the middle of a transcode: its ffmpeg dies with it (parent-death
/// signal), the job is redelivered to the other one (after the short ack wait configured here)
/// and completed there without redoing the poster variants the first one saved; the document ends
/// `READY` once, with one set of variants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processor_hands_its_video_to_the_other() {
    let quick = [("MEDIABUS__JOBS__ACK_WAIT_SECS", "4"), ("MEDIABUS__JOBS__BACKOFF_BASE_MS", "200")];
    let mut stack = Stack::start(2, &quick).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let media = stack.upload("alice", "clip.mp4", &video).await;
    let id = media["id"].as_str().unwrap().to_owned();

    // Wait until one processor is transcoding (its ffmpeg runs), then kill it.
    let deadline = Instant::now() + JOB_DEADLINE;
    let (victim, orphans) = loop {
        let busy = stack.processors.iter().position(|p| !p.ffmpeg_children().is_empty());
        let doc = stack.find("alice", &id).await;
        if let Some(i) = busy
            && variant_names(&doc).contains(&"thumb".to_owned())
        {
            break (i, stack.processors[i].ffmpeg_children());
        }
        assert_ne!(doc["status"], "READY", "finished before a processor could be killed");
        assert!(Instant::now() < deadline, "no processor started transcoding");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let poster: Vec<(PathBuf, _)> = ["thumb.webp", "preview.jpg"]
        .iter()
        .map(|file| {
            let path = stack.dir.path().join("files/variants").join(&id).join(file);
            let stamp = file_stamp(&path);
            (path, stamp)
        })
        .collect();
    stack.processors[victim].kill();
    wait_ended(&orphans).await;

    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    for (path, stamp) in &poster {
        assert_eq!(&file_stamp(path), stamp, "{} was written again by the redelivered job", path.display());
    }
    // Each delivery takes a consumer sequence: two or more means the job was redelivered.
    assert!(consumer_info(&stack.client).await.delivered.consumer_sequence >= 2, "the job was redelivered");
    assert_eq!(variant_names(&done), ["hls", "preview", "thumb"]);
    let hls = done["variants"].as_array().unwrap().iter().find(|v| v["name"] == "hls").unwrap();
    assert_eq!(hls["url"], format!("/api/media/{id}/hls/master.m3u8"));
    assert_eq!((hls["width"].as_u64(), hls["height"].as_u64()), (Some(1280), Some(720)));
    assert!(done["details"]["durationMs"].as_u64().unwrap().abs_diff(12_000) <= 100);
    assert_eq!(stack.stored(&format!("variants/{id}/hls/master.m3u8")).len(), 1);
    assert!(!stack.stored(&format!("variants/{id}/hls/360p/")).is_empty());
    let events = processed.of(&id, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "READY once: {events:?}");
}

/// A job whose original is gone fails on every delivery: after `max_deliver` (2 here) it is in
/// the dead-letter stream and the media is `FAILED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_failing_ends_in_the_dead_letters() {
    let mut stack = Stack::start(0, &[]).await;
    let media = stack.upload("alice", "frame.png", &std::fs::read(&media_files().png).unwrap()).await;
    let id = media["id"].as_str().unwrap().to_owned();
    // The job waits in the stream; break it by removing the original's bytes.
    for file in stack.stored("") {
        std::fs::remove_file(file).unwrap();
    }
    stack.add_processor(&[("MEDIABUS__JOBS__MAX_DELIVER", "2"), ("MEDIABUS__JOBS__BACKOFF_BASE_MS", "100")]);
    let failed = stack.settled("alice", &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(failed["failureReason"].as_str().unwrap().contains("reprocess"));

    let js = async_nats::jetstream::new(stack.client.clone());
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(id.as_str()), Some(2)));
    assert!(dead["error"].as_str().unwrap().contains("not found"), "{dead}");
    // The work queue is empty: the job was acked once dead-lettered.
    let mut jobs = js.get_stream("MEDIA_JOBS").await.unwrap();
    assert_eq!(jobs.info().await.unwrap().state.messages, 0);
}

/// SIGTERM in the middle of a transcode with no grace period: the processor hands the job back
/// (a nak: with an ack wait of 300 s, only a nak lets another worker have it within the test's
/// deadline) and exits 0 at once; another processor started afterwards completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_the_job_back_and_exits_zero() {
    // Every processor sets the shared consumer's config when it starts: both get the long wait.
    let slow = [("MEDIABUS__JOBS__SHUTDOWN_GRACE_SECS", "0"), ("MEDIABUS__JOBS__ACK_WAIT_SECS", "300")];
    let mut stack = Stack::start(1, &slow).await;
    assert_eq!(consumer_info(&stack.client).await.config.ack_wait, Duration::from_secs(300));
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + JOB_DEADLINE;
    while stack.processors[0].ffmpeg_children().is_empty() {
        assert_ne!(stack.find("alice", &id).await["status"], "READY", "finished before SIGTERM");
        assert!(Instant::now() < deadline, "the processor never started transcoding");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = stack.processors.remove(0);
    let term = Command::new("kill").arg("-TERM").arg(first.pid().to_string()).status().unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    let status = first.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(stopped.elapsed() < Duration::from_secs(10), "took {:?} to stop", stopped.elapsed());
    assert_eq!(stack.find("alice", &id).await["status"], "PROCESSING");

    stack.add_processor(&slow);
    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    assert_eq!(variant_names(&done), ["hls", "preview", "thumb"]);
}

/// A processor SIGKILLed on the job's last delivery (`max_deliver` 1 here) never reports back:
/// JetStream's max-deliveries advisory makes the other processor give the job up. The media ends
/// `FAILED` with a readable reason, the dead letter is in `MEDIA_JOBS_DLQ`, `media.processed`
/// (FAILED) is emitted once, the job leaves the work queue, and the killed processor's ffmpeg
/// died with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_on_the_last_delivery_dead_letters_the_job() {
    let last = [("MEDIABUS__JOBS__MAX_DELIVER", "1"), ("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")];
    let mut stack = Stack::start(2, &last).await;
    assert_eq!(consumer_info(&stack.client).await.config.max_deliver, 1);
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + JOB_DEADLINE;
    let (victim, children) = loop {
        if let Some(i) = stack.processors.iter().position(|p| !p.ffmpeg_children().is_empty()) {
            break (i, stack.processors[i].ffmpeg_children());
        }
        assert_ne!(stack.find("alice", &id).await["status"], "READY", "finished before a processor could be killed");
        assert!(Instant::now() < deadline, "no processor started ffmpeg");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stack.processors[victim].kill();
    wait_ended(&children).await;

    assert_given_up(&stack, &mut processed, &id).await;
}

/// The only processor is SIGKILLed on the job's last delivery (`max_deliver` 1): JetStream's
/// max-deliveries advisory is published while no processor is connected, and kept by
/// `MEDIA_JOBS_EXHAUSTED`. A processor started only after that gives the job up: the media ends
/// `FAILED` with a readable reason, one dead letter, one `media.processed`, the job gone from the
/// work queue, the advisory acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_published_while_no_processor_runs_is_handled_by_the_next_one() {
    let last = [("MEDIABUS__JOBS__MAX_DELIVER", "1"), ("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")];
    let mut stack = Stack::start(1, &last).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 12);
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();

    let deadline = Instant::now() + JOB_DEADLINE;
    while stack.processors[0].ffmpeg_children().is_empty() {
        assert_ne!(stack.find("alice", &id).await["status"], "READY", "finished before the processor could be killed");
        assert!(Instant::now() < deadline, "the processor never started ffmpeg");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let children = stack.processors[0].ffmpeg_children();
    stack.processors.remove(0).kill();
    wait_ended(&children).await;

    // No processor runs now: wait for JetStream to give up the delivery (after the 3 s ack wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    while advisories_stored(&stack.client).await == 0 {
        assert!(Instant::now() < deadline, "no max-deliveries advisory in MEDIA_JOBS_EXHAUSTED");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stack.find("alice", &id).await["status"], "PROCESSING");
    assert_eq!(jobs_left(&stack.client).await, 1, "the job out of deliveries waits in the work queue");

    stack.add_processor(&last);
    assert_given_up(&stack, &mut processed, &id).await;
    let info = advisories_settled(&stack.client).await;
    assert_eq!(info.delivered.stream_sequence, 1, "{info:?}");
}

/// How a job abandoned on its last delivery (`max_deliver` 1) ends: media `id` `FAILED` with a
/// readable reason, the job removed from the work queue (the give-up's last step), one dead
/// letter saying it was never acked, one `media.processed`.
async fn assert_given_up(stack: &Stack, processed: &mut Processed, id: &str) {
    let failed = stack.settled("alice", id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let reason = failed["failureReason"].as_str().expect("a reason");
    assert!(reason.contains("stopped") && reason.contains("media.reprocess"), "readable: {reason}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_left(&stack.client).await > 0 {
        assert!(Instant::now() < deadline, "the job out of deliveries is still in MEDIA_JOBS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = async_nats::jetstream::new(stack.client.clone());
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter");
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(id), Some(1)));
    assert!(dead["error"].as_str().unwrap().contains("never acked"), "{dead}");
    let events = processed.of(id, 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1, "FAILED once: {events:?}");
    assert_eq!(events[0]["data"]["status"], "FAILED");
}

/// A job longer than the ack wait (3 s here, so a heartbeat every second) is kept by its worker
/// through `AckKind::Progress`: JetStream never redelivers it, and it ends `READY` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_job_from_being_redelivered() {
    let stack = Stack::start(2, &[("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    // About 10 s of work on one core: several ack waits.
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 24);
    let started = Instant::now();
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();
    let done = stack.settled("alice", &id).await;
    let took = started.elapsed();
    assert_eq!(done["status"], "READY", "{done}");
    // Without heartbeats a job this long would have been delivered again (to the idle worker).
    assert!(took > Duration::from_secs(6), "the job took only {took:?}: too short to prove the heartbeats");
    // One delivery in all (each takes a consumer sequence), acked.
    let info = consumer_info(&stack.client).await;
    assert_eq!((info.delivered.consumer_sequence, info.num_ack_pending), (1, 0), "{info:?}");
    assert_eq!(processed.of(&id, 1, Duration::from_secs(5)).await.len(), 1, "READY once");
}

/// The processor on the S3 file store (SeaweedFS), shared with the media service: an uploaded
/// image ends `READY`, and its `thumb` and `preview` are objects in the bucket (of the sizes the
/// document records), with nothing written to the local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_go_to_the_s3_store() {
    let s3 = SeaweedS3::start();
    let config = StorageConfig::S3 {
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        bucket: "mediabus-processor-test".into(),
        access_key: "test".into(),
        secret_key: "test".into(),
    };
    let storage = vec![
        ("MEDIABUS__STORAGE__BACKEND", "s3".to_owned()),
        ("MEDIABUS__STORAGE__ENDPOINT", s3.endpoint()),
        ("MEDIABUS__STORAGE__REGION", "us-east-1".to_owned()),
        ("MEDIABUS__STORAGE__BUCKET", "mediabus-processor-test".to_owned()),
        ("MEDIABUS__STORAGE__ACCESS_KEY", "test".to_owned()),
        ("MEDIABUS__STORAGE__SECRET_KEY", "test".to_owned()),
    ];
    let stack = Stack::start_on(storage, 1, &[]).await;
    let id = stack.upload("alice", "frame.png", &std::fs::read(&media_files().png).unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    assert_eq!(variant_names(&done), ["preview", "thumb"]);

    let blobs = config.open().await.unwrap();
    for (variant, file) in [("thumb", "thumb.webp"), ("preview", "preview.jpg")] {
        let recorded = done["variants"].as_array().unwrap().iter().find(|v| v["name"] == variant).unwrap();
        let object = blobs.head(&format!("variants/{id}/{file}")).await.expect("the variant is in the bucket");
        assert_eq!(Some(object.size), recorded["size"].as_u64(), "{variant}");
    }
    assert!(stack.stored("").is_empty(), "nothing on the local disk: {:?}", stack.stored(""));
}

/// The max-deliveries advisory handler gives up only jobs still pending, and each once: with
/// the consumer paused (jobs stay in the queue), an advisory for a job whose media was removed
/// meanwhile only deletes the job (no dead letter, no event); one for a pending job fails its
/// media once, and the same advisory again changes nothing. Every advisory ends acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisories_give_up_only_pending_jobs_and_only_once() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let pause = json!({"pause_until": "2999-01-01T00:00:00Z"});
    let paused = stack
        .client
        .request("$JS.API.CONSUMER.PAUSE.MEDIA_JOBS.media-processor", serde_json::to_vec(&pause).unwrap().into())
        .await
        .unwrap();
    let paused: Value = serde_json::from_slice(&paused.payload).unwrap();
    assert_eq!(paused["paused"], true, "{paused}");
    let js = async_nats::jetstream::new(stack.client.clone());
    let png = std::fs::read(&media_files().png).unwrap();
    let mut queued = Vec::new();
    for name in ["removed.png", "pending.png"] {
        let id = stack.upload("alice", name, &png).await["id"].as_str().unwrap().to_owned();
        let seq = js.get_stream("MEDIA_JOBS").await.unwrap().info().await.unwrap().state.last_sequence;
        queued.push((id, seq));
    }
    let [(removed, removed_seq), (pending, pending_seq)] = <[_; 2]>::try_from(queued).unwrap();
    stack.call("media.remove", Some("alice"), json!({"id": removed})).await.unwrap();
    // Published as JetStream would, and stored by MEDIA_JOBS_EXHAUSTED (its ack says so).
    let advise = |seq: u64| {
        let advisory = json!({"type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": "MEDIA_JOBS",
            "consumer": "media-processor", "stream_seq": seq, "deliveries": 5});
        let js = js.clone();
        async move {
            let ack = js.publish(ADVISORY_SUBJECT, serde_json::to_vec(&advisory).unwrap().into()).await.unwrap();
            assert_eq!(ack.await.unwrap().stream, "MEDIA_JOBS_EXHAUSTED");
        }
    };

    advise(pending_seq).await;
    let failed = stack.settled("alice", &pending).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(failed["failureReason"].as_str().unwrap().contains("stopped"), "{failed}");
    // The same advisory again, then the removed media's: one processor handles them in order, so
    // once the second job is gone from the queue both were handled.
    advise(pending_seq).await;
    advise(removed_seq).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while jobs_left(&stack.client).await > 0 {
        assert!(Instant::now() < deadline, "the removed media's job is still queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut dlq = js.get_stream("MEDIA_JOBS_DLQ").await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1, "one dead letter: the pending job's");
    let dead = dlq.get_last_raw_message_by_subject("jobs.media.dead").await.unwrap();
    let dead: Value = serde_json::from_slice(&dead.payload).unwrap();
    assert_eq!((dead["job"]["mediaId"].as_str(), dead["deliveries"].as_u64()), (Some(pending.as_str()), Some(5)));
    assert_eq!(processed.of(&pending, 1, Duration::from_secs(5)).await.len(), 1, "FAILED once");
    assert!(processed.of(&removed, 0, Duration::ZERO).await.is_empty(), "nothing for the removed media");
    let info = advisories_settled(&stack.client).await;
    assert_eq!(info.delivered.stream_sequence, 3, "all three advisories taken: {info:?}");
}
