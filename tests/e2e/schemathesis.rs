//! The bridge against its own OpenAPI document: schemathesis (PyPI, installed into `.venv/` by
//! `scripts/setup`) reads `GET /openapi.json` from a running bridge in front of the real media
//! and auth services, generates valid and invalid requests for every operation, sends them with
//! a real access token (from `POST /api/auth/register` through the bridge), and checks each
//! response: no 5xx, a documented status, the documented content type, headers and schema.

use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use mediabus_testkit::repo_root;
use serde_json::json;

use crate::stack::Stack;

/// What schemathesis verifies on every response: no 5xx; status, content type, headers and body
/// as documented; operations that require a token refuse requests without one (`ignored_auth`);
/// undocumented methods get 405 (`unsupported_method`).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method";

/// Test cases per operation and phase: enough to reach every documented parameter and status,
/// few enough for the run to take well under a minute on two cores.
const MAX_EXAMPLES: &str = "50";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_conforms_to_its_openapi_document() {
    let schemathesis = repo_root().join(".venv/bin/schemathesis");
    assert!(schemathesis.is_file(), "{} missing: run scripts/setup", schemathesis.display());
    let stack = Stack::start(true, &["media", "auth"]).await;
    let addr = stack.listen().await;
    let (token, _) = stack.register("schemathesis").await;
    // Something to list, so pages carry a real Media through the schema check.
    let media = json!({"originalName": "cat.png", "mimeType": "image/png", "size": 3, "url": "/cat.png",
                       "entityType": "course", "entityId": "c1", "isPublic": true, "metadata": {"a": 1}});
    let (status, created) = stack.send("POST", "/api/media", Some(&token), Some(&media.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let base = format!("http://{addr}");
    let auth = format!("Authorization: Bearer {token}");
    let stdout = run(&schemathesis, &base, &["--header", &auth, "--max-examples", MAX_EXAMPLES]).await;
    // Every documented operation was exercised (not skipped, not filtered out).
    let documented = serde_json::to_value(http_bridge::openapi::document()).unwrap()["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().map_or(0, |methods| methods.len()))
        .sum::<usize>();
    let tested = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(tested, Some(documented), "operations tested by schemathesis vs documented:\n{stdout}");
}

/// The live event stream against its documented event schema, on every run: with `Last-Event-ID: 0`
/// each `GET /api/events` replays the media created above, so every response carries real events
/// (the general pass reaches them only when its generated `Last-Event-ID` happens to be low).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_conform_to_the_documented_event_schema() {
    let schemathesis = repo_root().join(".venv/bin/schemathesis");
    let stack = Stack::start(true, &["media", "auth"]).await;
    let addr = stack.listen().await;
    let (token, _) = stack.register("sse-schema").await;
    let media = json!({"originalName": "cat.png", "mimeType": "image/png", "size": 3, "url": "/cat.png"});
    let (status, created) = stack.send("POST", "/api/media", Some(&token), Some(&media.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let base = format!("http://{addr}");
    let auth = format!("Authorization: Bearer {token}");
    let stdout = run(
        &schemathesis,
        &base,
        &["--header", &auth, "--header", "Last-Event-ID: 0", "--include-path", "/api/events", "--max-examples", "5"],
    )
    .await;
    assert!(stdout.contains("Tested: 1"), "GET /api/events was not exercised:\n{stdout}");
}

/// Runs `schemathesis run` against the bridge at `base` with the shared checks and `extra`
/// arguments; returns its standard output and fails the test unless it passed. An event stream is
/// read for at most 2 events or the 20 s request timeout (`schemathesis.toml` in the temp dir).
async fn run(schemathesis: &std::path::Path, base: &str, extra: &[&str]) -> String {
    // Its working directory is a temp dir: schemathesis writes nothing into the repository.
    let workdir = tempfile::tempdir().unwrap();
    std::fs::write(workdir.path().join("schemathesis.toml"), "max-stream-events = 2\n").unwrap();
    let mut command = tokio::process::Command::new(schemathesis);
    command
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base])
        .args(["--checks", CHECKS])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with more, hypothesis parses lambda sources from several threads at once,
        // which CPython 3.11 can fail with "AST constructor recursion depth mismatch".
        .args(["--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color"])
        .args(extra);
    let child =
        command.current_dir(workdir.path()).env("NO_COLOR", "1").stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .expect("schemathesis finishes within 5 minutes")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", output.status);
    println!("{stdout}");
    stdout
}
