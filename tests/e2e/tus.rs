//! tus 1.0 resumable uploads (`/api/uploads`, DESIGN §11) over real HTTP: two `http-bridge`
//! processes and two `media-service` workers on a real nats-server, files on local disk.
//!
//! - a real client, PyPI `tuspy` (tests/tus/tus_client.py): an upload cut with `stop_at` on one
//!   bridge and resumed through the other, byte-equal when read back;
//! - every extension over raw HTTP: creation, creation-with-upload, checksum (sha1, sha256; 460),
//!   termination, expiration (a bridge with a 1 s expiry), offset conflicts (409), version (412),
//!   auth (401) and ownership (404), sniffing at completion;
//! - 1 GiB generated as a stream, in PATCHes of odd sizes, with the bridge's peak RSS bounded;
//! - `/openapi.json` lists the endpoint; byte and open-upload quotas give 413 `QUOTA_EXCEEDED`;
//! - an abandoned upload is swept (tus state and parts) without any request;
//! - the tuspy resume again with files and tus state in S3 (SeaweedFS).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use hyper::Request;
use hyper::body::Frame;
use mediabus_e2e::bench::peak_rss_kib;
use mediabus_e2e::http::{Reply, call, collect, send};
use mediabus_e2e::{WorkerProcess, built_bin, dev_token};
use mediabus_testkit::{NatsServer, SeaweedS3, repo_root};
use sha2::{Digest, Sha256};

const TUS: (&str, &str) = ("tus-resumable", "1.0.0");
const OCTETS: (&str, &str) = ("content-type", "application/offset+octet-stream");
const MIB: usize = 1 << 20;
const S3_BUCKET: &str = "mediabus-tus";

/// What a [`Stack`] runs with beyond its defaults.
#[derive(Default)]
pub(crate) struct Options<'a> {
    /// Added to both media workers' environment.
    pub(crate) media_env: &'a [(&'a str, &'a str)],
    /// Added to both bridges' environment.
    pub(crate) bridge_env: &'a [(&'a str, &'a str)],
    /// Added to the second bridge's environment only.
    pub(crate) second_bridge_env: &'a [(&'a str, &'a str)],
    /// Files (and the tus state) in S3, SeaweedFS started for the stack; else on local disk.
    pub(crate) s3: bool,
}

/// nats-server, two media workers and two bridges, sharing one file store (a local directory, or
/// a SeaweedFS bucket) and one SQLite file.
pub(crate) struct Stack {
    dir: tempfile::TempDir,
    pub(crate) ports: Vec<u16>,
    bridges: Vec<WorkerProcess>,
    _media: Vec<WorkerProcess>,
    _nats: NatsServer,
    s3: Option<SeaweedS3>,
}

impl Stack {
    /// Local files; the second bridge with `second_bridge_env` added.
    pub(crate) fn start(second_bridge_env: &[(&str, &str)]) -> Self {
        Self::start_with(Options { second_bridge_env, ..Options::default() })
    }

    pub(crate) fn start_with(options: Options<'_>) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let url = nats.url();
        let files = dir.path().join("files").to_str().unwrap().to_owned();
        let db = dir.path().join("media.db").to_str().unwrap().to_owned();
        let s3 = options.s3.then(SeaweedS3::start);
        let endpoint = s3.as_ref().map(SeaweedS3::endpoint).unwrap_or_default();
        let storage: Vec<(&str, &str)> = if s3.is_some() {
            vec![
                ("MEDIABUS__STORAGE__BACKEND", "s3"),
                ("MEDIABUS__STORAGE__ENDPOINT", endpoint.as_str()),
                ("MEDIABUS__STORAGE__REGION", "us-east-1"),
                ("MEDIABUS__STORAGE__BUCKET", S3_BUCKET),
                ("MEDIABUS__STORAGE__ACCESS_KEY", "test"),
                ("MEDIABUS__STORAGE__SECRET_KEY", "test"),
            ]
        } else {
            vec![("MEDIABUS__STORAGE__ROOT", files.as_str())]
        };
        let media_password = nats.password("media");
        let mut media_env = vec![
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", "media"),
            ("MEDIABUS__NATS__PASSWORD", media_password.as_str()),
            ("MEDIABUS__STORE__PATH", db.as_str()),
            ("RUST_LOG", "warn"),
        ];
        media_env.extend_from_slice(&storage);
        media_env.extend_from_slice(options.media_env);
        let media =
            (0..2).map(|_| WorkerProcess::spawn_with_env(&built_bin("media-service"), &media_env, &[])).collect();
        let bridge_password = nats.password("bridge");
        let (mut ports, mut bridges) = (Vec::new(), Vec::new());
        for i in 0..2 {
            // Port 0: the bridge binds a port of the system's choosing and prints it (no race).
            let listen = "127.0.0.1:0".to_owned();
            let mut env = vec![
                ("MEDIABUS__NATS__URL", url.as_str()),
                ("MEDIABUS__NATS__USER", "bridge"),
                ("MEDIABUS__NATS__PASSWORD", bridge_password.as_str()),
                ("MEDIABUS__HTTP__LISTEN", listen.as_str()),
                ("MEDIABUS__HTTP__BODY_IDLE_TIMEOUT_MS", "3000"),
                ("RUST_LOG", "warn"),
            ];
            env.extend_from_slice(&storage);
            env.extend_from_slice(options.bridge_env);
            if i == 1 {
                env.extend_from_slice(options.second_bridge_env);
            }
            let bridge = WorkerProcess::spawn_with_env(&built_bin("http-bridge"), &env, &[]);
            ports.push(bridge.ready_port());
            bridges.push(bridge);
        }
        Self { dir, ports, bridges, _media: media, _nats: nats, s3 }
    }

    /// Keys under `prefix` in the file store, sorted: objects in the S3 bucket (listed over plain
    /// HTTP: SeaweedFS without identities serves anonymous requests), or local files.
    async fn stored_keys(&self, prefix: &str) -> Vec<String> {
        let Some(s3) = &self.s3 else { return self.files_under(prefix) };
        let port: u16 = s3.endpoint().rsplit(':').next().unwrap().parse().unwrap();
        let path = format!("/{S3_BUCKET}?list-type=2&prefix={prefix}");
        let reply = call(port, "GET", &path, &[], Bytes::new()).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let listing = String::from_utf8_lossy(&reply.body);
        let mut keys: Vec<String> = listing
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect();
        keys.sort();
        keys
    }

    /// Files under `relative` in the local file store (recursively), sorted; none if it is absent.
    fn files_under(&self, relative: &str) -> Vec<String> {
        let root = self.dir.path().join("files");
        let mut found = Vec::new();
        let mut stack = vec![root.join(relative)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                } else {
                    found.push(entry.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        found.sort();
        found
    }

    /// A tus request to bridge `bridge` with `Tus-Resumable: 1.0.0`, the token and `headers`.
    pub(crate) async fn tus(
        &self,
        bridge: usize,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let bearer = format!("Bearer {token}");
        let mut all = vec![TUS, ("authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        call(self.ports[bridge], method, path, &all, body).await
    }

    /// PATCH `bytes` at `offset`, with `extra` headers.
    async fn patch(
        &self,
        bridge: usize,
        url: &str,
        token: &str,
        offset: usize,
        bytes: &[u8],
        extra: &[(&str, &str)],
    ) -> Reply {
        let offset = offset.to_string();
        let mut headers = vec![OCTETS, ("upload-offset", offset.as_str())];
        headers.extend_from_slice(extra);
        self.tus(bridge, "PATCH", url, token, &headers, Bytes::copy_from_slice(bytes)).await
    }

    /// The bytes of media `id`, whole.
    async fn content(&self, id: &str, token: &str) -> Bytes {
        let bearer = format!("Bearer {token}");
        let reply = call(
            self.ports[0],
            "GET",
            &format!("/api/media/{id}/content"),
            &[("authorization", &bearer)],
            Bytes::new(),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
        reply.body
    }
}

/// `key base64(value),...`
fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k} {}", STANDARD.encode(v))).collect::<Vec<_>>().join(",")
}

/// `mib` MiB that sniff as `video/mp4`: an `ftyp` box, then pseudo-random bytes; byte `i` is
/// the same whichever range it is generated in ([`video_range`]).
fn video_range(start: usize, len: usize) -> Vec<u8> {
    const FTYP: &[u8; 24] = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2";
    let mut out = Vec::with_capacity(len);
    let (first_word, last_word) = (start / 8, (start + len).div_ceil(8));
    for word in first_word..last_word {
        // splitmix64 of the word index: fast, incompressible, position-addressable.
        let mut z = (word as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    let skip = start - first_word * 8;
    let mut out = out[skip..skip + len].to_vec();
    for (i, byte) in out.iter_mut().enumerate() {
        if let Some(f) = FTYP.get(start + i) {
            *byte = *f;
        } else {
            break;
        }
    }
    out
}

fn sha1_b64(bytes: &[u8]) -> String {
    // sha1 is not a dependency of the tests: the bridge's own algorithm list is checked against
    // a digest computed by Python's hashlib instead.
    let output = std::process::Command::new(repo_root().join(".venv/bin/python"))
        .arg("-c")
        .arg("import sys,hashlib,base64; print(base64.b64encode(hashlib.sha1(sys.stdin.buffer.read()).digest()).decode())")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .expect("python sha1");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn sha256_b64(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

/// tuspy uploads part of a file through bridge 0 (`stop_at`), stops, and finishes it through
/// bridge 1; the media reads back byte-equal, with the metadata it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_resumes_an_upload_through_another_bridge() {
    tuspy_resumes_across_bridges(&Stack::start(&[])).await;
}

/// The same with the files, the media service's parts and the tus state in S3 (SeaweedFS): the
/// state store works on S3 (pending bytes, atomic `info.json` rewrites, listing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_resumes_an_upload_through_another_bridge_on_s3() {
    tuspy_resumes_across_bridges(&Stack::start_with(Options { s3: true, ..Options::default() })).await;
}

async fn tuspy_resumes_across_bridges(stack: &Stack) {
    let alice = dev_token("alice");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lecture.mp4");
    let bytes = video_range(0, 12 * MIB + 777);
    std::fs::write(&path, &bytes).unwrap();
    let script = repo_root().join("tests/tus/tus_client.py");
    let python = repo_root().join(".venv/bin/python");
    let run = |args: Vec<String>| {
        let output = std::process::Command::new(&python).arg(&script).args(&args).output().expect("run tuspy");
        assert!(output.status.success(), "tuspy {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("tuspy prints JSON")
    };
    let file = path.to_str().unwrap().to_owned();
    let stop_at = 7 * MIB + 123;
    let endpoint = format!("http://127.0.0.1:{}/api/uploads", stack.ports[0]);
    let started =
        run(vec!["start".into(), endpoint, alice.clone(), file.clone(), stop_at.to_string(), (3 * MIB).to_string()]);
    assert_eq!(started["offset"], stop_at);
    let url = started["url"].as_str().unwrap();
    let upload_path = url.split_once("/api/").map(|(_, p)| format!("/api/{p}")).unwrap();
    // The state of the cut upload, in the file store the bridges share (S3 or local).
    let id = upload_path.rsplit('/').next().unwrap();
    let keys = [format!("tus/{id}/info.json"), format!("tus/{id}/pending-{stop_at}")];
    assert_eq!(stack.stored_keys(&format!("tus/{id}/")).await, keys);

    let other = format!("http://127.0.0.1:{}{upload_path}", stack.ports[1]);
    let resumed = run(vec!["resume".into(), other, alice.clone(), file, (2 * MIB).to_string()]);
    assert_eq!(resumed["resumedAt"], stop_at, "the second bridge reports the first one's offset");
    assert_eq!(resumed["offset"], bytes.len());
    let media_id = resumed["headers"]["media-id"].as_str().expect("Media-Id on the completing PATCH").to_owned();
    assert_eq!(resumed["headers"]["media-url"], format!("/api/media/{media_id}"));

    assert_eq!(stack.content(&media_id, &alice).await, bytes, "the bytes read back differ");
    let bearer = format!("Bearer {alice}");
    let media =
        call(stack.ports[1], "GET", &format!("/api/media/{media_id}"), &[("authorization", &bearer)], Bytes::new())
            .await;
    let media = media.json();
    assert_eq!(media["originalName"], "lecture.mp4");
    assert_eq!(media["mimeType"], "video/mp4");
    assert_eq!(media["entityType"], "course");
    assert_eq!(media["entityId"], "tus1");
    assert_eq!(media["isPublic"], false);
    assert_eq!(media["metadata"], serde_json::json!({"source": "tuspy"}));
    assert_eq!(media["checksum"], format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));

    // HEAD on a finished upload, on either bridge: the same media.
    for bridge in 0..2 {
        let head = stack.tus(bridge, "HEAD", &upload_path, &alice, &[], Bytes::new()).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("upload-offset"), bytes.len().to_string());
        assert_eq!(head.header("media-id"), media_id);
    }
}

/// Every extension over raw HTTP, on one stack (bridge 1 expires uploads after 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_extension_over_raw_http() {
    let stack = Stack::start(&[("MEDIABUS__TUS__EXPIRY_SECS", "1")]);
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let file = video_range(0, 12 * MIB + 4321);
    let length = file.len().to_string();
    let meta = metadata(&[("filename", "raw.mp4"), ("isPublic", "true"), ("metadata", r#"{"k":"v"}"#)]);

    // OPTIONS: capabilities, no auth.
    let options = call(stack.ports[0], "OPTIONS", "/api/uploads", &[], Bytes::new()).await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("tus-resumable"), "1.0.0");
    assert_eq!(options.header("tus-version"), "1.0.0");
    for extension in ["creation", "creation-with-upload", "termination", "expiration", "checksum"] {
        assert!(options.header("tus-extension").split(',').any(|e| e == extension), "{extension}");
    }
    assert_eq!(options.header("tus-checksum-algorithm"), "sha1,sha256");
    let max: u64 = options.header("tus-max-size").parse().unwrap();

    // Version, auth, size.
    let bearer = format!("Bearer {alice}");
    let created_headers = [("upload-length", length.as_str()), ("upload-metadata", meta.as_str())];
    let no_version =
        call(stack.ports[0], "POST", "/api/uploads", &[("authorization", &bearer), created_headers[0]], Bytes::new())
            .await;
    assert_eq!(no_version.status, 412);
    assert_eq!(no_version.header("tus-version"), "1.0.0");
    let old = call(
        stack.ports[0],
        "POST",
        "/api/uploads",
        &[("tus-resumable", "0.2.2"), ("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(old.status, 412);
    assert_eq!(old.header("tus-resumable"), "1.0.0");
    let anonymous = call(stack.ports[0], "POST", "/api/uploads", &[TUS, created_headers[0]], Bytes::new()).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["status"], 401);
    let forged = stack.tus(0, "POST", "/api/uploads", "not-a-token", &created_headers, Bytes::new()).await;
    assert_eq!(forged.status, 401);
    let too_big = (max + 1).to_string();
    let over = stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", too_big.as_str())], Bytes::new()).await;
    assert_eq!(over.status, 413);

    // creation-with-upload: the first MiB in the POST.
    let mut with_body = created_headers.to_vec();
    with_body.push(OCTETS);
    let created = stack.tus(0, "POST", "/api/uploads", &alice, &with_body, Bytes::copy_from_slice(&file[..MIB])).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.header("tus-resumable"), "1.0.0");
    assert_eq!(created.header("upload-offset"), MIB.to_string());
    assert!(created.header("upload-expires").ends_with(" GMT"), "{}", created.header("upload-expires"));
    let url = created.header("location").to_owned();
    assert!(url.starts_with("/api/uploads/"), "{url}");

    // HEAD (either bridge): offset, length, metadata, no caching.
    let head = stack.tus(1, "HEAD", &url, &alice, &[], Bytes::new()).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("upload-offset"), MIB.to_string());
    assert_eq!(head.header("upload-length"), length);
    assert_eq!(head.header("upload-metadata"), meta);
    assert_eq!(head.header("cache-control"), "no-store");
    assert_eq!(head.header("tus-resumable"), "1.0.0");

    // Nobody else sees or touches it; no token is 401 before any body is read.
    assert_eq!(stack.tus(0, "HEAD", &url, &bob, &[], Bytes::new()).await.status, 404);
    // (Bodies the bridge refuses unread stay small: the client would hit a closed socket.)
    assert_eq!(stack.patch(0, &url, &bob, MIB, &file[MIB..MIB + 10], &[]).await.status, 404);
    assert_eq!(stack.tus(0, "DELETE", &url, &bob, &[], Bytes::new()).await.status, 404);
    let offset = MIB.to_string();
    let anonymous =
        call(stack.ports[0], "PATCH", &url, &[TUS, OCTETS, ("upload-offset", &offset)], Bytes::from_static(b"x")).await;
    assert_eq!(anonymous.status, 401);

    // Offsets must match (409); the body type must be offset+octet-stream (415).
    let conflict = stack.patch(0, &url, &alice, 0, &file[..10], &[]).await;
    assert_eq!(conflict.status, 409, "{:?}", conflict.json());
    let wrong_type = stack
        .tus(
            0,
            "PATCH",
            &url,
            &alice,
            &[("content-type", "application/octet-stream"), ("upload-offset", &offset)],
            Bytes::new(),
        )
        .await;
    assert_eq!(wrong_type.status, 415);

    // Checksums: a mismatch (sha1, sha256) is 460 and keeps nothing; a good one is accepted.
    let next = &file[MIB..6 * MIB + 99]; // crosses the media service's 5 MiB part boundary
    let wrong_sha1 = format!("sha1 {}", sha1_b64(b"something else"));
    let wrong_sha256 = format!("sha256 {}", sha256_b64(b"something else"));
    for wrong in [&wrong_sha1, &wrong_sha256] {
        let refused = stack.patch(0, &url, &alice, MIB, next, &[("upload-checksum", wrong)]).await;
        assert_eq!(refused.status, 460, "{wrong}: {:?}", refused.json());
        assert_eq!(refused.header("tus-resumable"), "1.0.0");
        let head = stack.tus(1, "HEAD", &url, &alice, &[], Bytes::new()).await;
        assert_eq!(head.header("upload-offset"), MIB.to_string(), "nothing of a refused request is kept");
    }
    let unsupported =
        stack.patch(0, &url, &alice, MIB, &next[..10], &[("upload-checksum", "md5 AAAAAAAAAAAAAAAAAAAAAA==")]).await;
    assert_eq!(unsupported.status, 400);
    let good = format!("sha256 {}", sha256_b64(next));
    let accepted = stack.patch(0, &url, &alice, MIB, next, &[("upload-checksum", &good)]).await;
    assert_eq!(accepted.status, 204, "{:?}", accepted.json());
    let at = MIB + next.len();
    assert_eq!(accepted.header("upload-offset"), at.to_string());
    // The next bytes through the other bridge, with sha1.
    let next = &file[at..at + 3 * MIB];
    let good = format!("sha1 {}", sha1_b64(next));
    let accepted = stack.patch(1, &url, &alice, at, next, &[("upload-checksum", &good)]).await;
    assert_eq!(accepted.status, 204, "{:?}", accepted.json());
    let at = at + next.len();
    // The rest completes the upload: Media-Id and Media-Url.
    let done = stack.patch(0, &url, &alice, at, &file[at..], &[]).await;
    assert_eq!(done.status, 204, "{:?}", done.json());
    assert_eq!(done.header("upload-offset"), length);
    let media_id = done.header("media-id").to_owned();
    assert!(!media_id.is_empty(), "the completing PATCH names the media");
    assert_eq!(done.header("media-url"), format!("/api/media/{media_id}"));
    assert_eq!(stack.tus(1, "HEAD", &url, &alice, &[], Bytes::new()).await.header("media-id"), media_id);
    assert_eq!(stack.content(&media_id, &alice).await, file);
    let media = call(stack.ports[0], "GET", &format!("/api/media/{media_id}"), &[], Bytes::new()).await.json();
    assert_eq!((media["isPublic"].clone(), media["metadata"]["k"].clone()), (true.into(), "v".into()));

    // Termination: 204, then the upload is gone for everyone.
    let small = [("upload-length", "4096")];
    let doomed = stack.tus(0, "POST", "/api/uploads", &alice, &small, Bytes::new()).await;
    assert_eq!(doomed.status, 201);
    let doomed = doomed.header("location").to_owned();
    assert_eq!(stack.patch(0, &doomed, &alice, 0, &file[..1000], &[]).await.status, 204);
    // A PATCH past the length is refused before it is read.
    assert_eq!(stack.patch(0, &doomed, &alice, 1000, &file[1000..4097], &[]).await.status, 413);
    let deleted = stack.tus(1, "DELETE", &doomed, &alice, &[], Bytes::new()).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(deleted.header("tus-resumable"), "1.0.0");
    assert_eq!(stack.tus(0, "HEAD", &doomed, &alice, &[], Bytes::new()).await.status, 404);
    assert_eq!(stack.patch(0, &doomed, &alice, 1000, &file[1000..2000], &[]).await.status, 404);

    // Sniffing at completion: bytes of no accepted type end the upload with 415.
    let text = vec![b'a'; 3000];
    let sniffed = stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", "3000"), OCTETS], text).await;
    assert_eq!(sniffed.status, 415, "{:?}", sniffed.json());
    assert!(sniffed.header("location").starts_with("/api/uploads/"));
    assert_eq!(stack.tus(0, "HEAD", sniffed.header("location"), &alice, &[], Bytes::new()).await.status, 404);

    // A body that stalls: 408 after the idle timeout, and what arrived is kept (resumable).
    let total = 8 * MIB;
    let stalled =
        stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", &total.to_string())], Bytes::new()).await;
    let stalled = stalled.header("location").to_owned();
    let sent = 2 * MIB + 5;
    let first = Bytes::copy_from_slice(&file[..sent]);
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(first))])
        .chain(futures_util::stream::pending());
    let request = Request::patch(stalled.as_str())
        .header(TUS.0, TUS.1)
        .header(OCTETS.0, OCTETS.1)
        .header("upload-offset", 0)
        .header("content-length", total)
        .header("authorization", format!("Bearer {alice}"))
        .body(StreamBody::new(body.boxed()))
        .unwrap();
    let reply = collect(send(stack.ports[0], request).await).await;
    assert_eq!(reply.status, 408, "{:?}", reply.json());
    let head = stack.tus(1, "HEAD", &stalled, &alice, &[], Bytes::new()).await;
    assert_eq!(head.header("upload-offset"), sent.to_string(), "the bytes before the stall are kept");
    let done = stack.patch(1, &stalled, &alice, sent, &file[sent..total], &[]).await;
    assert_eq!(done.status, 204, "{:?}", done.json());
    assert_eq!(stack.content(done.header("media-id"), &alice).await, file[..total]);

    // Expiration: bridge 1 gives uploads 1 s; afterwards 410 (then 404), on either bridge.
    let short = stack.tus(1, "POST", "/api/uploads", &alice, &small, Bytes::new()).await;
    assert_eq!(short.status, 201);
    let expires = short.header("upload-expires").to_owned();
    assert!(expires.ends_with(" GMT"), "{expires}");
    let short = short.header("location").to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let gone = loop {
        let head = stack.tus(0, "HEAD", &short, &alice, &[], Bytes::new()).await;
        if head.status != 200 || Instant::now() > deadline {
            break head;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(gone.status, 410, "{:?}", gone.json());
    assert_eq!(stack.patch(1, &short, &alice, 0, &file[..10], &[]).await.status, 404);
}

/// `/openapi.json` documents the endpoint, and quotas (DESIGN §14) hold for tus as for multipart:
/// a creation over the caller's byte quota, or past their open-upload limit, is 413
/// `QUOTA_EXCEEDED` in the contract's error shape, before any state or byte is stored;
/// terminating an upload frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_is_documented_and_held_to_quotas() {
    let quota = (10 * MIB).to_string();
    let media_env = [("MEDIABUS__QUOTA__MAX_BYTES", quota.as_str()), ("MEDIABUS__QUOTA__MAX_OPEN_UPLOADS", "1")];
    let stack = Stack::start_with(Options { media_env: &media_env, ..Options::default() });

    let doc = call(stack.ports[1], "GET", "/openapi.json", &[], Bytes::new()).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    let operations: [(&str, &str, &str, &[&str]); 4] = [
        ("/api/uploads", "post", "201", &["401", "412", "413", "460"]),
        ("/api/uploads/{id}", "head", "200", &["401", "404", "410"]),
        ("/api/uploads/{id}", "patch", "204", &["404", "409", "410", "460"]),
        ("/api/uploads/{id}", "delete", "204", &["401", "404"]),
    ];
    for (path, method, ok, errors) in operations {
        let op = &doc["paths"][path][method];
        assert_eq!(op["tags"], serde_json::json!(["uploads"]), "{method} {path}: {op}");
        assert!(op["security"].as_array().is_some_and(|s| !s.is_empty()), "{method} {path} needs a token");
        assert!(op["responses"][ok]["headers"]["Tus-Resumable"].is_object(), "{method} {path} {ok}");
        for status in errors {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error",
                "{method} {path} {status}"
            );
        }
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(headers.contains(&"Tus-Resumable"), "{method} {path}: {headers:?}");
        let needed = match method {
            "post" => Some("Upload-Length"),
            "patch" => Some("Upload-Offset"),
            _ => None,
        };
        assert!(needed.is_none_or(|h| headers.contains(&h)), "{method} {path}: {headers:?}");
    }

    let alice = dev_token("alice");
    let refused_for_quota = |reply: &Reply| {
        assert_eq!(reply.status, 413, "{:?}", reply.json());
        assert_eq!(reply.header("tus-resumable"), "1.0.0");
        assert_eq!(reply.header("location"), "", "no upload was created");
        let error = reply.json();
        assert_eq!((error["status"].clone(), error["code"].clone()), (413.into(), "QUOTA_EXCEEDED".into()), "{error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    };
    let over = (10 * MIB + 1).to_string();
    let too_big = stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", over.as_str())], Bytes::new()).await;
    refused_for_quota(&too_big);
    // The same over creation-with-upload: refused before the body is read.
    let with_body = [("upload-length", over.as_str()), OCTETS];
    let too_big =
        stack.tus(1, "POST", "/api/uploads", &alice, &with_body, Bytes::copy_from_slice(&video_range(0, MIB))).await;
    refused_for_quota(&too_big);
    assert_eq!(stack.files_under("tus"), Vec::<String>::new(), "a refused creation stores nothing");

    // One upload open at a time: a second is refused; terminating the first frees the slot.
    let small = [("upload-length", "4096")];
    let first = stack.tus(0, "POST", "/api/uploads", &alice, &small, Bytes::new()).await;
    assert_eq!(first.status, 201, "{:?}", first.json());
    refused_for_quota(&stack.tus(1, "POST", "/api/uploads", &alice, &small, Bytes::new()).await);
    // Another user has quotas of their own.
    assert_eq!(stack.tus(1, "POST", "/api/uploads", &dev_token("bob"), &small, Bytes::new()).await.status, 201);
    assert_eq!(stack.tus(1, "DELETE", first.header("location"), &alice, &[], Bytes::new()).await.status, 204);
    assert_eq!(stack.tus(0, "POST", "/api/uploads", &alice, &small, Bytes::new()).await.status, 201);
}

/// An abandoned upload goes without any request: the bridges' sweep (every second, uploads
/// expiring after 2 s) removes its tus state, the media service's sweep (sessions live 4 s) its
/// parts, and the user's open-upload slot is free again. The bridge cannot `upload.abort` from
/// the sweep: that needs the owner's token (or a `service` one, which the bridge may not obtain),
/// so the media service's shorter-than-default TTL stands in for it here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_swept_without_a_request() {
    let media_env = [
        ("MEDIABUS__MEDIA__UPLOAD_TTL_SECS", "4"),
        ("MEDIABUS__MEDIA__SWEEP_INTERVAL_SECS", "1"),
        ("MEDIABUS__QUOTA__MAX_OPEN_UPLOADS", "1"),
    ];
    let bridge_env = [("MEDIABUS__TUS__EXPIRY_SECS", "2"), ("MEDIABUS__TUS__SWEEP_INTERVAL_SECS", "1")];
    let stack = Stack::start_with(Options { media_env: &media_env, bridge_env: &bridge_env, ..Options::default() });
    let alice = dev_token("alice");
    let length = (8 * MIB).to_string();
    // 6 MiB: one 5 MiB part at the media service, 1 MiB pending in the tus state.
    let first = Bytes::copy_from_slice(&video_range(0, 6 * MIB));
    let created =
        stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", length.as_str()), OCTETS], first).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.header("upload-offset"), (6 * MIB).to_string());
    let url = created.header("location").to_owned();
    let id = url.rsplit('/').next().unwrap();
    let state = format!("tus/{id}");
    assert_eq!(stack.files_under(&state), [format!("{state}/info.json"), format!("{state}/pending-{}", 6 * MIB)]);
    assert!(!stack.files_under(".uploads").is_empty(), "the media service holds the first part");

    // No request from here on until both are gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    for what in [state.as_str(), ".uploads"] {
        while !stack.files_under(what).is_empty() {
            assert!(Instant::now() < deadline, "{what} still holds {:?}", stack.files_under(what));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // 404, not 410: the state was gone before this request (one that finds it expired says 410).
    let head = stack.tus(1, "HEAD", &url, &alice, &[], Bytes::new()).await;
    assert_eq!(head.status, 404, "{:?}", head.json());
    let bearer = format!("Bearer {alice}");
    let usage =
        call(stack.ports[0], "GET", "/api/users/alice/usage", &[("authorization", &bearer)], Bytes::new()).await;
    assert_eq!(usage.json()["openUploads"], 0, "{:?}", usage.json());
    let again = stack.tus(1, "POST", "/api/uploads", &alice, &[("upload-length", "4096")], Bytes::new()).await;
    assert_eq!(again.status, 201, "{:?}", again.json());
}

/// 1 GiB generated as a stream, in PATCHes of odd sizes: the bridge's peak RSS stays under
/// 100 MiB and the stored bytes have the generated SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_tus_upload_streams_with_bounded_memory() {
    let stack = Stack::start(&[]);
    let alice = dev_token("alice");
    let total = 1024 * MIB;
    let length = total.to_string();
    let created =
        stack.tus(0, "POST", "/api/uploads", &alice, &[("upload-length", length.as_str())], Bytes::new()).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let url = created.header("location").to_owned();
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let request_len = 300 * MIB + 12_345;
    let mut offset = 0;
    let started = Instant::now();
    let mut last = None;
    while offset < total {
        let len = request_len.min(total - offset);
        let body = generated_body(offset, len, hasher.clone());
        let request = Request::patch(url.as_str())
            .header(TUS.0, TUS.1)
            .header(OCTETS.0, OCTETS.1)
            .header("upload-offset", offset)
            .header("content-length", len)
            .header("authorization", format!("Bearer {alice}"))
            .body(body)
            .unwrap();
        let reply = collect(send(stack.ports[offset / request_len % 2], request).await).await;
        assert_eq!(reply.status, 204, "{:?}", reply.json());
        offset += len;
        assert_eq!(reply.header("upload-offset"), offset.to_string());
        last = Some(reply);
    }
    let elapsed = started.elapsed();
    let media_id = last.unwrap().header("media-id").to_owned();
    assert!(!media_id.is_empty());
    let expected = hex::encode(hasher.lock().unwrap().clone().finalize());
    let bearer = format!("Bearer {alice}");
    let media =
        call(stack.ports[0], "GET", &format!("/api/media/{media_id}"), &[("authorization", &bearer)], Bytes::new())
            .await;
    assert_eq!(media.json()["size"], total);
    assert_eq!(media.json()["checksum"], format!("sha256:{expected}"));

    let limit_kib = 100 * 1024;
    let peaks: Vec<u64> = stack.bridges.iter().map(|b| peak_rss_kib(b.id()).unwrap()).collect();
    println!("1 GiB by tus in {elapsed:?}; bridges' peak RSS {peaks:?} KiB");
    for kib in peaks {
        assert!(kib < limit_kib, "bridge peak RSS {kib} KiB");
    }
}

/// A request body of generated bytes `start..start + len` in 1 MiB frames, hashed into `hasher` as
/// they are produced (requests go in order, so the hash is the file's).
fn generated_body(
    start: usize,
    len: usize,
    hasher: Arc<Mutex<Sha256>>,
) -> StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>> {
    let end = start + len;
    let stream = futures_util::stream::unfold(start, move |at| {
        let hasher = hasher.clone();
        async move {
            if at >= end {
                return None;
            }
            let n = MIB.min(end - at);
            let chunk = video_range(at, n);
            hasher.lock().unwrap().update(&chunk);
            Some((Ok(Frame::data(Bytes::from(chunk))), at + n))
        }
    });
    StreamBody::new(stream.boxed())
}
