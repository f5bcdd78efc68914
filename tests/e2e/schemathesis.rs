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
    // Its working directory is a temp dir: schemathesis writes nothing into the repository.
    let workdir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with more, hypothesis parses lambda sources from several threads at once,
        // which CPython 3.11 can fail with "AST constructor recursion depth mismatch".
        .args(["--workers", "1", "--request-timeout", "20", "--generation-database", "none", "--no-color"]);
    let child =
        command.current_dir(workdir.path()).env("NO_COLOR", "1").stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .expect("schemathesis finishes within 5 minutes")
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis failed ({}):\n{stdout}\n{stderr}", output.status);
    println!("{stdout}");
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
