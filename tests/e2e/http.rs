//! The bridge over real HTTP, as REST clients use it: the `http-bridge` and two `media-service`
//! processes on a real nats-server (each as its own NATS user), files on local disk. Real media
//! files go up through `POST /api/media/upload` and come back through
//! `GET /api/media/{id}/content` with Range, ETag, Last-Modified, Content-Disposition and
//! Cache-Control; large uploads stream with bounded memory; cut-off and stalled uploads leave
//! nothing behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use mediabus_e2e::bench::{peak_rss_kib, write_video};
use mediabus_e2e::http::{Reply, call, collect, file_body, form_around, form_content_type, send};
use mediabus_e2e::{WorkerProcess, built_bin, dev_token};
use mediabus_testkit::{NatsServer, files_under, media_files};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// How long the bridge waits for a stalled body in these tests, ms.
const BODY_IDLE_MS: u64 = 1500;

/// nats-server, two media workers and the bridge, as processes, sharing `dir`.
struct Stack {
    dir: tempfile::TempDir,
    port: u16,
    media: Vec<WorkerProcess>,
    bridge: WorkerProcess,
    _nats: NatsServer,
}

impl Stack {
    fn start() -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        let (url, files, db) = (nats.url(), files.to_str().unwrap().to_owned(), dir.path().join("media.db"));
        let db = db.to_str().unwrap().to_owned();
        let media_password = nats.password("media");
        let media_env = [
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", "media"),
            ("MEDIABUS__NATS__PASSWORD", media_password.as_str()),
            ("MEDIABUS__STORAGE__ROOT", files.as_str()),
            ("MEDIABUS__STORE__PATH", db.as_str()),
            ("RUST_LOG", "warn"),
        ];
        let media =
            (0..2).map(|_| WorkerProcess::spawn_with_env(&built_bin("media-service"), &media_env, &[])).collect();
        // Port 0: the bridge binds a port of the system's choosing and prints it (no race).
        let listen = "127.0.0.1:0";
        let bridge_password = nats.password("bridge");
        let idle = BODY_IDLE_MS.to_string();
        let bridge_env = [
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", "bridge"),
            ("MEDIABUS__NATS__PASSWORD", bridge_password.as_str()),
            ("MEDIABUS__STORAGE__ROOT", files.as_str()),
            ("MEDIABUS__HTTP__LISTEN", listen),
            ("MEDIABUS__HTTP__BODY_IDLE_TIMEOUT_MS", idle.as_str()),
            ("RUST_LOG", "warn"),
        ];
        let bridge = WorkerProcess::spawn_with_env(&built_bin("http-bridge"), &bridge_env, &[]);
        let port = bridge.ready_port();
        Self { dir, port, media, bridge, _nats: nats }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("authorization", bearer));
        }
        call(self.port, method, path, &all, Bytes::new()).await
    }

    /// Uploads the file at `path` as multipart with `before` fields, the file, then `after` fields.
    async fn upload(&self, token: &str, path: &Path, before: &[(&str, &str)], after: &[(&str, &str)]) -> Reply {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (prefix, suffix) = form_around(before, name, "application/octet-stream", after);
        let length = prefix.len() as u64 + std::fs::metadata(path).unwrap().len() + suffix.len() as u64;
        let request = Request::post("/api/media/upload")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, form_content_type())
            .header(CONTENT_LENGTH, length)
            .body(file_body(path, prefix, suffix).0)
            .unwrap();
        collect(send(self.port, request).await).await
    }

    /// Regular files under the file store's root (objects, parts, temp files).
    fn stored_files(&self) -> Vec<PathBuf> {
        files_under(&self.dir.path().join("files"))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_files_go_up_and_stream_back_with_http_semantics() {
    let stack = Stack::start();
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let mut uploaded = Vec::new();
    for (path, mime, kind) in media_files().all() {
        let bytes = std::fs::read(path).unwrap();
        // Fields before and after the file: both reach the document.
        let reply = stack
            .upload(&alice, path, &[("entityType", "lesson")], &[("entityId", "l1"), ("metadata", r#"{"n":1}"#)])
            .await;
        assert_eq!(reply.status, 201, "{}: {:?}", path.display(), reply.json());
        let media = reply.json();
        assert_eq!(media["mimeType"], mime, "{}", path.display());
        assert_eq!(media["type"], kind);
        assert_eq!(media["size"], bytes.len() as u64);
        assert_eq!(media["checksum"], format!("sha256:{}", sha256_hex(&bytes)));
        assert_eq!((media["entityType"].as_str(), media["entityId"].as_str()), (Some("lesson"), Some("l1")));
        assert_eq!(media["metadata"], serde_json::json!({"n": 1}));
        assert_eq!(media["isPublic"], false);
        uploaded.push((media["id"].as_str().unwrap().to_owned(), bytes, media));
    }
    let all_ids: Vec<&str> = uploaded.iter().map(|(id, ..)| id.as_str()).collect();

    // Listed by user, by entity and by findAll, newest first.
    let newest_first: Vec<&str> = all_ids.iter().rev().copied().collect();
    for path in ["/api/users/alice/media?limit=50", "/api/entities/lesson/l1/media?limit=50", "/api/media?limit=50"] {
        let page = stack.call("GET", path, Some(&alice), &[]).await;
        assert_eq!(page.status, 200, "{path}: {:?}", page.json());
        assert_eq!(ids(&page.json()), newest_first, "{path}");
    }

    // Every file reads back byte for byte, with its headers.
    for (id, bytes, media) in &uploaded {
        let found = stack.call("GET", &format!("/api/media/{id}"), Some(&alice), &[]).await;
        assert_eq!(found.json(), *media);
        let content = stack.call("GET", &format!("/api/media/{id}/content"), Some(&alice), &[]).await;
        assert_eq!(content.status, 200);
        assert!(content.body == bytes[..], "content of {id} differs from the upload");
        assert_eq!(content.header("content-type"), media["mimeType"].as_str().unwrap());
        assert_eq!(content.header("content-length"), bytes.len().to_string());
        assert_eq!(content.header("etag"), format!("\"{}\"", sha256_hex(bytes)));
        assert_eq!(content.header("cache-control"), "private, no-cache");
        assert_eq!(content.header("accept-ranges"), "bytes");
        assert!(!content.header("last-modified").is_empty());
        let name = media["originalName"].as_str().unwrap();
        assert_eq!(
            content.header("content-disposition"),
            format!("inline; filename=\"{name}\"; filename*=UTF-8''{name}")
        );
        assert!(!content.header("x-request-id").is_empty(), "every response carries a request id");
    }

    // Ranges on the video: first bytes, middle, suffix, open-ended; unsatisfiable.
    let (video_id, video, _) = uploaded.iter().find(|(_, _, m)| m["type"] == "VIDEO").unwrap();
    let size = video.len();
    let path = format!("/api/media/{video_id}/content");
    for (range, start, end) in [
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes=1000-{}", 1000 + 4095), 1000, 5095),
        ("bytes=-500".to_owned(), size - 500, size - 1),
        (format!("bytes={}-", size - 10), size - 10, size - 1),
    ] {
        let part = stack.call("GET", &path, Some(&alice), &[("range", &range)]).await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(part.header("content-range"), format!("bytes {start}-{end}/{size}"), "{range}");
        assert!(part.body == video[start..=end], "{range}: wrong bytes");
    }
    let refused = stack.call("GET", &path, Some(&alice), &[("range", &format!("bytes={size}-"))]).await;
    assert_eq!(refused.status, 416);
    assert_eq!(refused.header("content-range"), format!("bytes */{size}"));
    assert_eq!(refused.json()["code"], "RANGE_NOT_SATISFIABLE");

    // Conditional requests: 304 on a matching If-None-Match, 200 on a stale one.
    let etag = format!("\"{}\"", sha256_hex(video));
    let not_modified = stack.call("GET", &path, Some(&alice), &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    assert_eq!(not_modified.header("etag"), etag);
    let stale = stack.call("GET", &path, Some(&alice), &[("if-none-match", "\"0000\"")]).await;
    assert_eq!(stale.status, 200);

    // Private media: 404 for another user and for anonymous callers, on the document and the bytes.
    for token in [Some(bob.as_str()), None] {
        assert_eq!(stack.call("GET", &format!("/api/media/{video_id}"), token, &[]).await.status, 404);
        let content = stack.call("GET", &path, token, &[]).await;
        assert_eq!(content.status, 404);
        assert_eq!(content.json()["code"], "NOT_FOUND");
    }
    let forged = stack.call("GET", &format!("{path}?token=not-a-token"), None, &[]).await;
    assert_eq!(forged.status, 401);

    // A signed content URL works without Authorization (for <video src>), for its media only.
    let ticket = stack.call("GET", &format!("/api/media/{video_id}/content-url"), Some(&alice), &[]).await;
    assert_eq!(ticket.status, 200, "{:?}", ticket.json());
    let url = ticket.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/api/media/{video_id}/content?token=")));
    let by_url = stack.call("GET", &url, None, &[("range", "bytes=0-9")]).await;
    assert_eq!(by_url.status, 206);
    assert!(by_url.body == video[..10]);
    let (other_id, ..) = uploaded.iter().find(|(id, ..)| id != video_id).unwrap();
    let token_param = url.split_once("?token=").unwrap().1;
    let misused = stack.call("GET", &format!("/api/media/{other_id}/content?token={token_param}"), None, &[]).await;
    assert_eq!(misused.status, 401);

    // Made public: anyone reads it, and shared caches may keep it.
    let public = call(
        stack.port,
        "PATCH",
        &format!("/api/media/{video_id}"),
        &[("authorization", &format!("Bearer {alice}")), ("content-type", "application/json")],
        r#"{"isPublic":true}"#,
    )
    .await;
    assert_eq!(public.status, 200, "{:?}", public.json());
    let anonymous = stack.call("GET", &path, None, &[]).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.header("cache-control"), "public, max-age=300");
    assert!(anonymous.body == video[..]);

    // Deleted: 404 everywhere, for the owner too.
    assert_eq!(stack.call("DELETE", &format!("/api/media/{video_id}"), Some(&alice), &[]).await.status, 200);
    assert_eq!(stack.call("GET", &format!("/api/media/{video_id}"), Some(&alice), &[]).await.status, 404);
    assert_eq!(stack.call("GET", &path, Some(&alice), &[]).await.status, 404);
    let page = stack.call("GET", "/api/users/alice/media?limit=50", Some(&alice), &[]).await.json();
    assert!(!ids(&page).contains(&video_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors() {
    let stack = Stack::start();
    let alice = dev_token("alice");
    let png = &media_files().png;

    let anonymous = {
        let (prefix, suffix) = form_around(&[], "a.png", "image/png", &[]);
        let body = [prefix, Bytes::from(std::fs::read(png).unwrap()), suffix].concat();
        call(stack.port, "POST", "/api/media/upload", &[("content-type", &form_content_type())], body).await
    };
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.json());

    let auth = format!("Bearer {alice}");
    let not_form =
        call(stack.port, "POST", "/api/media/upload", &[("authorization", &auth), ("content-type", "image/png")], "x")
            .await;
    assert_eq!((not_form.status.as_u16(), not_form.json()["code"].as_str()), (415, Some("UNSUPPORTED_MEDIA_TYPE")));

    let no_file = {
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"entityId\"\r\n\r\nx\r\n--{b}--\r\n",
            b = mediabus_e2e::http::BOUNDARY
        );
        call(
            stack.port,
            "POST",
            "/api/media/upload",
            &[("authorization", &auth), ("content-type", &form_content_type())],
            body,
        )
        .await
    };
    assert_eq!(no_file.status, 400, "{:?}", no_file.json());

    let bad_field = stack.upload(&alice, png, &[("isPublic", "maybe")], &[]).await;
    assert_eq!(bad_field.status, 400, "{:?}", bad_field.json());
    let unknown_field = stack.upload(&alice, png, &[("owner", "bob")], &[]).await;
    assert_eq!(unknown_field.status, 400, "{:?}", unknown_field.json());

    // An executable named .png is typed by its bytes and refused.
    let dir = tempfile::tempdir().unwrap();
    let elf = dir.path().join("cat.png");
    std::fs::copy(built_bin("http-bridge"), &elf).unwrap();
    let refused = stack.upload(&alice, &elf, &[], &[]).await;
    assert_eq!(refused.status, 415, "{:?}", refused.json());
    assert_eq!(refused.json()["code"], "UNSUPPORTED_MEDIA_TYPE");

    let page = stack.call("GET", "/api/users/alice/media", Some(&alice), &[]).await.json();
    assert_eq!(page["total"], 0, "no refused upload created a document: {page}");
    assert_eq!(stack.stored_files(), Vec::<PathBuf>::new(), "no refused upload left bytes");
}

/// A 300 MiB video through the chunked path: bridge and workers stay under 100 MiB each, and the
/// bytes read back equal the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mib_upload_streams_with_bounded_memory() {
    let stack = Stack::start();
    let alice = dev_token("alice");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.mp4");
    let expected = write_video(&path, 300);

    let reply = stack.upload(&alice, &path, &[("entityType", "course")], &[("entityId", "c300")]).await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let media = reply.json();
    assert_eq!(media["size"], 300u64 << 20);
    assert_eq!(media["checksum"], format!("sha256:{expected}"));
    assert_eq!(media["entityId"], "c300");

    let request = Request::get(format!("/api/media/{}/content", media["id"].as_str().unwrap()))
        .header(AUTHORIZATION, format!("Bearer {alice}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send(stack.port, request).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut hasher, mut received) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
            hasher.update(&data);
        }
    }
    assert_eq!(received, 300 << 20);
    assert_eq!(hex::encode(hasher.finalize()), expected, "the bytes read back differ");

    let limit_kib = 100 * 1024;
    let bridge_kib = peak_rss_kib(stack.bridge.id()).unwrap();
    assert!(bridge_kib < limit_kib, "bridge peak RSS {bridge_kib} KiB");
    for worker in &stack.media {
        let kib = peak_rss_kib(worker.id()).unwrap();
        assert!(kib < limit_kib, "media worker peak RSS {kib} KiB");
    }
    println!(
        "peak RSS: bridge {bridge_kib} KiB, workers {:?} KiB",
        stack.media.iter().map(|w| peak_rss_kib(w.id())).collect::<Vec<_>>()
    );
}

/// A client that goes away halfway through a chunked upload, and one that stalls: no document, no
/// parts, no temp files remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_and_stalled_uploads_leave_nothing_behind() {
    let stack = Stack::start();
    let alice = dev_token("alice");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.mp4");
    write_video(&path, 40);
    let file = std::fs::read(&path).unwrap();

    for stall in [false, true] {
        let (prefix, suffix) = form_around(&[], "half.mp4", "video/mp4", &[]);
        let length = prefix.len() + file.len() + suffix.len();
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", stack.port)).await.unwrap();
        let head = format!(
            "POST /api/media/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Content-Type: {}\r\nContent-Length: {length}\r\n\r\n",
            form_content_type()
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(&prefix).await.unwrap();
        // 20 MiB: well past the first parts of the chunked upload.
        socket.write_all(&file[..20 << 20]).await.unwrap();
        if stall {
            // The bridge gives up after the idle timeout and answers 408.
            let mut reply = Vec::new();
            let read = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut reply);
            let _ = tokio::time::timeout(Duration::from_millis(BODY_IDLE_MS * 4), read).await;
            let reply = String::from_utf8_lossy(&reply);
            assert!(reply.starts_with("HTTP/1.1 408"), "stalled upload: {reply}");
            assert!(reply.contains("REQUEST_TIMEOUT"), "{reply}");
        }
        drop(socket);

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = stack.stored_files();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "stall={stall}: left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let page = stack.call("GET", "/api/users/alice/media", Some(&alice), &[]).await.json();
    assert_eq!(page["total"], 0, "{page}");
}
