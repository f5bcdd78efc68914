//! What processing makes of media: variants, details and events, bad media, long jobs kept by
//! heartbeats, variants on S3.

use super::*;

/// Uploads of an image, a PDF and audio are `PROCESSING` at once, then `READY` with their
/// details and variants, each with exactly one `media.processed`; a media registered by URL is
/// not processed. A backend following the `media.*` events sees them without the caller's
/// `Authorization`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_processed_once_and_events_carry_no_credentials() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let backend = async_nats::ConnectOptions::new()
        .user_and_password("backend".into(), stack.nats.password("backend"))
        .connect(stack.nats.url())
        .await
        .unwrap();
    // Each event subject rather than `media.*`: nats/permissions.conf lets `backend` subscribe to
    // the events only, since `media.*` would also deliver other callers' requests (and tokens).
    let mut events = futures_util::stream::select_all(
        futures_util::future::join_all(
            ["media.created", "media.updated", "media.removed", "media.processed"].map(|s| backend.subscribe(s)),
        )
        .await
        .into_iter()
        .map(Result::unwrap),
    );
    backend.flush().await.unwrap();

    let files = media_files();
    let mut uploaded = Vec::new();
    for (path, kind) in [(&files.png, "png"), (&files.pdf, "pdf"), (&files.wav, "wav")] {
        let media = stack.upload("alice", &format!("sample.{kind}"), &std::fs::read(path).unwrap()).await;
        assert_eq!(media["status"], "PROCESSING", "{kind}: {media}");
        assert_eq!(media["failureReason"], Value::Null);
        uploaded.push((kind, media["id"].as_str().unwrap().to_owned()));
    }
    for (kind, id) in &uploaded {
        let media = stack.settled("alice", id).await;
        assert_eq!(media["status"], "READY", "{kind}: {media}");
        assert_eq!(media["failureReason"], Value::Null);
        let details = &media["details"];
        match *kind {
            "png" => {
                assert_eq!((details["width"].as_u64(), details["height"].as_u64()), (Some(160), Some(120)));
                assert_eq!(details["orientation"], 1);
                assert!(details["thumbhash"].as_str().is_some_and(|h| !h.is_empty()));
                assert_eq!(variant_names(&media), ["preview", "thumb"]);
                let thumb = media["variants"].as_array().unwrap().iter().find(|v| v["name"] == "thumb").unwrap();
                assert_eq!(thumb["url"], format!("/api/media/{id}/content?variant=thumb"));
                assert_eq!((thumb["mimeType"].as_str(), thumb["width"].as_u64()), (Some("image/webp"), Some(160)));
                assert!(thumb["size"].as_u64().unwrap() > 0);
                assert_eq!(stack.stored(&format!("variants/{id}/")).len(), 2, "thumb.webp and preview.jpg");
            }
            "pdf" => {
                assert_eq!(details["pageCount"], 1);
                assert_eq!(variant_names(&media), ["thumb"]);
            }
            _ => {
                assert!(details["durationMs"].as_u64().unwrap().abs_diff(1000) <= 100, "{details}");
                assert!(media["variants"].as_array().unwrap().is_empty());
            }
        }
        let events = processed.of(id, 1, Duration::from_secs(5)).await;
        assert_eq!(events.len(), 1, "{kind}: one media.processed");
        assert_eq!(events[0]["pattern"], "media.processed");
        assert_eq!(events[0]["data"]["status"], "READY");
        assert!(events[0].get("id").is_none(), "an event packet has no id");
    }

    // media.create (a URL) is READY and gets no job.
    let by_url =
        json!({"originalName": "a.png", "mimeType": "image/png", "size": 3, "url": "https://example.com/a.png"});
    let by_url = stack.call("media.create", Some("alice"), by_url).await.unwrap();
    assert_eq!(by_url["status"], "READY");

    // The backend saw media.created and media.processed, never with credentials; the trace
    // context of a request travels on.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while seen.len() < 2 {
        let Ok(Some(msg)) = tokio::time::timeout_at(deadline, events.next()).await else { break };
        let headers = msg.headers.clone().unwrap_or_default();
        assert!(
            headers.iter().all(|(k, _)| !AsRef::<str>::as_ref(k).eq_ignore_ascii_case("authorization")),
            "{} carries an Authorization header",
            msg.subject
        );
        let traceparent = headers.get("traceparent").map(|v| v.as_str().to_owned());
        assert_eq!(traceparent.as_deref(), Some(TRACEPARENT), "{} carries the request's trace context", msg.subject);
        seen.insert(msg.subject.to_string());
    }
    assert!(seen.contains("media.created") && seen.contains("media.processed"), "{seen:?}");
}

/// A PNG declaring 100000×100000 pixels ends `FAILED` with a readable reason while the
/// processor stays small; a truncated MP4 ends `FAILED`; reprocessing is for the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_fail_cleanly_and_reprocess_is_for_the_owner() {
    let stack = Stack::start(1, &[]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let bomb = stack.upload("alice", "bomb.png", &png_declaring(100_000, 100_000)).await;
    let bomb_id = bomb["id"].as_str().unwrap();
    let failed = stack.settled("alice", bomb_id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let reason = failed["failureReason"].as_str().expect("a reason");
    assert!(reason.contains("100000") && reason.to_lowercase().contains("pixel"), "readable: {reason}");
    let peak = stack.processors[0].peak_rss_kib();
    assert!(peak < 256 * 1024, "processor peak RSS {peak} KiB");
    eprintln!("processor peak RSS after the 100000×100000 PNG: {} MiB", peak / 1024);
    assert_eq!(processed.of(bomb_id, 1, Duration::from_secs(5)).await[0]["data"]["status"], "FAILED");

    let dir = tempfile::tempdir().unwrap();
    let whole = mp4(dir.path(), "whole.mp4", 320, 240, 2);
    let truncated = stack.upload("alice", "cut.mp4", &whole[..whole.len() * 3 / 5]).await;
    let cut = stack.settled("alice", truncated["id"].as_str().unwrap()).await;
    assert_eq!(cut["status"], "FAILED", "{cut}");
    assert!(cut["failureReason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(cut["variants"].as_array().unwrap().is_empty());

    // Reprocess: others get 404 (a private media), anonymous 401; the owner requeues it, and
    // the run ends again with one more media.processed.
    let not_found = stack.call("media.reprocess", Some("bob"), json!({"id": bomb_id})).await.unwrap_err();
    assert_eq!(not_found.status, 404);
    assert_eq!(stack.call("media.reprocess", None, json!({"id": bomb_id})).await.unwrap_err().status, 401);
    let again = stack.call("media.reprocess", Some("alice"), json!({"id": bomb_id})).await.unwrap();
    assert_eq!((again["status"].as_str(), again["failureReason"].as_str()), (Some("PROCESSING"), None));
    let failed_again = stack.settled("alice", bomb_id).await;
    assert_eq!(failed_again["failureReason"].as_str(), Some(reason));
    assert_eq!(processed.of(bomb_id, 2, Duration::from_secs(10)).await.len(), 2);
    // An admin may reprocess another user's private media.
    let by_admin = stack.call("media.reprocess", Some("admin"), json!({"id": bomb_id})).await.unwrap();
    assert_eq!(by_admin["status"], "PROCESSING", "{by_admin}");
    assert_eq!(stack.settled("alice", bomb_id).await["failureReason"].as_str(), Some(reason));
    assert_eq!(processed.of(bomb_id, 3, Duration::from_secs(10)).await.len(), 3);
}

/// A job longer than the ack wait (3 s here, so a heartbeat every second) is kept by its worker
/// through `AckKind::Progress`: JetStream never redelivers it, and it ends `READY` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_long_job_from_being_redelivered() {
    let stack = Stack::start(2, &[("MEDIABUS__JOBS__ACK_WAIT_SECS", "3")]).await;
    let mut processed = Processed::watch(&stack.client).await;
    let dir = tempfile::tempdir().unwrap();
    // About 10 s of work on one core: several ack waits.
    let video = mp4(dir.path(), "clip.mp4", 1280, 720, 24);
    let started = Instant::now();
    let id = stack.upload("alice", "clip.mp4", &video).await["id"].as_str().unwrap().to_owned();
    let done = stack.settled("alice", &id).await;
    let took = started.elapsed();
    assert_eq!(done["status"], "READY", "{done}");
    // Without heartbeats a job this long would have been delivered again (to the idle worker).
    assert!(took > Duration::from_secs(6), "the job took only {took:?}: too short to prove the heartbeats");
    // One delivery in all (each takes a consumer sequence), acked.
    let info = consumer_info(&stack.client).await;
    assert_eq!((info.delivered.consumer_sequence, info.num_ack_pending), (1, 0), "{info:?}");
    assert_eq!(processed.of(&id, 1, Duration::from_secs(5)).await.len(), 1, "READY once");
}

/// The processor on the S3 file store (SeaweedFS), shared with the media service: an uploaded
/// image ends `READY`, and its `thumb` and `preview` are objects in the bucket (of the sizes the
/// document records), with nothing written to the local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_go_to_the_s3_store() {
    let s3 = SeaweedS3::start();
    let config = StorageConfig::S3 {
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        bucket: "mediabus-processor-test".into(),
        access_key: "test".into(),
        secret_key: "test".into(),
    };
    let storage = vec![
        ("MEDIABUS__STORAGE__BACKEND", "s3".to_owned()),
        ("MEDIABUS__STORAGE__ENDPOINT", s3.endpoint()),
        ("MEDIABUS__STORAGE__REGION", "us-east-1".to_owned()),
        ("MEDIABUS__STORAGE__BUCKET", "mediabus-processor-test".to_owned()),
        ("MEDIABUS__STORAGE__ACCESS_KEY", "test".to_owned()),
        ("MEDIABUS__STORAGE__SECRET_KEY", "test".to_owned()),
    ];
    let stack = Stack::start_on(storage, 1, &[]).await;
    let id = stack.upload("alice", "frame.png", &std::fs::read(&media_files().png).unwrap()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = stack.settled("alice", &id).await;
    assert_eq!(done["status"], "READY", "{done}");
    assert_eq!(variant_names(&done), ["preview", "thumb"]);

    let blobs = config.open().await.unwrap();
    for (variant, file) in [("thumb", "thumb.webp"), ("preview", "preview.jpg")] {
        let recorded = done["variants"].as_array().unwrap().iter().find(|v| v["name"] == variant).unwrap();
        let object = blobs.head(&format!("variants/{id}/{file}")).await.expect("the variant is in the bucket");
        assert_eq!(Some(object.size), recorded["size"].as_u64(), "{variant}");
    }
    assert!(stack.stored("").is_empty(), "nothing on the local disk: {:?}", stack.stored(""));
}
