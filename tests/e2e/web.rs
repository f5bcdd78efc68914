//! The web app (DESIGN §13) in headless Chromium: the whole stack as processes — nats-server,
//! media service, media processor, auth service and the bridge serving the app at `/` — driven by
//! `tests/web/library.py` (Playwright from PyPI on Debian's `/usr/bin/chromium`, both installed
//! by `scripts/setup`): register, upload a JPEG and an MP4, watch them go PROCESSING → READY live,
//! preview, play the HLS video, make public, delete, an MP3 and a PDF in the detail view, rename,
//! tus pause / resume / cancel mid-upload, copy link (public and signed), access tokens that
//! expire every few seconds (refreshed by the page), drag-and-drop, keyboard and phone viewport,
//! no console errors.
//!
//! Screenshots of every step go to a temp dir, kept (and printed) when `MEDIABUS_WEB_SHOTS` names
//! a directory; `MEDIABUS_WEB_README=docs/library.png` also refreshes README's screenshot
//! (`scripts/screenshot` does both).

use std::path::PathBuf;
use std::process::Command;

use mediabus_e2e::{WorkerProcess, built_bin};
use mediabus_testkit::{NatsServer, free_port, media_files, repo_root};

/// The access-token lifetime of the stack, in seconds: shorter than the browser run.
const ACCESS_TTL_SECS: &str = "8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_works_in_a_real_browser() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let files = dir.path().join("files").to_str().unwrap().to_owned();
    let db = dir.path().join("media.db").to_str().unwrap().to_owned();
    let service = |user: &str| {
        let password = nats.password(user);
        vec![
            ("MEDIABUS__NATS__URL".to_owned(), url.clone()),
            ("MEDIABUS__NATS__USER".to_owned(), user.to_owned()),
            ("MEDIABUS__NATS__PASSWORD".to_owned(), password),
            ("MEDIABUS__STORAGE__ROOT".to_owned(), files.clone()),
            ("MEDIABUS__STORE__PATH".to_owned(), db.clone()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ]
    };
    let spawn = |binary: &str, env: &[(String, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        WorkerProcess::spawn_with_env(&built_bin(binary), &env, &[])
    };
    let _media = spawn("media-service", &service("media"));
    let _processor = spawn("media-processor", &service("processor"));
    let mut auth = service("auth");
    // The lowest bcrypt cost: registering in the browser stays quick.
    auth.push(("MEDIABUS__AUTH__BCRYPT_COST".into(), "4".into()));
    // Access tokens that live 8 s: the page refreshes them during the run (twice in ~15 s)
    // (library.py checks that it does, and that its first token is refused by the end).
    auth.push(("MEDIABUS__AUTH__ACCESS_TTL_SECS".into(), ACCESS_TTL_SECS.into()));
    // Its request counters: library.py matches the refreshes it served with those the pages sent.
    let auth_metrics = format!("127.0.0.1:{}", free_port());
    auth.push(("MEDIABUS__METRICS__LISTEN".into(), auth_metrics.clone()));
    let _auth = spawn("auth-service", &auth);
    let mut bridge = service("bridge");
    bridge.push(("MEDIABUS__HTTP__LISTEN".into(), "127.0.0.1:0".into()));
    let web = repo_root().join("services/http-bridge/web");
    bridge.push(("MEDIABUS__WEB__DIR".into(), web.to_str().unwrap().to_owned()));
    let bridge = spawn("http-bridge", &bridge);

    let kept = std::env::var_os("MEDIABUS_WEB_SHOTS").map(PathBuf::from);
    let shots = kept.clone().unwrap_or_else(|| dir.path().join("shots"));
    let mut script = Command::new(repo_root().join(".venv/bin/python"));
    script
        .arg(repo_root().join("tests/web/library.py"))
        .args(["--url", &format!("http://127.0.0.1:{}", bridge.ready_port())])
        .arg("--shots")
        .arg(&shots)
        .arg("--image")
        .arg(&media_files().jpeg)
        .arg("--video")
        .arg(&media_files().mp4)
        .arg("--audio")
        .arg(&media_files().mp3)
        .arg("--pdf")
        .arg(&media_files().pdf)
        .args(["--auth-metrics", &format!("http://{auth_metrics}/metrics")]);
    if let Some(readme) = std::env::var_os("MEDIABUS_WEB_README") {
        script.arg("--readme").arg(repo_root().join(readme));
    }
    let out = tokio::task::spawn_blocking(move || script.output().expect("run tests/web/library.py")).await.unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser run failed (screenshots: {}):\n{log}", shots.display());
    eprint!("{log}");
    if let Some(kept) = kept {
        eprintln!("screenshots kept in {}", kept.display());
    }
}
