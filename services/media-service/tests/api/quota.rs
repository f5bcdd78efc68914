//! Per-user quotas (issue 12 item 20, DESIGN §14): refused with 413 `QUOTA_EXCEEDED` before any
//! byte is stored, and `media.usage` (`GET /api/users/{userId}/usage`).

use std::path::Path;

use media_service::config::QuotaSettings;
use mediabus_testkit::media_files;
use serde_json::json;

use crate::helpers::{TestApp, read, status, token};

/// The app with its worker replaced by one running under `quota`.
async fn app_with(quota: QuotaSettings) -> TestApp {
    let mut app = TestApp::spawn().await;
    app.restart_with(|settings| settings.quota = quota).await;
    app
}

/// Files under `dir` (recursively; 0 if it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries.map(|e| e.unwrap().path()).map(|p| if p.is_dir() { files_under(&p) } else { 1 }).sum()
}

#[tokio::test]
async fn over_the_count_quota_an_upload_is_refused_before_its_bytes_are_stored() {
    let app = app_with(QuotaSettings { max_count: 2, ..QuotaSettings::default() }).await;
    let alice = token("alice", "user");
    let png = read(&media_files().png);
    let first = app.upload(&alice, "a.png", &png, json!({})).await.unwrap();
    app.upload(&alice, "b.png", &png, json!({})).await.unwrap();
    let files = app.dir.path().join("files");
    let stored = files_under(&files);
    assert!(stored >= 2, "{stored} files");

    let refused = app.upload(&alice, "c.png", &png, json!({})).await;
    assert_eq!(status(refused), (413, "QUOTA_EXCEEDED".into()));
    let create = app.call("upload.create", json!({"originalName": "c.png", "size": png.len()}), Some(&alice)).await;
    assert_eq!(status(create), (413, "QUOTA_EXCEEDED".into()));
    assert_eq!(files_under(&files), stored, "bytes were stored for a refused upload");

    // Another user is not affected; a removed media frees its slot.
    app.upload(&token("bob", "user"), "b.png", &png, json!({})).await.unwrap();
    app.call("media.remove", json!({"id": first["id"]}), Some(&alice)).await.unwrap();
    app.upload(&alice, "c.png", &png, json!({})).await.unwrap();
}

#[tokio::test]
async fn byte_and_open_upload_quotas_are_checked_at_creation() {
    let app = app_with(QuotaSettings { max_bytes: 1000, max_open_uploads: 1, ..QuotaSettings::default() }).await;
    let alice = token("alice", "user");
    let declared = app.call("upload.create", json!({"originalName": "v.mp4", "size": 1001}), Some(&alice)).await;
    assert_eq!(status(declared), (413, "QUOTA_EXCEEDED".into()));
    let png = read(&media_files().png);
    assert!(png.len() > 1000, "fixture too small for this test: {} bytes", png.len());
    assert_eq!(status(app.upload(&alice, "p.png", &png, json!({})).await), (413, "QUOTA_EXCEEDED".into()));

    let open = app.call("upload.create", json!({"originalName": "a.mp4", "size": 500}), Some(&alice)).await.unwrap();
    let second = app.call("upload.create", json!({"originalName": "b.mp4", "size": 500}), Some(&alice)).await;
    assert_eq!(status(second), (413, "QUOTA_EXCEEDED".into()));
    let usage = app.call("media.usage", json!({"userId": "alice"}), Some(&alice)).await.unwrap();
    assert_eq!(usage["openUploads"], 1, "{usage}");
    app.call("upload.abort", json!({"uploadId": open["uploadId"]}), Some(&alice)).await.unwrap();
    app.call("upload.create", json!({"originalName": "b.mp4", "size": 500}), Some(&alice)).await.unwrap();
}

#[tokio::test]
async fn usage_counts_live_media_for_the_user_or_an_admin_only() {
    let app = app_with(QuotaSettings { max_bytes: 1 << 30, max_count: 100, max_open_uploads: 0 }).await;
    let alice = token("alice", "user");
    let files = media_files();
    let (png, pdf) = (read(&files.png), read(&files.pdf));
    let kept = app.upload(&alice, "p.png", &png, json!({})).await.unwrap();
    let removed = app.upload(&alice, "d.pdf", &pdf, json!({})).await.unwrap();
    app.upload(&alice, "x.pdf", &pdf, json!({})).await.unwrap();
    app.upload(&token("bob", "user"), "b.png", &png, json!({})).await.unwrap();
    app.call("media.remove", json!({"id": removed["id"]}), Some(&alice)).await.unwrap();

    let usage = app.call("media.usage", json!({"userId": "alice"}), Some(&alice)).await.unwrap();
    assert_eq!(usage["count"], 2, "{usage}");
    assert_eq!(usage["bytes"], kept["size"].as_u64().unwrap() + pdf.len() as u64, "{usage}");
    assert_eq!((usage["quotaBytes"].as_u64(), usage["quotaCount"].as_u64()), (Some(1 << 30), Some(100)));
    assert_eq!(usage["openUploads"], 0);

    let by_admin = app.call("media.usage", json!({"userId": "alice"}), Some(&token("root", "admin"))).await.unwrap();
    assert_eq!(by_admin, usage);
    let by_bob = app.call("media.usage", json!({"userId": "alice"}), Some(&token("bob", "user"))).await;
    assert_eq!(status(by_bob), (403, "FORBIDDEN".into()));
    assert_eq!(status(app.call("media.usage", json!({"userId": "alice"}), None).await).0, 401);
    let nobody = app.call("media.usage", json!({"userId": "nobody"}), Some(&token("root", "admin"))).await.unwrap();
    assert_eq!((nobody["bytes"].as_u64(), nobody["count"].as_u64()), (Some(0), Some(0)));
}
