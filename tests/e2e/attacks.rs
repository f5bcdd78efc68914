//! Issue 12 items 2, 3, 7, 8 and 9, tried as an attacker would, against `http-bridge` processes
//! in front of a `media-service` process on a real nats-server (files on local disk):
//!
//! - content of an active type (a grant re-signed with `text/html` or SVG) is an attachment in a
//!   CSP sandbox, never a page of the bridge's origin (item 2);
//! - signed content URLs stop working on every bridge, one started afterwards included, once their
//!   media is removed or made private (item 3);
//! - uploads are refused before the body without a valid token, and a never-ending part header
//!   costs a few KiB, not gigabytes, while other clients are served (item 7);
//! - idle connections are capped and closed at the header timeout; h2c is not spoken; a
//!   slow-loris client is cut at the header timeout (item 8);
//! - bodies of every route time out when idle, not after a total time (item 9).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Request;
use mediabus_e2e::bench::peak_rss_kib;
use mediabus_e2e::http::{BOUNDARY, Reply, call, collect, form_around, form_content_type, send};
use mediabus_e2e::{WorkerProcess, built_bin, dev_token};
use mediabus_testkit::{NatsServer, media_files};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The development content-signing secret of both services' defaults.toml: what an attacker who
/// knew it could sign (item 1 keeps it out of production; item 2 limits the damage anyway).
const DEV_CONTENT_SECRET: &str = "dev-only-content-secret-change-me-0123456789";

/// A nats-server, one media worker and the bridges, as processes.
struct Stack {
    nats: NatsServer,
    dir: tempfile::TempDir,
    _media: WorkerProcess,
    bridges: Vec<WorkerProcess>,
}

impl Stack {
    /// The stack with `bridges` bridges, each started with `extra` settings.
    fn start(bridges: usize, extra: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files").to_str().unwrap().to_owned();
        let db = dir.path().join("media.db").to_str().unwrap().to_owned();
        let (url, password) = (nats.url(), nats.password("media"));
        let media_env = [
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", "media"),
            ("MEDIABUS__NATS__PASSWORD", password.as_str()),
            ("MEDIABUS__STORAGE__ROOT", files.as_str()),
            ("MEDIABUS__STORE__PATH", db.as_str()),
            ("RUST_LOG", "warn"),
        ];
        let media = WorkerProcess::spawn_with_env(&built_bin("media-service"), &media_env, &[]);
        let mut stack = Self { nats, dir, _media: media, bridges: Vec::new() };
        for _ in 0..bridges {
            stack.add_bridge(extra);
        }
        stack
    }

    /// Starts one more bridge (it prints READY once listening, after replaying recent events).
    fn add_bridge(&mut self, extra: &[(&str, &str)]) -> u16 {
        let files = self.dir.path().join("files").to_str().unwrap().to_owned();
        let (url, password) = (self.nats.url(), self.nats.password("bridge"));
        let mut env = vec![
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", "bridge"),
            ("MEDIABUS__NATS__PASSWORD", password.as_str()),
            ("MEDIABUS__STORAGE__ROOT", files.as_str()),
            ("MEDIABUS__HTTP__LISTEN", "127.0.0.1:0"),
            ("RUST_LOG", "warn"),
        ];
        env.extend_from_slice(extra);
        let bridge = WorkerProcess::spawn_with_env(&built_bin("http-bridge"), &env, &[]);
        let port = bridge.ready_port();
        self.bridges.push(bridge);
        port
    }

    fn port(&self, bridge: usize) -> u16 {
        self.bridges[bridge].ready_port()
    }

    /// Uploads the test PNG as `user` through bridge 0, with extra form `fields` first.
    async fn upload_png(&self, user: &str, fields: &[(&str, &str)]) -> Value {
        let png = std::fs::read(&media_files().png).unwrap();
        let (prefix, suffix) = form_around(fields, "pic.png", "image/png", &[]);
        let body = [prefix, Bytes::from(png), suffix].concat();
        let reply = call(
            self.port(0),
            "POST",
            "/api/media/upload",
            &[("authorization", &format!("Bearer {}", dev_token(user))), ("content-type", &form_content_type())],
            body,
        )
        .await;
        assert_eq!(reply.status, 201, "{:?}", reply.json());
        reply.json()
    }
}

/// `GET path` on bridge `port` with an optional bearer token.
async fn get(port: u16, path: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
    call(port, "GET", path, &headers, Bytes::new()).await
}

/// A signed content URL (path and query) of media `id` for `token`'s caller (anonymous: `None`).
async fn content_url(port: u16, id: &str, token: Option<&str>) -> String {
    let ticket = get(port, &format!("/api/media/{id}/content-url"), token).await;
    assert_eq!(ticket.status, 200, "{:?}", ticket.json());
    format!("/api/media/{id}/content?token={}", ticket.json()["token"].as_str().unwrap())
}

/// Polls `GET url` on `port` until it answers `status`; panics after 10 s.
async fn until_status(port: u16, url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = get(port, url, None).await.status;
        if got == status {
            return;
        }
        assert!(Instant::now() < deadline, "{url} on port {port} still answers {got}, not {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_of_active_types_is_an_attachment_in_a_sandbox() {
    let stack = Stack::start(1, &[]);
    let port = stack.port(0);
    let media = stack.upload_png("alice", &[]).await;
    let id = media["id"].as_str().unwrap();
    let url = content_url(port, id, Some(&dev_token("alice"))).await;

    let png = get(port, &url, None).await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), "image/png");
    assert!(png.header("content-disposition").starts_with("inline;"), "{}", png.header("content-disposition"));
    assert_eq!(png.header("content-security-policy"), "sandbox");
    assert_eq!(png.header("x-content-type-options"), "nosniff");

    // The grant, re-signed as someone holding the (development) content secret would, claiming an
    // active type: downloaded, sandboxed, never rendered as a page of this origin.
    let signer = mediabus_auth::ContentSigner::new(DEV_CONTENT_SECRET).unwrap();
    let token = url.split("token=").nth(1).unwrap();
    let grant = signer.verify(token, id).unwrap();
    for active in ["text/html", "image/svg+xml", "application/xhtml+xml", "text/html; charset=utf-8"] {
        let forged = mediabus_auth::ContentGrant { mime: active.into(), ..grant.clone() };
        let (forged, _) = signer.sign(forged, Duration::from_secs(60)).unwrap();
        let reply = get(port, &format!("/api/media/{id}/content?token={forged}"), None).await;
        assert_eq!(reply.status, 200, "{active}");
        let disposition = reply.header("content-disposition");
        assert!(disposition.starts_with("attachment;"), "{active}: {disposition}");
        assert_eq!(reply.header("content-security-policy"), "sandbox", "{active}");
        assert_eq!(reply.header("x-content-type-options"), "nosniff", "{active}");
    }
    // A PDF stays inline, in the sandbox too; a revalidation (304) carries the policy as well.
    let pdf = mediabus_auth::ContentGrant { mime: "application/pdf".into(), ..grant.clone() };
    let (pdf, _) = signer.sign(pdf, Duration::from_secs(60)).unwrap();
    let reply = get(port, &format!("/api/media/{id}/content?token={pdf}"), None).await;
    assert!(reply.header("content-disposition").starts_with("inline;"));
    assert_eq!(reply.header("content-security-policy"), "sandbox");
    let etag = png.header("etag").to_owned();
    let revalidated = call(port, "GET", &url, &[("if-none-match", &etag)], Bytes::new()).await;
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("content-security-policy"), "sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_stop_working_once_their_media_is_removed_or_made_private() {
    let mut stack = Stack::start(2, &[]);
    let ports = [stack.port(0), stack.port(1)];
    let alice = dev_token("alice");

    // A public media: its URL, as any visitor (anonymous) got it, works on both bridges.
    let public = stack.upload_png("alice", &[("isPublic", "true")]).await;
    let public_id = public["id"].as_str().unwrap();
    let visitor_url = content_url(ports[0], public_id, None).await;
    // A private one, with its owner's URL.
    let private = stack.upload_png("alice", &[]).await;
    let private_id = private["id"].as_str().unwrap();
    let owner_url = content_url(ports[1], private_id, Some(&alice)).await;
    for port in ports {
        assert_eq!(get(port, &visitor_url, None).await.status, 200);
        assert_eq!(get(port, &owner_url, None).await.status, 200);
    }

    // Made private: the visitor's URL stops working on both bridges; the owner gets a new one.
    let patch = call(
        ports[0],
        "PATCH",
        &format!("/api/media/{public_id}"),
        &[("authorization", &format!("Bearer {alice}")), ("content-type", "application/json")],
        r#"{"isPublic":false}"#,
    )
    .await;
    assert_eq!(patch.status, 200, "{:?}", patch.json());
    for port in ports {
        until_status(port, &visitor_url, 404).await;
    }
    let fresh = content_url(ports[1], public_id, Some(&alice)).await;
    for port in ports {
        assert_eq!(get(port, &fresh, None).await.status, 200, "the owner's new URL");
    }

    // Removed: the owner's URL, issued before, stops working too.
    let removed = call(
        ports[1],
        "DELETE",
        &format!("/api/media/{private_id}"),
        &[("authorization", &format!("Bearer {alice}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(removed.status, 200, "{:?}", removed.json());
    for port in ports {
        until_status(port, &owner_url, 404).await;
    }

    // A bridge started after both changes knows them before it serves anything.
    let late = stack.add_bridge(&[]);
    assert_eq!(get(late, &owner_url, None).await.status, 404);
    assert_eq!(get(late, &visitor_url, None).await.status, 404);
    assert_eq!(get(late, &fresh, None).await.status, 200);
}

/// Headers of a multipart upload that announces 10 GB of body.
fn upload_head(authorization: &str) -> String {
    format!(
        "POST /api/media/upload HTTP/1.1\r\nHost: bridge\r\nAuthorization: {authorization}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000000\r\n\r\n"
    )
}

/// The status of the HTTP/1 response read from `stream` (0 if the connection closed first).
async fn response_status(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Sends a multipart body whose first part's headers never end (`X-Pad: aaaa...`, up to
/// `pad_bytes`, then the connection is held open) with `token`, while reading the answer; returns
/// its status (0: none within 20 s).
async fn endless_part_header(port: u16, token: String, pad_bytes: usize) -> u16 {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let head = upload_head(&format!("Bearer {token}"));
    let sender = tokio::spawn(async move {
        let part = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Pad: ");
        let mut sent = 0usize;
        let chunk = vec![b'a'; 64 * 1024];
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(part.as_bytes()).await.is_err() {
            return sent;
        }
        while sent < pad_bytes {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        // Then hold the connection open, as an attacker would.
        tokio::time::sleep(Duration::from_secs(30)).await;
        sent
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&head).split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    })
    .await
    .unwrap_or(0);
    sender.abort();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_check_the_token_first_and_part_headers_stay_small() {
    let stack = Stack::start(1, &[]);
    let port = stack.port(0);
    let pid = stack.bridges[0].id();

    // A bad token: 401 from the headers alone (not a byte of the announced 10 GB is sent).
    for authorization in ["x", "Bearer x", "Bearer a.b.c", "Basic YTpi"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(upload_head(authorization).as_bytes()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), response_status(&mut stream)).await;
        assert_eq!(status.ok(), Some(401), "{authorization}");
    }

    // A valid token and part headers that never end: 413 after a few KiB, for each of several
    // attackers at once, with bounded memory; other clients are served meanwhile.
    let before = peak_rss_kib(pid).unwrap();
    let token = dev_token("mallory");
    let attacks: Vec<_> = (0..8).map(|_| tokio::spawn(endless_part_header(port, token.clone(), 32 << 20))).collect();
    let started = Instant::now();
    let health = get(port, "/healthz", None).await;
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5), "a normal client waited {:?}", started.elapsed());
    for attack in attacks {
        assert_eq!(attack.await.unwrap(), 413, "the oversized part header is refused");
    }
    let after = peak_rss_kib(pid).unwrap();
    eprintln!("bridge VmHWM: {before} KiB before, {after} KiB after 8 endless part headers");
    assert!(after < before + 48 * 1024, "peak RSS grew from {before} KiB to {after} KiB");

    // The form stays bounded in other ways too: parts, and the file name.
    let bearer = format!("Bearer {token}");
    let headers = [("authorization", bearer.as_str()), ("content-type", &form_content_type())];
    let many: Vec<(&str, &str)> = (0..20).map(|_| ("entityType", "x")).collect();
    let (prefix, suffix) = form_around(&many, "a.png", "image/png", &[]);
    let reply = call(port, "POST", "/api/media/upload", &headers, [prefix, suffix].concat()).await;
    assert_eq!(reply.status, 400, "{:?}", reply.json());
    let long_name = "n".repeat(2000);
    let (prefix, suffix) = form_around(&[], &long_name, "image/png", &[]);
    let reply = call(port, "POST", "/api/media/upload", &headers, [prefix, suffix].concat()).await;
    assert_eq!(reply.status, 400, "{:?}", reply.json());
}

/// Opens a TCP connection to `port` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
}

/// Waits until the server closes `stream` (EOF or reset; any response bytes are skipped); returns
/// when, or `None` if still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 512];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// `GET /healthz` from `from`; the status, or `None` when the connection is refused or closed.
async fn health_from(from: Ipv4Addr, port: u16) -> Option<u16> {
    let mut stream = connect_from(from, port).await.ok()?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n").await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(5), response_status(&mut stream)).await.ok()?;
    (status != 0).then_some(status)
}

const HEADER_TIMEOUT_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed_at_the_header_timeout() {
    let header = HEADER_TIMEOUT_MS.to_string();
    let stack = Stack::start(
        1,
        &[
            ("MEDIABUS__HTTP__HEADER_TIMEOUT_MS", &header),
            ("MEDIABUS__HTTP__MAX_CONNECTIONS", "400"),
            ("MEDIABUS__HTTP__MAX_CONNECTIONS_PER_IP", "300"),
        ],
    );
    let port = stack.port(0);
    let timeout = Duration::from_millis(HEADER_TIMEOUT_MS);

    // 1,000 connections from one address: half silent, half with an h2c preface and SETTINGS.
    let h2c_preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut watched = Vec::new();
    for i in 0..1000 {
        let mut stream = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await.unwrap();
        if i % 2 == 1 {
            // A refused connection may already be closed: the write may fail.
            let _ = stream.write_all(h2c_preface).await;
        }
        watched.push(watch_until_closed(stream));
    }
    // A normal client (another address) is served during the attack.
    assert_eq!(health_from(Ipv4Addr::new(127, 0, 0, 3), port).await, Some(200));
    let (kept, refused, longest) = lifetimes(watched, timeout).await;
    eprintln!("1000 idle connections from one address: {kept} kept until the header timeout, {refused} closed before");
    assert!(kept <= 300, "{kept} connections from one address were kept");
    assert!(kept >= 100, "only {kept} silent connections were kept: the test did not reach the cap");
    assert!(longest < timeout + Duration::from_secs(5), "a connection lasted {longest:?}");

    // The global cap: 100 each from 6 addresses, at most 400 kept; a client may be refused while
    // the cap is full, and is served once the idle connections time out.
    let mut watched = Vec::new();
    for a in 10..16 {
        for _ in 0..100 {
            if let Ok(stream) = connect_from(Ipv4Addr::new(127, 0, 1, a), port).await {
                watched.push(watch_until_closed(stream));
            }
        }
    }
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    while health_from(Ipv4Addr::new(127, 0, 0, 4), port).await != Some(200) {
        assert!(Instant::now() < deadline, "no client served once the idle connections timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (kept, refused, longest) = lifetimes(watched, timeout).await;
    eprintln!("600 idle connections from 6 addresses: {kept} kept, {refused} closed before the header timeout");
    assert!(kept <= 400 && refused >= 200, "{kept} kept, {refused} refused over a cap of 400");
    assert!(longest < timeout + Duration::from_secs(5), "a connection lasted {longest:?}");
}

/// Watches `stream` (opened just now) until the server closes it (15 s at most); the task gives
/// how long it stayed open (`None`: still open).
fn watch_until_closed(mut stream: TcpStream) -> tokio::task::JoinHandle<Option<Duration>> {
    let opened = Instant::now();
    tokio::spawn(async move { closed_within(&mut stream, Duration::from_secs(15)).await.map(|at| at - opened) })
}

/// Of `watched` connections: how many stayed open until about the header `timeout` (kept by the
/// server), how many were closed clearly before it (refused), and the longest life. Panics if one
/// is never closed.
async fn lifetimes(
    watched: Vec<tokio::task::JoinHandle<Option<Duration>>>,
    timeout: Duration,
) -> (usize, usize, Duration) {
    let (mut kept, mut refused, mut longest) = (0, 0, Duration::ZERO);
    for task in watched {
        let life = task.await.unwrap().expect("every idle connection is closed");
        longest = longest.max(life);
        if life >= timeout - Duration::from_millis(100) {
            kept += 1;
        } else {
            refused += 1;
        }
    }
    (kept, refused, longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_is_cut_at_the_header_timeout() {
    let header = HEADER_TIMEOUT_MS.to_string();
    let stack = Stack::start(1, &[("MEDIABUS__HTTP__HEADER_TIMEOUT_MS", &header)]);
    let port = stack.port(0);
    let pid = stack.bridges[0].id();
    let before = peak_rss_kib(pid).unwrap();
    let started = Instant::now();
    let mut lorises = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        lorises.push(tokio::spawn(async move {
            // One byte every 50 ms, for ever: the headers never complete.
            let request = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Slow: ";
            for byte in request.iter().chain(std::iter::repeat(&b'a')) {
                if stream.write_all(&[*byte]).await.is_err() {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
            }
            Instant::now()
        }));
    }
    assert_eq!(get(port, "/healthz", None).await.status, 200, "other clients are served");
    for loris in lorises {
        let cut = loris.await.unwrap() - started;
        assert!(cut < Duration::from_millis(HEADER_TIMEOUT_MS) + Duration::from_secs(4), "cut after {cut:?}");
        assert!(cut >= Duration::from_millis(HEADER_TIMEOUT_MS) - Duration::from_millis(200), "cut after {cut:?}");
    }
    let after = peak_rss_kib(pid).unwrap();
    eprintln!("bridge VmHWM: {before} KiB before, {after} KiB after 50 slow-loris connections");
    assert!(after < before + 32 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_time_out_when_idle_not_after_a_total_time() {
    let stack = Stack::start(1, &[("MEDIABUS__HTTP__BODY_IDLE_TIMEOUT_MS", "1000")]);
    let port = stack.port(0);
    let bearer = format!("Bearer {}", dev_token("alice"));
    let body = r#"{"originalName":"a.png","mimeType":"image/png","size":3,"url":"/a.png"}"#.as_bytes().to_vec();

    // A JSON body trickling in over 3 s, never pausing 1 s: served.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(1);
    let trickle = body.clone();
    tokio::spawn(async move {
        for piece in trickle.chunks(trickle.len().div_ceil(8)) {
            tokio::time::sleep(Duration::from_millis(375)).await;
            if tx.send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(piece)))).await.is_err() {
                return;
            }
        }
    });
    let request = Request::post("/api/media")
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(http_body_util::StreamBody::new(tokio_stream_of(rx)))
        .unwrap();
    let reply = collect(send(port, request).await).await;
    assert_eq!(reply.status, 201, "a slow but steady body: {:?}", reply.json());

    // A body that stops half-way: 408, on a JSON route and on the upload route.
    for (path, content_type) in
        [("/api/media", "application/json".to_owned()), ("/api/media/upload", form_content_type())]
    {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bridge\r\nAuthorization: {bearer}\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\n{{\"originalName\""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(10), response_status(&mut stream)).await.unwrap();
        assert_eq!(status, 408, "{path}");
        assert!(started.elapsed() < Duration::from_secs(4), "{path}: {:?}", started.elapsed());
    }
}

/// A stream of frames from a channel (tokio's `ReceiverStream` without the extra crate).
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
