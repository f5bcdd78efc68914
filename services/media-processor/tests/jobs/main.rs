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
use mediabus_testkit::{NatsServer, SeaweedS3, files_under, media_files, png_declaring};
use serde_json::{Value, json};

mod faults;
mod outcomes;

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

    /// Pauses the processors' job consumer (JetStream 2.11 consumer pause): uploads queue their
    /// jobs, and no processor takes them.
    async fn pause_jobs(&self) {
        let pause = serde_json::to_vec(&json!({"pause_until": "2999-01-01T00:00:00Z"})).unwrap();
        let paused =
            self.client.request("$JS.API.CONSUMER.PAUSE.MEDIA_JOBS.media-processor", pause.into()).await.unwrap();
        let paused: Value = serde_json::from_slice(&paused.payload).unwrap();
        assert_eq!(paused["paused"], true, "{paused}");
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

/// Polls until every process of `pids` has ended (the children of a killed processor die with
/// it; a stopping one kills them), failing after `within`.
async fn wait_ended(pids: &[u32], within: Duration) {
    let deadline = Instant::now() + within;
    while let Some(alive) = pids.iter().find(|&&pid| !ended(pid)) {
        assert!(Instant::now() < deadline, "ffmpeg {alive} still runs after {within:?}");
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

/// Publishes a max-deliveries advisory (5 deliveries) for the job at `seq` of `MEDIA_JOBS`, as
/// JetStream would, and checks `MEDIA_JOBS_EXHAUSTED` stored it (its ack says so).
async fn advise(js: &async_nats::jetstream::Context, seq: u64) {
    let advisory = json!({"type": "io.nats.jetstream.advisory.v1.max_deliver", "stream": "MEDIA_JOBS",
        "consumer": "media-processor", "stream_seq": seq, "deliveries": 5});
    let ack = js.publish(ADVISORY_SUBJECT, serde_json::to_vec(&advisory).unwrap().into()).await.unwrap();
    assert_eq!(ack.await.unwrap().stream, "MEDIA_JOBS_EXHAUSTED");
}

/// The processors' durable consumer of `MEDIA_JOBS_EXHAUSTED`.
async fn advisory_consumer(client: &async_nats::Client) -> async_nats::jetstream::consumer::PullConsumer {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream("MEDIA_JOBS_EXHAUSTED").await.unwrap().get_consumer("media-processor").await.unwrap()
}

/// Polls the processors' consumer of `MEDIA_JOBS_EXHAUSTED` until every advisory was delivered
/// and acked (the last step of a handling), and returns its info.
async fn advisories_settled(client: &async_nats::Client) -> async_nats::jetstream::consumer::Info {
    let mut consumer = advisory_consumer(client).await;
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

fn variant_names(media: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        media["variants"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}
