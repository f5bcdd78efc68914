//! The media lifecycle (DESIGN §14, issue 15): cascades from a real NestJS client's events,
//! retention purges and orphan sweeps on both file stores, the admin purge, and the counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use media_service::sweeper::{SweepReport, Sweeper};
use mediabus_contracts::{ListFilter, Media, MediaRecord, MediaStatus, MediaType, Timestamp, Visibility, new_media_id};
use mediabus_rpc::NatsSettings;
use mediabus_storage::{BlobStore, StorageError, body_from_bytes, new_key};
use mediabus_testkit::media_files;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{Docs, Files, TestApp, read, status, token};

/// A READY media of `user` (a URL-only document: no bytes), optionally linked to an entity.
fn document(user: &str, entity: Option<(&str, &str)>) -> MediaRecord {
    let id = new_media_id();
    let now = Timestamp::now();
    MediaRecord {
        media: Media {
            url: format!("/api/media/{id}/content"),
            id,
            media_type: MediaType::Image,
            original_name: "photo.png".into(),
            mime_type: "image/png".into(),
            size: 10,
            user_id: user.to_owned(),
            entity_type: entity.map(|e| e.0.to_owned()),
            entity_id: entity.map(|e| e.1.to_owned()),
            metadata: None,
            is_public: false,
            status: MediaStatus::Ready,
            created_at: now,
            updated_at: now,
            checksum: None,
            details: None,
            variants: vec![],
            failure_reason: None,
        },
        storage_key: None,
    }
}

/// Runs `tests/nestjs/emit.js` as the `backend` user: a NestJS `ClientProxy.emit` of `pattern`.
async fn nestjs_emit(app: &TestApp, pattern: &str, data: Value, times: u32) {
    let script = mediabus_testkit::repo_root().join("tests/nestjs/emit.js");
    let nats = app.nats_server();
    let output = Command::new("node")
        .arg(script)
        .env("NATS_URL", nats.url())
        .env("NATS_USER", "backend")
        .env("NATS_PASSWORD", nats.password("backend"))
        .env("PATTERN", pattern)
        .env("DATA", data.to_string())
        .env("TIMES", times.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("run node (scripts/setup installs tests/nestjs)");
    assert!(output.status.success(), "emit.js failed: {:?}", output.status);
    let printed: Value = serde_json::from_slice(&output.stdout).expect("emit.js prints JSON");
    assert_eq!(printed["emitted"], times);
}

/// `media.removed` events until `want` distinct ids arrived (or 40 s passed): id → times seen.
async fn removed_events(
    events: &mut async_nats::Subscriber,
    want: usize,
    counts: &mut HashMap<String, u32>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    while counts.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(message)) = tokio::time::timeout(left, events.next()).await else {
            return Err(format!("{} of {want} media.removed events", counts.len()));
        };
        let headers = message.headers.clone().unwrap_or_default();
        assert!(headers.get("Authorization").is_none(), "events never carry Authorization");
        let packet: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(packet["pattern"], "media.removed");
        assert!(packet.get("id").is_none(), "an event packet has no id");
        assert_eq!(packet["data"]["status"], "DELETED");
        *counts.entry(packet["data"]["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    Ok(())
}

/// A NestJS client emits `user.deleted` twice for a user with 1,000 media, two workers on the
/// queue group: every media ends DELETED, each emitted exactly one `media.removed`, other users'
/// media stay.
async fn user_deleted_cascades_once(docs: Docs) {
    let started = Instant::now();
    let app = TestApp::spawn_with(Files::Local, docs, 2).await;
    let records: Vec<MediaRecord> = (0..1000).map(|_| document("leaver", None)).collect();
    let inserts = records.iter().map(|r| app.store.insert(r));
    for result in futures_util::future::join_all(inserts).await {
        result.unwrap();
    }
    let stayer = document("stayer", None);
    app.store.insert(&stayer).await.unwrap();
    let marker = document("marker", Some(("marker", "m1")));
    app.store.insert(&marker).await.unwrap();
    let inserted = started.elapsed();

    let nats = app.rpc.nats().clone();
    let mut events = nats.subscribe("media.removed").await.unwrap();
    nats.flush().await.unwrap();
    nestjs_emit(&app, "user.deleted", json!({"userId": "leaver"}), 2).await;
    let mut counts = HashMap::new();
    removed_events(&mut events, 1000, &mut counts).await.unwrap();
    // Then one more event, emitted after both copies: once its removal shows up, the copies were
    // handled; no id may have come twice meanwhile.
    nestjs_emit(&app, "entity.deleted", json!({"entityType": "marker", "entityId": "m1"}), 1).await;
    removed_events(&mut events, 1001, &mut counts).await.unwrap();
    assert!(counts.contains_key(&marker.media.id));
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(repeated.is_empty(), "each media.removed once: {repeated:?}");
    for record in &records {
        assert_eq!(counts.get(&record.media.id), Some(&1));
    }

    let admin = token("root", "admin");
    let page =
        app.call("media.findByUser", json!({"userId": "leaver", "status": "DELETED"}), Some(&admin)).await.unwrap();
    assert_eq!(page["total"], 1000, "all DELETED, kept for admins");
    let live = app.call("media.findByUser", json!({"userId": "leaver"}), Some(&admin)).await.unwrap();
    assert_eq!(live["total"], 0);
    let other = app.store.get(&stayer.media.id).await.unwrap().unwrap();
    assert_eq!(other.media.status, MediaStatus::Ready, "another user's media stays");
    eprintln!("user.deleted on {docs:?}: 1,000 media inserted in {inserted:?}, whole test {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn user_deleted_from_nestjs_removes_a_thousand_media_once_on_sqlite() {
    user_deleted_cascades_once(Docs::Sqlite).await;
}

#[tokio::test]
async fn user_deleted_from_nestjs_removes_a_thousand_media_once_on_mongo() {
    user_deleted_cascades_once(Docs::Mongo).await;
}

/// A worker whose `request_timeout` (1 ms) no cascade could meet: `user.deleted` runs under its
/// own timeout, so a cascade of 1,000 media still ends with every one DELETED and one
/// `media.removed` each.
async fn cascade_outlasts_the_request_timeout(docs: Docs) {
    let mut app = TestApp::spawn_with(Files::Local, docs, 1).await;
    app.restart_with(|settings| settings.service.request_timeout_ms = 1).await;
    let records: Vec<MediaRecord> = (0..1000).map(|_| document("long-gone", None)).collect();
    for result in futures_util::future::join_all(records.iter().map(|r| app.store.insert(r))).await {
        result.unwrap();
    }
    let nats = app.rpc.nats().clone();
    let mut events = nats.subscribe("media.removed").await.unwrap();
    nats.flush().await.unwrap();
    let started = Instant::now();
    app.rpc.emit("user.deleted", &json!({"userId": "long-gone"}), Default::default()).await.unwrap();
    let mut counts = HashMap::new();
    removed_events(&mut events, 1000, &mut counts).await.unwrap();
    eprintln!("cascade of 1,000 on {docs:?}: {:?}", started.elapsed());
    assert!(counts.values().all(|n| *n == 1), "one media.removed each");

    // The store, read directly (requests to this worker would time out): nothing left live.
    let mut live = ListFilter::new(Visibility::All);
    live.user_id = Some("long-gone".into());
    assert_eq!(app.store.list(&live).await.unwrap().total, 0, "every media removed");
    for record in &records {
        let now = app.store.get(&record.media.id).await.unwrap().unwrap();
        assert_eq!(now.media.status, MediaStatus::Deleted);
    }
}

#[tokio::test]
async fn a_cascade_outlasts_the_request_timeout_on_sqlite() {
    cascade_outlasts_the_request_timeout(Docs::Sqlite).await;
}

#[tokio::test]
async fn a_cascade_outlasts_the_request_timeout_on_mongo() {
    cascade_outlasts_the_request_timeout(Docs::Mongo).await;
}

#[tokio::test]
async fn entity_deleted_removes_only_that_entitys_media() {
    let app = TestApp::spawn().await;
    let linked = [document("a", Some(("course", "c1"))), document("b", Some(("course", "c1")))];
    let others = [document("a", Some(("course", "c2"))), document("a", Some(("lesson", "c1"))), document("a", None)];
    for r in linked.iter().chain(&others) {
        app.store.insert(r).await.unwrap();
    }
    let nats = app.rpc.nats().clone();
    let mut events = nats.subscribe("media.removed").await.unwrap();
    nats.flush().await.unwrap();
    nestjs_emit(&app, "entity.deleted", json!({"entityType": "course", "entityId": "c1"}), 1).await;
    let mut counts = HashMap::new();
    removed_events(&mut events, 2, &mut counts).await.unwrap();
    for r in &linked {
        assert_eq!(counts.get(&r.media.id), Some(&1));
        assert_eq!(app.store.get(&r.media.id).await.unwrap().unwrap().media.status, MediaStatus::Deleted);
    }
    for r in &others {
        assert_eq!(app.store.get(&r.media.id).await.unwrap().unwrap().media.status, MediaStatus::Ready);
    }
    // A malformed event is dropped (logged); the worker goes on serving.
    app.rpc.emit("entity.deleted", &json!({"entityType": "course"}), Default::default()).await.unwrap();
    let admin = token("root", "admin");
    assert!(app.call("media.findAll", json!({}), Some(&admin)).await.is_ok());
}

/// A sweeper on the test's own handles, as a worker builds it.
async fn sweeper(app: &TestApp, retention_days: u64, grace: Duration) -> Sweeper {
    Sweeper {
        store: Arc::clone(&app.store),
        blobs: app.settings.storage.open().await.unwrap(),
        retention_days,
        orphan_grace: grace,
    }
}

/// Uploads a PNG as `owner` and plants its variants (thumb and an HLS tree): (id, storage key,
/// variant keys).
async fn stored_media(app: &TestApp, blobs: &dyn BlobStore, owner: &str) -> (String, String, Vec<String>) {
    let media = app.upload(&token(owner, "user"), "p.png", &read(&media_files().png), json!({})).await.unwrap();
    let id = media["id"].as_str().unwrap().to_owned();
    let key = app.store.get(&id).await.unwrap().unwrap().storage_key.expect("stored bytes");
    let variants: Vec<String> = ["thumb.webp", "hls/master.m3u8", "hls/360p/seg_1.m4s"]
        .iter()
        .map(|file| mediabus_contracts::variants::key(&id, file))
        .collect();
    for v in &variants {
        blobs.put(v, body_from_bytes(Bytes::from_static(b"variant"))).await.unwrap();
    }
    (id, key, variants)
}

async fn gone(blobs: &dyn BlobStore, key: &str) -> bool {
    matches!(blobs.head(key).await, Err(StorageError::NotFound))
}

/// Retention 0: two sweepers at once purge each removed media once (bytes and every variant),
/// the documents stay DELETED for admins; `media.purge` is admin-only and immediate.
async fn retention_zero_purges(files: Files) {
    let app = TestApp::spawn_with(files, Docs::Sqlite, 2).await;
    let (one, two) =
        (sweeper(&app, 0, Duration::from_secs(3600)).await, sweeper(&app, 0, Duration::from_secs(3600)).await);
    let blobs = Arc::clone(&one.blobs);
    let owner = token("olga", "user");
    let mut removed = Vec::new();
    for _ in 0..4 {
        let (id, key, variants) = stored_media(&app, blobs.as_ref(), "olga").await;
        app.call("media.remove", json!({"id": id}), Some(&owner)).await.unwrap();
        removed.push((id, key, variants));
    }
    let (kept_id, kept_key, kept_variants) = stored_media(&app, blobs.as_ref(), "olga").await;

    let mut purged = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while purged < removed.len() && Instant::now() < deadline {
        let (a, b) = tokio::join!(one.sweep_once(), two.sweep_once());
        for report in [a.unwrap(), b.unwrap()].into_iter().flatten() {
            purged += report.purged;
        }
    }
    assert_eq!(purged, removed.len(), "each removed media purged exactly once");
    assert_eq!(one.sweep_once().await.unwrap().map(|r| r.purged), Some(0), "nothing left to purge");

    let admin = token("root", "admin");
    for (id, key, variants) in &removed {
        assert!(gone(blobs.as_ref(), key).await, "original bytes gone");
        for v in variants {
            assert!(gone(blobs.as_ref(), v).await, "{v} gone");
        }
        assert!(blobs.list(&mediabus_storage::variant_prefix(id), None, 10).await.unwrap().is_empty());
        if let Files::Local = files {
            let root = app.dir.path().join("files");
            assert!(!root.join(key).exists(), "not on disk");
        }
        let record = app.store.get(id).await.unwrap().expect("the document stays");
        assert_eq!((record.media.status, record.storage_key), (MediaStatus::Deleted, None));
    }
    let deleted = app.call("media.findByUser", json!({"userId": "olga", "status": "DELETED"}), Some(&admin)).await;
    assert_eq!(deleted.unwrap()["total"], 4, "admins still see the DELETED documents");
    assert!(!gone(blobs.as_ref(), &kept_key).await, "a live media keeps its bytes");
    for v in &kept_variants {
        assert!(!gone(blobs.as_ref(), v).await);
    }

    // media.purge: admin only; removes a live media first, then purges at once.
    assert_eq!(status(app.call("media.purge", json!({"id": kept_id}), Some(&owner)).await).0, 403);
    assert_eq!(status(app.call("media.purge", json!({"id": kept_id}), None).await).0, 401);
    assert_eq!(status(app.call("media.purge", json!({"id": "nope"}), Some(&admin)).await).0, 404);
    let purged = app.call("media.purge", json!({"id": kept_id}), Some(&admin)).await.unwrap();
    assert_eq!(purged["status"], "DELETED");
    assert!(gone(blobs.as_ref(), &kept_key).await);
    for v in &kept_variants {
        assert!(gone(blobs.as_ref(), v).await);
    }
    let again = app.call("media.purge", json!({"id": kept_id}), Some(&admin)).await.unwrap();
    assert_eq!(again["id"], kept_id.as_str(), "purging twice is fine");
    // Both workers still serve.
    for _ in 0..4 {
        app.call("media.findAll", json!({}), Some(&admin)).await.unwrap();
    }
}

#[tokio::test]
async fn retention_zero_purges_bytes_and_variants_on_local_disk() {
    retention_zero_purges(Files::Local).await;
}

#[tokio::test]
async fn retention_zero_purges_bytes_and_variants_on_s3() {
    retention_zero_purges(Files::S3).await;
}

/// Orphans planted on purpose go after a sweep past their grace period; fresh bytes and an upload
/// in flight stay, and the upload then completes.
async fn orphans_swept(files: Files) {
    let app = TestApp::spawn_with(files, Docs::Sqlite, 1).await;
    let patient = sweeper(&app, 30, Duration::from_secs(3600)).await;
    let blobs = Arc::clone(&patient.blobs);
    let alice = token("alice", "user");
    let (live_id, live_key, live_variants) = stored_media(&app, blobs.as_ref(), "alice").await;

    let orphan = new_key();
    blobs.put(&orphan, body_from_bytes(Bytes::from_static(b"no document"))).await.unwrap();
    let stray_variant = mediabus_contracts::variants::key(&new_media_id(), "thumb.webp");
    blobs.put(&stray_variant, body_from_bytes(Bytes::from_static(b"no media"))).await.unwrap();
    let tus_state = "tus/someupload/info.json";
    blobs.put(tus_state, body_from_bytes(Bytes::from_static(b"{}"))).await.unwrap();
    let abandoned_key = new_key();
    let abandoned = blobs.create_multipart(&abandoned_key).await.unwrap();
    blobs.put_part(&abandoned_key, &abandoned, 1, Bytes::from_static(b"half")).await.unwrap();
    // An upload in flight: its session is live.
    let png = read(&media_files().png);
    let created = app.call("upload.create", json!({"originalName": "p.png", "size": png.len()}), Some(&alice)).await;
    let upload_id = created.unwrap()["uploadId"].as_str().unwrap().to_owned();
    let part = json!({"uploadId": upload_id, "partNumber": 1, "data": crate::helpers::b64(&png)});
    app.call("upload.part", part, Some(&alice)).await.unwrap();
    let stale_tmp = app.dir.path().join("files/.tmp/crashed.put");
    if let Files::Local = files {
        std::fs::write(&stale_tmp, b"crashed mid-write").unwrap();
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options().write(true).open(&stale_tmp).unwrap().set_modified(two_hours_ago).unwrap();
    }

    // Within the grace period everything fresh stays; only the two-hour-old temp file goes.
    let report = patient.sweep_once().await.unwrap().expect("no other sweeper");
    let stale_temp_files = usize::from(matches!(files, Files::Local));
    assert_eq!(report, SweepReport { temp_files: stale_temp_files, ..SweepReport::default() });
    assert!(!stale_tmp.exists());
    assert!(!gone(blobs.as_ref(), &orphan).await);

    // Past a one-second grace (S3 times have second precision: poll), the orphans go.
    let eager = sweeper(&app, 30, Duration::from_secs(1)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut total = SweepReport::default();
    loop {
        if let Some(r) = eager.sweep_once().await.unwrap() {
            total.orphans += r.orphans;
            total.uploads += r.uploads;
        }
        let done = gone(blobs.as_ref(), &orphan).await
            && gone(blobs.as_ref(), &stray_variant).await
            && blobs.list_parts(&abandoned_key, &abandoned).await.is_err();
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone(blobs.as_ref(), &orphan).await, "bytes without a document");
    assert!(gone(blobs.as_ref(), &stray_variant).await, "variants of no media");
    assert!(matches!(blobs.list_parts(&abandoned_key, &abandoned).await, Err(StorageError::NotFound)));
    assert_eq!((total.orphans, total.uploads), (2, 1), "{total:?}");

    assert!(!gone(blobs.as_ref(), &live_key).await, "a media's bytes stay");
    assert!(!gone(blobs.as_ref(), tus_state).await, "the bridge's tus state is the bridge's to sweep");
    for v in &live_variants {
        assert!(!gone(blobs.as_ref(), v).await, "a live media's variants stay");
    }
    let done = app.call("upload.complete", json!({"uploadId": upload_id}), Some(&alice)).await.unwrap();
    assert_eq!(done["size"], png.len(), "the upload in flight was untouched and completes");
    assert!(app.call("media.findOne", json!({"id": live_id}), Some(&alice)).await.is_ok());
}

#[tokio::test]
async fn orphans_are_swept_and_uploads_in_flight_kept_on_local_disk() {
    orphans_swept(Files::Local).await;
}

#[tokio::test]
async fn orphans_are_swept_and_uploads_in_flight_kept_on_s3() {
    orphans_swept(Files::S3).await;
}

/// Makes the local-disk objects `keys` look written two hours ago (past any grace period here).
fn backdate(app: &TestApp, keys: &[&String]) {
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for key in keys {
        let path = app.dir.path().join("files").join(key.as_str());
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(two_hours_ago).unwrap();
    }
}

/// The sweeper's other branches, on objects past the grace period: with `retention_days = 30` a
/// media removed just now keeps its bytes and variants (not purged, not orphans); variants
/// written for a media after its purge (a processor finishing late) are orphans and go.
#[tokio::test]
async fn retention_keeps_removed_bytes_and_late_variants_of_purged_media_go() {
    let app = TestApp::spawn().await;
    let patient = sweeper(&app, 30, Duration::from_secs(3600)).await;
    let blobs = Arc::clone(&patient.blobs);
    let owner = token("rita", "user");
    let (kept, kept_key, kept_variants) = stored_media(&app, blobs.as_ref(), "rita").await;
    app.call("media.remove", json!({"id": kept}), Some(&owner)).await.unwrap();
    let (purged, purged_key, _) = stored_media(&app, blobs.as_ref(), "rita").await;
    app.call("media.purge", json!({"id": purged}), Some(&token("root", "admin"))).await.unwrap();
    assert!(gone(blobs.as_ref(), &purged_key).await);
    let late: Vec<String> =
        ["thumb.webp", "hls/master.m3u8"].iter().map(|file| mediabus_contracts::variants::key(&purged, file)).collect();
    for v in &late {
        blobs.put(v, body_from_bytes(Bytes::from_static(b"late variant"))).await.unwrap();
    }
    backdate(&app, &[&kept_key].into_iter().chain(&kept_variants).chain(&late).collect::<Vec<_>>());

    let report = patient.sweep_once().await.unwrap().expect("no other sweeper");
    assert_eq!(
        report,
        SweepReport { orphans: late.len(), ..SweepReport::default() },
        "nothing purged, the late variants swept"
    );
    for v in &late {
        assert!(gone(blobs.as_ref(), v).await, "{v}: a purged media's late variant is an orphan");
    }
    assert!(!gone(blobs.as_ref(), &kept_key).await, "removed within retention: bytes kept");
    for v in &kept_variants {
        assert!(!gone(blobs.as_ref(), v).await, "{v}: removed within retention: variants kept");
    }
    let record = app.store.get(&kept).await.unwrap().unwrap();
    assert_eq!((record.media.status, record.storage_key), (MediaStatus::Deleted, Some(kept_key)));
}

/// `media.analytics` from the bridge's user adds counts; `media.stats` is owner or admin (404 for
/// others); counts survive a worker restart; the backend user may not publish counts.
#[tokio::test]
async fn stats_count_flushed_batches_and_survive_a_restart() {
    let mut app = TestApp::spawn().await;
    let owner = token("sam", "user");
    let media = app.upload(&owner, "p.png", &read(&media_files().png), json!({})).await.unwrap();
    let id = media["id"].as_str().unwrap();
    let stats = app.call("media.stats", json!({"id": id}), Some(&owner)).await.unwrap();
    assert_eq!(stats, json!({"id": id, "views": 0, "downloads": 0}));

    let nats = app.nats_server();
    let bridge = NatsSettings::new(nats.url()).with_user("bridge", nats.password("bridge"));
    let bridge = mediabus_rpc::RpcClient::new(bridge.connect("bridge", 64).await.unwrap());
    let batch =
        json!({"counts": [{"id": id, "views": 100, "downloads": 10}, {"id": "other", "views": 1, "downloads": 0}]});
    let reply: Value = bridge.call("media.analytics", &batch).await.unwrap();
    assert_eq!(reply, json!({}));
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": format!("m{i}"), "views": 1, "downloads": 0})).collect();
    let refused = bridge.call::<_, Value>("media.analytics", &json!({"counts": too_many})).await;
    assert_eq!(refused.unwrap_err().status, 400);
    let forged = app.rpc.call::<_, Value>("media.analytics", &batch).await;
    assert!(forged.is_err(), "only the bridge may publish counts");

    let want = json!({"id": id, "views": 100, "downloads": 10});
    assert_eq!(app.call("media.stats", json!({"id": id}), Some(&owner)).await.unwrap(), want);
    assert_eq!(app.call("media.stats", json!({"id": id}), Some(&token("root", "admin"))).await.unwrap(), want);
    assert_eq!(status(app.call("media.stats", json!({"id": id}), Some(&token("eve", "user"))).await).0, 404);
    assert_eq!(status(app.call("media.stats", json!({"id": id}), None).await).0, 401);
    assert_eq!(status(app.call("media.stats", json!({"id": "nope"}), Some(&owner)).await).0, 404);

    // A new worker on the same store: nothing flushed is lost.
    app.restart_with(|_| {}).await;
    assert_eq!(app.call("media.stats", json!({"id": id}), Some(&owner)).await.unwrap(), want);
}

/// A worker configured with `retention_days = 0`: a cascade purges at once, and a media removed
/// by its owner is purged by the worker's own sweeper on its next round.
#[tokio::test]
async fn a_worker_with_retention_zero_purges_removed_media_itself() {
    let mut app = TestApp::spawn().await;
    app.restart_with(|settings| {
        settings.media.retention_days = 0;
        settings.media.lifecycle_sweep_secs = 1;
    })
    .await;
    let blobs = app.settings.storage.open().await.unwrap();

    let (cascaded, cascaded_key, cascaded_variants) = stored_media(&app, blobs.as_ref(), "gone").await;
    let (removed, removed_key, removed_variants) = stored_media(&app, blobs.as_ref(), "owner").await;
    let nats = app.rpc.nats().clone();
    let mut events = nats.subscribe("media.removed").await.unwrap();
    nats.flush().await.unwrap();
    nestjs_emit(&app, "user.deleted", json!({"userId": "gone"}), 1).await;
    app.call("media.remove", json!({"id": removed}), Some(&token("owner", "user"))).await.unwrap();
    let mut counts = HashMap::new();
    removed_events(&mut events, 2, &mut counts).await.unwrap();

    let all_keys: Vec<&String> =
        [&cascaded_key, &removed_key].into_iter().chain(&cascaded_variants).chain(&removed_variants).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut left = Vec::new();
        for key in &all_keys {
            if !gone(blobs.as_ref(), key).await {
                left.push(key.as_str());
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still stored: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in [&cascaded, &removed] {
        let record = app.store.get(id).await.unwrap().unwrap();
        assert_eq!((record.media.status, record.storage_key), (MediaStatus::Deleted, None));
    }
}
