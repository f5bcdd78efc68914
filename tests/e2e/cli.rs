//! The `mediabus` CLI (services/cli) as a user runs it, against the real stack of the tus tests
//! (bridges and media workers as processes on a real nats-server): a directory of real files
//! uploaded through tus, killed in the middle and run again (finished files skipped, the cut
//! file continued on the same tus upload), then `ls --json` and `get` byte-equal, `rm`, and the
//! exit codes scripts rely on.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mediabus_e2e::bench::write_video;
use mediabus_e2e::{built_bin, dev_token};
use mediabus_testkit::media_files;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::tus::Stack;

/// Bytes per PATCH in these runs (the CLI's default is 10 MiB): small, so the big file is still
/// uploading when the test cuts the first run.
const CHUNK: &str = "1048576";
const MIB: u64 = 1 << 20;

/// The CLI's environment for one user: server, token, config directory.
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
            .env("MEDIABUS_URL", &self.url)
            .env("MEDIABUS_TOKEN", &self.token)
            .env("MEDIABUS_CONFIG", &self.config)
            .env("MEDIABUS_CHUNK_BYTES", CHUNK)
            .stdin(Stdio::null());
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
