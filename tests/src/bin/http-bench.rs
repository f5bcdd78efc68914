//! http-bench: HTTP throughput of the bridge next to nginx on the same disk, in the same run
//! (issue 4).
//!
//! 1. Upload of a 512 MiB video: `POST /api/media/upload` (multipart/form-data, field `file`) to the
//!    http-bridge, with two media-service workers behind it, vs a WebDAV `PUT` of the same file to
//!    nginx. Target: at least 0.5 of nginx.
//!    Also the same file as a tus 1.0 upload (`POST /api/uploads`, then one `PATCH` with the whole
//!    file, as tus-js-client sends by default), against the multipart path: target at least 0.9;
//!    and as the web app and the CLI send it, in [`TUS_CHUNK`] PATCHes one after another.
//! 2. Download of it: `GET /api/media/{id}/content` (owner's bearer token) vs nginx serving its
//!    copy (`sendfile`); both copies were written by the last upload round and are read once,
//!    untimed, before the rounds, so both are served from the page cache. Target: at least 0.7
//!    of nginx.
//!
//! Rounds alternate between bridge and nginx, so drift on a shared machine hits both alike; each
//! side's figure is the median of [`ROUNDS`]. Every transfer uses a new connection of one streaming
//! HTTP/1.1 client (hyper): bodies are read from disk and consumed in 1 MiB chunks, never held
//! whole. Uploads are checked (size, checksum), downloads too (length, first 4 KiB).
//!
//! Also reported, to show where the time goes: how long each server takes to answer after the last
//! byte of an upload, the CPU seconds of each process per transfer (client, nginx, bridge, workers,
//! nats-server), and the peak RSS of the bridge and the workers across the uploads.
//!
//! Usage: `http-bench`, run by `scripts/bench` (which builds the release binaries `media-service`
//! and `http-bridge` next to this one; nginx comes from `scripts/setup`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{ROUNDS, peak_rss_kib, report_transfer, sibling_bin, write_video};
use mediabus_e2e::http::{TRANSFER_LIMIT, collect, file_body, file_slice_body, form_around, form_content_type, send};
use mediabus_testkit::{NatsServer, Nginx};
use serde_json::Value;

const FILE_MIB: usize = 512;

#[tokio::main]
async fn main() {
    // Under data/ (git-ignored) on the repository's disk: the source file, the media service's file
    // store and nginx's root and body temp dir all share it.
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let path = |p: &str| dir.path().join(p).to_str().unwrap().to_owned();
    let source = dir.path().join("source.mp4");
    let checksum = format!("sha256:{}", write_video(&source, FILE_MIB));
    let size = (FILE_MIB as u64) << 20;
    let mut head = vec![0u8; 4096];
    std::fs::File::open(&source).unwrap().read_exact(&mut head).unwrap();

    let nats = NatsServer::start();
    let url = nats.url();
    let (db, files) = (path("media.db"), path("files"));
    // Port 0: the bridge binds a port of the system's choosing and prints it (no race).
    let listen = "127.0.0.1:0";
    // Each service connects as its own NATS user (nats/permissions.conf), as deployed.
    let spawn = |bin: &str, user: &str| {
        let password = nats.password(user);
        let env = [
            ("MEDIABUS__NATS__URL", url.as_str()),
            ("MEDIABUS__NATS__USER", user),
            ("MEDIABUS__NATS__PASSWORD", password.as_str()),
            ("MEDIABUS__STORE__PATH", db.as_str()),
            ("MEDIABUS__STORAGE__ROOT", files.as_str()),
            ("MEDIABUS__HTTP__LISTEN", listen),
        ];
        WorkerProcess::spawn_with_env(&sibling_bin(bin), &env, &[])
    };
    let workers: Vec<_> = (0..2).map(|_| spawn("media-service", "media")).collect();
    let bridge = spawn("http-bridge", "bridge");
    let bridge_port = bridge.ready_port();
    let nginx = Nginx::start_in(dir.path());
    let token = mediabus_e2e::dev_token("bench-user");
    let pids: Vec<u32> = std::iter::once(bridge.id()).chain(workers.iter().map(WorkerProcess::id)).collect();
    let rss_start: Vec<u64> = pids.iter().map(|&pid| peak_rss_kib(pid).unwrap_or(0)).collect();

    println!(
        "HTTP throughput of a {FILE_MIB} MiB file, bridge vs nginx on the same disk, median of {ROUNDS} alternating \
         rounds (load average {})",
        load_average()
    );
    let (mut put, mut post, mut tus, mut tus_chunked) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut media_id = String::new();
    // CPU seconds by process over all rounds: put, post, get from nginx, get from the bridge, tus,
    // tus in chunks.
    let mut cpu: [BTreeMap<String, f64>; 6] = Default::default();
    for round in 0..ROUNDS {
        // A new name each round, as every upload is a new media: replacing a file would add the
        // freeing of the old one's 512 MiB to nginx's time.
        let before = cpu_by_process();
        put.push(put_nginx(nginx.port(), &format!("big-{round}.mp4"), &source, size).await);
        add_cpu(&mut cpu[0], &before);
        let before = cpu_by_process();
        let (timing, media) = upload_bridge(bridge_port, &token, &source, size).await;
        add_cpu(&mut cpu[1], &before);
        assert_eq!(media["size"].as_u64(), Some(size), "uploaded size: {media}");
        assert_eq!(media["checksum"].as_str(), Some(checksum.as_str()), "uploaded checksum: {media}");
        media_id = media["id"].as_str().expect("media id").to_owned();
        // media.public_base_url is empty by default: the URL is the bridge's own, relative.
        assert_eq!(media["url"].as_str(), Some(format!("/api/media/{media_id}/content").as_str()), "url: {media}");
        post.push(timing);
        let before = cpu_by_process();
        let (timing, tus_media) = upload_tus(bridge_port, &token, &source, size, size).await;
        add_cpu(&mut cpu[4], &before);
        assert_eq!(tus_media["checksum"].as_str(), Some(checksum.as_str()), "tus checksum: {tus_media}");
        tus.push(timing);
        let before = cpu_by_process();
        let (timing, chunked_media) = upload_tus(bridge_port, &token, &source, size, TUS_CHUNK).await;
        add_cpu(&mut cpu[5], &before);
        assert_eq!(chunked_media["checksum"].as_str(), Some(checksum.as_str()), "tus checksum: {chunked_media}");
        tus_chunked.push(timing);
    }
    let rss_peak: Vec<u64> = pids.iter().map(|&pid| peak_rss_kib(pid).unwrap_or(0)).collect();
    let content = format!("api/media/{media_id}/content");
    let nginx_copy = format!("big-{}.mp4", ROUNDS - 1);
    // One untimed read of each first, so both are served from the page cache, as the issue's
    // baseline is: nginx's copy is there since its buffered PUT, the bridge's is not (the file
    // store writes uploads with O_DIRECT), so its first read comes from the disk.
    download(nginx.port(), &nginx_copy, None, size, &head).await;
    download(bridge_port, &content, Some(&token), size, &head).await;
    let (mut get_nginx, mut get_bridge) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let before = cpu_by_process();
        get_nginx.push(download(nginx.port(), &nginx_copy, None, size, &head).await);
        add_cpu(&mut cpu[2], &before);
        let before = cpu_by_process();
        get_bridge.push(download(bridge_port, &content, Some(&token), size, &head).await);
        add_cpu(&mut cpu[3], &before);
    }

    let mib = FILE_MIB as f64;
    println!("\nupload");
    let secs = |t: &[Timing]| t.iter().map(|t| t.secs).collect::<Vec<_>>();
    report_transfer(mib, ("nginx PUT (WebDAV)", &secs(&put)), ("bridge POST /api/media/upload", &secs(&post)), 0.5);
    let tail = |t: &[Timing]| {
        let mut tails: Vec<f64> = t.iter().map(|t| t.tail_secs).collect();
        tails.sort_by(f64::total_cmp);
        tails[tails.len() / 2]
    };
    println!(
        "response after the last byte sent, median: nginx {:.2} s, bridge {:.2} s (upload.complete)",
        tail(&put),
        tail(&post)
    );
    println!("\ntus upload");
    report_transfer(
        mib,
        ("bridge POST /api/media/upload", &secs(&post)),
        ("bridge tus POST+PATCH /api/uploads", &secs(&tus)),
        0.9,
    );
    report_transfer(mib, ("nginx PUT (WebDAV)", &secs(&put)), ("bridge tus POST+PATCH /api/uploads", &secs(&tus)), 0.5);
    println!("response after the last byte sent, median: bridge tus {:.2} s (upload.complete)", tail(&tus));
    let chunked = format!("bridge tus, {} MiB PATCHes", TUS_CHUNK >> 20);
    report_transfer(mib, ("bridge POST /api/media/upload", &secs(&post)), (chunked.as_str(), &secs(&tus_chunked)), 0.9);
    println!("\ndownload");
    report_transfer(
        mib,
        ("nginx GET (sendfile)", &get_nginx),
        ("bridge GET /api/media/{id}/content", &get_bridge),
        0.7,
    );
    println!("\nCPU seconds per transfer by process (user + system, mean of {ROUNDS} rounds):");
    let names = [
        "nginx PUT",
        "bridge POST /api/media/upload",
        "nginx GET",
        "bridge GET content",
        "bridge tus upload",
        "bridge tus upload in chunks",
    ];
    for (name, by_process) in names.iter().zip(&cpu) {
        let parts: Vec<String> = by_process
            .iter()
            .filter(|(_, secs)| **secs >= 0.005 * ROUNDS as f64)
            .map(|(process, secs)| format!("{process} {:.2}", secs / ROUNDS as f64))
            .collect();
        println!("{name:<34} {}", parts.join(", "));
    }
    let mib_of = |kib: u64| kib as f64 / 1024.0;
    println!("\npeak RSS across the uploads (at start-up):");
    for (i, name) in ["bridge", "media worker 1", "media worker 2"].iter().enumerate() {
        println!("{name:<34} {:>8.1} MiB   ({:.1} MiB)", mib_of(rss_peak[i]), mib_of(rss_start[i]));
    }
    println!("(load average at the end {})", load_average());
}

/// Durations of one upload.
struct Timing {
    /// From sending the request to the end of the response, seconds.
    secs: f64,
    /// From the last byte of the request body handed to the connection to the end of the response,
    /// seconds: what the server does once it has the whole file.
    tail_secs: f64,
}

impl Timing {
    fn since(start: Instant, body_end: &OnceLock<Instant>) -> Self {
        let end = Instant::now();
        let body_end = body_end.get().copied().unwrap_or(end);
        Self { secs: (end - start).as_secs_f64(), tail_secs: (end - body_end).as_secs_f64() }
    }
}

/// A WebDAV `PUT` of the file to nginx at `/<name>`.
async fn put_nginx(port: u16, name: &str, source: &Path, size: u64) -> Timing {
    let (body, body_end) = file_body(source, Bytes::new(), Bytes::new());
    let request = Request::put(format!("/{name}")).header(CONTENT_LENGTH, size).body(body).unwrap();
    let start = Instant::now();
    let reply = collect(send(port, request).await).await;
    let timing = Timing::since(start, &body_end);
    assert_eq!(reply.status, StatusCode::CREATED, "nginx PUT: {:?}", reply.body);
    timing
}

/// `POST /api/media/upload` of the file as multipart/form-data field `file`; returns the timing and
/// the Media the route returns (with 201).
async fn upload_bridge(port: u16, token: &str, source: &Path, size: u64) -> (Timing, Value) {
    let (prefix, suffix) = form_around(&[], "big.mp4", "video/mp4", &[]);
    let length = prefix.len() as u64 + size + suffix.len() as u64;
    let (body, body_end) = file_body(source, prefix, suffix);
    let request = Request::post("/api/media/upload")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .header(CONTENT_TYPE, form_content_type())
        .header(CONTENT_LENGTH, length)
        .body(body)
        .unwrap();
    let start = Instant::now();
    let reply = collect(send(port, request).await).await;
    let timing = Timing::since(start, &body_end);
    assert_eq!(reply.status, StatusCode::CREATED, "bridge upload: {:?}", reply.body);
    (timing, reply.json())
}

/// PATCH size of the web app (`services/http-bridge/web/app/uploads.js`) and the CLI: 10 MiB.
const TUS_CHUNK: u64 = 10 << 20;

/// A tus 1.0 upload of the file: `POST /api/uploads` (creation), then PATCHes of `chunk` bytes one
/// after another, each streamed from the file (`chunk` = `size`: one PATCH with all of it, as
/// tus-js-client sends by default). Returns the timing (from the POST to the last response; the
/// tail is the last PATCH's) and the Media named by the completing response's `Media-Id`.
async fn upload_tus(port: u16, token: &str, source: &Path, size: u64, chunk: u64) -> (Timing, Value) {
    let bearer = format!("Bearer {token}");
    let tus = ("tus-resumable", "1.0.0");
    let start = Instant::now();
    let length = size.to_string();
    let headers = [tus, ("authorization", bearer.as_str()), ("upload-length", length.as_str())];
    let created = mediabus_e2e::http::call(port, "POST", "/api/uploads", &headers, Bytes::new()).await;
    assert_eq!(created.status, StatusCode::CREATED, "tus create: {:?}", created.body);
    let location = created.header("location").to_owned();
    let (mut offset, mut last) = (0u64, None);
    while offset < size {
        let len = chunk.min(size - offset);
        let (body, body_end) = file_slice_body(source, offset, len, Bytes::new(), Bytes::new());
        let request = Request::patch(location.as_str())
            .header(tus.0, tus.1)
            .header(AUTHORIZATION, &bearer)
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .header("upload-offset", offset)
            .header(CONTENT_LENGTH, len)
            .body(body)
            .unwrap();
        let reply = collect(send(port, request).await).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "tus PATCH at {offset}: {:?}", reply.body);
        offset += len;
        assert_eq!(reply.header("upload-offset"), offset.to_string());
        last = Some((reply, body_end));
    }
    let (reply, body_end) = last.expect("at least one PATCH");
    let timing = Timing::since(start, &body_end);
    let media_id = reply.header("media-id").to_owned();
    let media =
        mediabus_e2e::http::call(port, "GET", &format!("/api/media/{media_id}"), &headers[1..2], Bytes::new()).await;
    (timing, media.json())
}

/// `GET /<path>` (with a bearer `token` if given), consuming the body as it arrives; checks it is
/// `size` bytes starting with `head`. Returns the seconds until the last byte.
async fn download(port: u16, path: &str, token: Option<&str>, size: u64, head: &[u8]) -> f64 {
    let mut request = Request::get(format!("/{path}"));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new()).unwrap();
    let start = Instant::now();
    let response = send(port, request).await;
    if response.status() != StatusCode::OK {
        let reply = collect(response).await;
        panic!("GET /{path} on port {port}: {} {:?}", reply.status, reply.body);
    }
    let mut body = response.into_body();
    let (mut received, mut first) = (0u64, Vec::with_capacity(head.len()));
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("response body").into_data() {
                let want = head.len().saturating_sub(first.len()).min(data.len());
                first.extend_from_slice(&data[..want]);
                received += data.len() as u64;
            }
        }
    };
    tokio::time::timeout(TRANSFER_LIMIT, read).await.expect("download within the limit");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(received, size, "GET /{path} on port {port}: body length");
    assert!(first == head, "GET /{path} on port {port}: the body does not start with the file's bytes");
    secs
}

/// CPU time (user + system, all threads, exited ones included) of this process (`client`) and of
/// each of its children, in seconds, summed by command name (Linux `/proc`; the two media workers
/// are one entry).
fn cpu_by_process() -> BTreeMap<String, f64> {
    // `utime` and `stime` of /proc/<pid>/stat count USER_HZ ticks, 100 per second on Linux.
    const TICKS_PER_SEC: f64 = 100.0;
    let read = |pid: &str| -> Option<(String, f64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some((name, ticks as f64 / TICKS_PER_SEC))
    };
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(children.split_whitespace().map(str::to_owned));
    }
    let mut cpu = BTreeMap::new();
    if let Some((_, secs)) = read("self") {
        cpu.insert("client".to_owned(), secs);
    }
    for (name, secs) in pids.iter().filter_map(|pid| read(pid)) {
        *cpu.entry(name).or_insert(0.0) += secs;
    }
    cpu
}

/// Adds to `total` the CPU time each process spent since `before` (from [`cpu_by_process`]).
fn add_cpu(total: &mut BTreeMap<String, f64>, before: &BTreeMap<String, f64>) {
    for (name, secs) in cpu_by_process() {
        *total.entry(name.clone()).or_insert(0.0) += secs - before.get(&name).copied().unwrap_or(0.0);
    }
}

/// The 1, 5 and 15 minute load averages (Linux), for judging how busy the machine was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
