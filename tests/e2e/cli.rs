//! The `mediabus` CLI (services/cli) as a user runs it, against real stacks (bridges and media
//! workers as processes on a real nats-server):
//! - a directory of real files uploaded through tus, killed in the middle and run again (finished
//!   files skipped, the cut file continued on the same tus upload), then `ls --json` and `get`
//!   byte-equal, `rm`, and the exit codes scripts rely on;
//! - with the auth service too: `login` (the session file: 0600, no password), then every command
//!   on that session alone; `upload --public -j 3`, `watch --json`, `get` resuming a `.part`
//!   file (a corrupted prefix caught by the checksum), `rm`, and where the server and token come
//!   from (flag, environment, session file; the session's token never sent to another server).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mediabus_e2e::bench::write_video;
use mediabus_e2e::{built_bin, dev_token};
use mediabus_testkit::media_files;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::events::ProcStack;
use crate::tus::Stack;

/// Bytes per PATCH in these runs (the CLI's default is 10 MiB): small, so the big file is still
/// uploading when the test cuts the first run.
const CHUNK: &str = "1048576";
const MIB: u64 = 1 << 20;

/// The CLI's environment for one user: server and token (each left out of the environment when
/// empty), config file.
struct Cli {
    url: String,
    token: String,
    config: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(built_bin("mediabus"));
        command
            .args(args)
            .env_remove("MEDIABUS_URL")
            .env_remove("MEDIABUS_TOKEN")
            .env("MEDIABUS_CONFIG", &self.config)
            .env("MEDIABUS_CHUNK_BYTES", CHUNK)
            .stdin(Stdio::null());
        if !self.url.is_empty() {
            command.env("MEDIABUS_URL", &self.url);
        }
        if !self.token.is_empty() {
            command.env("MEDIABUS_TOKEN", &self.token);
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mediabus")
    }

    /// Runs the CLI, which must succeed; its standard output as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "mediabus {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON on stdout")
    }

    /// The saved upload state (`uploads.json` beside the config file).
    fn state(&self) -> Value {
        std::fs::read(self.config.with_file_name("uploads.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// The value of the state entry whose key names `file`.
fn entry<'s>(state: &'s Value, file: &str) -> Option<&'s Value> {
    state.as_object()?.iter().find(|(k, _)| k.contains(file)).map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_uploads_across_an_interruption_then_lists_and_downloads_byte_equal() {
    let stack = Stack::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let cli = Cli {
        url: format!("http://127.0.0.1:{}", stack.ports[0]),
        token: dev_token("cli-user"),
        config: work.path().join("config/config.json"),
    };
    // Real files first (names sort before the big one, and `-j 1` keeps that order), then 24 MiB
    // of video that is still on its way when the first run is killed.
    let dir = work.path().join("media");
    std::fs::create_dir(&dir).unwrap();
    for (i, (path, ..)) in media_files().all().iter().enumerate() {
        let name = format!("{i}-{}", path.file_name().unwrap().to_str().unwrap());
        std::fs::copy(path, dir.join(name)).unwrap();
    }
    write_video(dir.join("z-clip.mp4"), 24);
    let dir_arg = dir.to_str().unwrap();
    let upload = ["upload", dir_arg, "--entity-type", "course", "--entity-id", "cli1", "-j", "1", "--json"];

    let mut first = cli.command(&upload).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let cut_at = loop {
        assert!(Instant::now() < deadline, "the big file never got going: {}", cli.state());
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before it was cut");
        if let Some(url) = entry(&cli.state(), "z-clip.mp4").and_then(|e| e["inProgress"].as_str()) {
            let offset = tus_offset(&stack, &cli.token, url).await;
            if offset >= 2 * MIB {
                break url.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    let state = cli.state();
    let done = state.as_object().unwrap().values().filter(|v| v.get("done").is_some()).count();
    assert_eq!(done, media_files().all().len(), "every smaller file finished before the cut: {state}");

    // The rerun skips what is done and continues the cut file on the same tus upload.
    let created = cli.json(&upload);
    let created = created.as_array().unwrap();
    assert_eq!(created.len(), media_files().all().len() + 1);
    let clip = created.iter().find(|m| m["originalName"] == "z-clip.mp4").expect("the big file was uploaded");
    let head = stack.tus(0, "HEAD", path_of(&cut_at), &cli.token, &[], bytes::Bytes::new()).await;
    assert_eq!(head.header("media-id"), clip["id"].as_str().unwrap(), "the cut upload itself was completed");
    assert!(entry(&cli.state(), "z-clip.mp4").unwrap()["done"].is_string());

    // A third run uploads nothing new.
    let again = cli.json(&upload);
    let ids = |v: &[Value]| {
        let mut ids: Vec<String> = v.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(again.as_array().unwrap()), ids(created));

    // Listed once each; every one comes back byte-equal.
    let listed = cli.json(&["ls", "--entity", "course/cli1", "--all", "--limit", "3", "--json"]);
    assert_eq!(ids(listed.as_array().unwrap()), ids(created));
    for media in created {
        let id = media["id"].as_str().unwrap();
        let name = media["originalName"].as_str().unwrap();
        let out = work.path().join(format!("got-{name}"));
        let got = cli.run(&["get", id, "-o", out.to_str().unwrap()]);
        assert!(got.status.success(), "get {name}: {}", String::from_utf8_lossy(&got.stderr));
        assert_eq!(sha256_file(&out), sha256_file(&dir.join(name)), "{name}");
    }

    // The table lists the files; rm deletes; the exit codes tell scripts what happened.
    let table = cli.run(&["ls", "--entity", "course/cli1", "--limit", "100"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.contains("z-clip.mp4"), "{table}");
    let clip_id = clip["id"].as_str().unwrap();
    assert_eq!(cli.run(&["rm", clip_id]).status.code(), Some(0));
    assert_eq!(cli.run(&["get", clip_id, "-o", "-"]).status.code(), Some(4), "deleted: not found");
    let stranger = Cli { url: cli.url.clone(), token: "not-a-jwt".into(), config: cli.config.clone() };
    assert_eq!(stranger.run(&["ls"]).status.code(), Some(3), "a refused token");
    let nowhere = Cli { url: "http://127.0.0.1:9".into(), token: cli.token.clone(), config: cli.config.clone() };
    assert_eq!(nowhere.run(&["ls"]).status.code(), Some(5), "no server");
    assert_eq!(cli.run(&["ls", "--entity", "no-slash"]).status.code(), Some(1), "bad usage of --entity");
    assert_eq!(cli.run(&["upload"]).status.code(), Some(2), "clap usage error");
}

/// The server's `Upload-Offset` of the tus upload at `url`.
async fn tus_offset(stack: &Stack, token: &str, url: &str) -> u64 {
    let head = stack.tus(0, "HEAD", path_of(url), token, &[], bytes::Bytes::new()).await;
    head.header("upload-offset").parse().unwrap_or(0)
}

/// The path of a tus upload URL (`Location` may be absolute).
fn path_of(url: &str) -> &str {
    url.find("/api/").map_or(url, |at| &url[at..])
}

/// A child process killed when dropped: a failing test leaves no `mediabus watch` behind.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines a child process writes to one of its pipes, read on a thread.
struct Lines(mpsc::Receiver<String>);

impl Lines {
    fn of(pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// Lines until one satisfies `wanted` (returned), failing after 20 s or at the end of output.
    fn until(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            match self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(e) => panic!("no {what} ({e}); saw {seen:?}"),
            }
        }
    }
}

/// A one-shot HTTP server on 127.0.0.1 standing for "some other server": it answers its first
/// request with 401 and hands back the request head it received.
fn other_server() -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepted by polling until a deadline, so a CLI that never calls cannot hang the test.
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return format!("no request: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let body = r#"{"status":401,"code":"UNAUTHENTICATED","message":"who are you"}"#;
        let reply = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes());
        String::from_utf8_lossy(&head).into_owned()
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_user_uploads_follows_downloads_and_removes_on_the_saved_session() {
    let stack = ProcStack::with_auth(false);
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", stack.port);
    let (email, password) = ("ada@example.com", "correct horse battery staple");
    let signup = serde_json::json!({"name": "Ada", "email": email, "password": password}).to_string();
    let reply = mediabus_e2e::http::call(
        stack.port,
        "POST",
        "/api/auth/register",
        &[("content-type", "application/json")],
        signup,
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let user_id = reply.json()["user"]["id"].as_str().unwrap().to_owned();
    // No MEDIABUS_TOKEN anywhere below: the session `login` saves is the only credential.
    let cli = Cli { url: url.clone(), token: String::new(), config: work.path().join("conf/config.json") };
    let login = |password: &str| {
        let mut child = cli
            .command(&["login", "--email", email, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };

    // Not signed in: refused (3). A wrong password: refused (3), nothing saved.
    let dir = work.path().join("media");
    std::fs::create_dir(&dir).unwrap();
    for (path, ..) in media_files().all() {
        std::fs::copy(path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let one = dir.join(media_files().png.file_name().unwrap());
    let anonymous = cli.run(&["upload", one.to_str().unwrap()]);
    assert_eq!(anonymous.status.code(), Some(3), "{}", String::from_utf8_lossy(&anonymous.stderr));
    let refused = login("not the password");
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("wrong email or password"));
    assert!(!cli.config.exists(), "a refused login saves nothing");

    // Signed in: the session file is the owner's alone and holds tokens, never the password.
    let out = login(password);
    assert!(out.status.success(), "login: {}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cli.config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "config file mode {mode:o}");
    let saved = std::fs::read_to_string(&cli.config).unwrap();
    assert!(!saved.contains(password), "the password is not saved: {saved}");
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["url"], url.as_str());
    assert!(saved["accessToken"].is_string() && saved["refreshToken"].is_string(), "{saved}");

    // `watch --json` follows the events; it says when its stream is open, so nothing is missed.
    let mut watch =
        Running(cli.command(&["watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let (events, notes) = (Lines::of(watch.0.stdout.take().unwrap()), Lines::of(watch.0.stderr.take().unwrap()));
    notes.until("the stream opening", |l| l.contains("following"));

    // A directory, public, three files at a time: all arrive, and anyone can read them.
    let dir_arg = dir.to_str().unwrap();
    let created = cli.json(&["upload", dir_arg, "--public", "-j", "3", "--json"]);
    let created = created.as_array().unwrap().clone();
    assert_eq!(created.len(), media_files().all().len(), "{created:?}");
    for media in &created {
        let (id, name) = (media["id"].as_str().unwrap(), media["originalName"].as_str().unwrap());
        assert_eq!((media["isPublic"].as_bool(), media["userId"].as_str()), (Some(true), Some(user_id.as_str())));
        let content = stack.call("GET", &format!("/api/media/{id}/content"), None, &[]).await;
        assert_eq!(content.status, 200, "{name} without a token");
        assert_eq!(content.body, std::fs::read(dir.join(name)).unwrap(), "{name}");
    }
    // Each upload reached the watcher as media.created, with its id.
    for media in &created {
        let id = media["id"].as_str().unwrap();
        let line = events.until(&format!("media.created of {id}"), |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|e| e["event"] == "media.created" && e["data"]["id"] == id)
        });
        let event: Value = serde_json::from_str(&line).unwrap();
        assert!(event["id"].as_str().is_some_and(|seq| seq.parse::<u64>().is_ok()), "{event}");
    }
    drop(watch);

    // `ls` lists them on the session alone.
    let mut listed: Vec<String> = cli
        .json(&["ls", "--json", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let mut ids: Vec<String> = created.iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);

    // `get` resumes `<file>.part`: a correct prefix completes byte-equal; a corrupted one is
    // kept (resumed, not fetched again), so the checksum catches it: exit 1, the partial file
    // gone; the next run starts over and succeeds.
    let video = created.iter().find(|m| m["type"] == "VIDEO").unwrap();
    let (video_id, name) = (video["id"].as_str().unwrap(), video["originalName"].as_str().unwrap());
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let out = work.path().join("got.mp4");
    let part = work.path().join("got.mp4.part");
    let half = bytes.len() / 2;
    let get = || cli.run(&["get", video_id, "-o", out.to_str().unwrap()]);
    std::fs::write(&part, &bytes[..half]).unwrap();
    let got = get();
    assert!(got.status.success(), "get: {}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    assert!(!part.exists());
    std::fs::remove_file(&out).unwrap();
    let mut corrupt = bytes[..half].to_vec();
    corrupt[half / 2] ^= 0xff;
    std::fs::write(&part, &corrupt).unwrap();
    let got = get();
    assert_eq!(got.status.code(), Some(1), "a corrupted prefix: {}", String::from_utf8_lossy(&got.stderr));
    assert!(String::from_utf8_lossy(&got.stderr).contains("checksum mismatch"));
    assert!(!part.exists() && !out.exists(), "nothing corrupt is left behind");
    let got = get();
    assert!(got.status.success(), "get again: {}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    // `rm`, then `get`: not found (4).
    let removed = cli.run(&["rm", video_id]);
    assert_eq!(removed.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&removed.stdout).trim(), format!("deleted {video_id}"));
    assert_eq!(cli.run(&["get", video_id, "-o", "-"]).status.code(), Some(4));

    // Where the server comes from: the session file when nothing else says; MEDIABUS_URL over the
    // file; --url over MEDIABUS_URL.
    let file_only = Cli { url: String::new(), token: String::new(), config: cli.config.clone() };
    assert_eq!(file_only.json(&["ls", "--json"]).as_array().unwrap().len(), ids.len() - 1);
    let env_elsewhere = Cli { url: "http://127.0.0.1:9".into(), token: String::new(), config: cli.config.clone() };
    assert_eq!(env_elsewhere.run(&["ls"]).status.code(), Some(5), "MEDIABUS_URL wins over the file");
    assert!(env_elsewhere.run(&["--url", &url, "ls"]).status.success(), "--url wins over MEDIABUS_URL");
    // The session's token goes to its own server only: another server named by --url gets none.
    let (port, server) = other_server();
    let elsewhere = cli.run(&["--url", &format!("http://127.0.0.1:{port}"), "ls"]);
    let head = server.join().unwrap();
    assert!(head.starts_with("GET /api/media"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("authorization"), "the token leaked: {head}");
    assert_eq!(elsewhere.status.code(), Some(3));

    // A watcher whose reader went away (`mediabus watch | head -1`) ends with a clear error on
    // its next event, not a panic; a plain `upload` prints `id  path` for scripts even though
    // its progress bars are hidden (no terminal).
    let mut watch = Running(cli.command(&["watch"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    drop(watch.0.stdout.take());
    let notes = Lines::of(watch.0.stderr.take().unwrap());
    notes.until("the stream opening", |l| l.contains("following"));
    let again = cli.run(&["upload", one.to_str().unwrap(), "--again"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let printed = String::from_utf8(again.stdout).unwrap();
    let (new_id, path) = printed.trim().split_once("  ").unwrap_or_else(|| panic!("no `id  path`: {printed:?}"));
    assert_eq!((new_id.len(), path), (ids[0].len(), one.to_str().unwrap()), "{printed:?}");
    notes.until("the write error", |l| l.contains("standard output"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "watch kept running without a reader");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(6), "a local write error, not a panic (101)");

    // A refused access token (expired, say) is traded for a new session with the saved refresh
    // token, saved again (still 0600), and the command goes through.
    let mut stale: Value = serde_json::from_slice(&std::fs::read(&cli.config).unwrap()).unwrap();
    let old_refresh = stale["refreshToken"].clone();
    stale["accessToken"] = "expired.access.token".into();
    std::fs::write(&cli.config, stale.to_string()).unwrap();
    let listed = cli.run(&["ls", "--json"]);
    assert!(listed.status.success(), "refreshed: {}", String::from_utf8_lossy(&listed.stderr));
    let renewed: Value = serde_json::from_slice(&std::fs::read(&cli.config).unwrap()).unwrap();
    assert!(renewed["accessToken"].as_str().is_some_and(|t| t != "expired.access.token"), "{renewed}");
    assert!(renewed["refreshToken"].is_string() && renewed["refreshToken"] != old_refresh, "rotated: {renewed}");
    assert_eq!(std::fs::metadata(&cli.config).unwrap().permissions().mode() & 0o777, 0o600);

    // `logout` forgets the session: the CLI is signed out again.
    assert!(cli.run(&["logout"]).status.success());
    let saved: Value = serde_json::from_slice(&std::fs::read(&cli.config).unwrap()).unwrap();
    assert!(saved["accessToken"].is_null() && saved["refreshToken"].is_null(), "{saved}");
    assert_eq!(cli.run(&["upload", one.to_str().unwrap(), "--again"]).status.code(), Some(3));
}
