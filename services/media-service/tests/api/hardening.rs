//! Issue 12 (hardening): lost updates (16), metadata shape (14), raw parts decided by header
//! (13), service-owned chunked uploads (12).

use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::helpers::{Docs, Files, TestApp, b64, status, token};

/// Registers a media by URL as `token`.
async fn create(app: &TestApp, token: &str, name: &str) -> Value {
    let data = json!({"originalName": name, "url": "https://cdn.example/x.png", "mimeType": "image/png", "size": 1});
    app.call("media.create", data, Some(token)).await.unwrap()
}

/// Sends `bytes` as a raw `upload.part` (the body as is, `Upload-Id` and `Part-Number` headers).
async fn raw_part(
    app: &TestApp,
    token: &str,
    upload_id: &str,
    n: u32,
    bytes: &[u8],
) -> Result<Value, mediabus_rpc::RpcError> {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    headers.insert("Upload-Id", upload_id);
    headers.insert("Part-Number", n.to_string().as_str());
    let reply =
        app.rpc.nats().request_with_headers("upload.part", headers, Bytes::copy_from_slice(bytes)).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    match reply.get("err") {
        Some(err) => Err(mediabus_rpc::RpcError::from_remote(err.clone())),
        None => Ok(reply["response"].clone()),
    }
}

/// 16: a PATCH racing a DELETE must never write the old status back, whichever lands first.
async fn patch_and_delete_race(app: &TestApp) {
    let alice = token("alice", "user");
    for round in 0..50 {
        let media = create(app, &alice, &format!("race-{round}.png")).await;
        let id = media["id"].as_str().unwrap();
        let patch =
            app.call("media.update", json!({"id": id, "isPublic": true, "metadata": {"r": round}}), Some(&alice));
        let delete = app.call("media.remove", json!({"id": id}), Some(&alice));
        let (patched, deleted) = if round % 2 == 0 {
            tokio::join!(patch, delete)
        } else {
            let (d, p) = tokio::join!(delete, patch);
            (p, d)
        };
        deleted.expect("the removal succeeds");
        // The PATCH either landed first or saw the media gone (404), never anything else.
        if let Err(e) = patched {
            assert_eq!(e.status, 404, "round {round}: {e:?}");
        }
        let stored = app.store.get(id).await.unwrap().unwrap();
        assert_eq!(stored.media.status.as_str(), "DELETED", "round {round}: a racing PATCH revived the media");
    }
}

#[tokio::test]
async fn a_patch_racing_a_delete_always_ends_deleted() {
    patch_and_delete_race(&TestApp::spawn_with(Files::Local, Docs::Sqlite, 2).await).await;
}

#[tokio::test]
async fn a_patch_racing_a_delete_always_ends_deleted_on_mongo() {
    patch_and_delete_race(&TestApp::spawn_with(Files::Local, Docs::Mongo, 2).await).await;
}

/// 16: concurrent PATCHes of different fields both survive.
#[tokio::test]
async fn concurrent_patches_of_different_fields_all_survive() {
    let app = TestApp::spawn_with(Files::Local, Docs::Sqlite, 2).await;
    let alice = token("alice", "user");
    for round in 0..30 {
        let media = create(&app, &alice, &format!("both-{round}.png")).await;
        let id = media["id"].as_str().unwrap();
        let (a, b, c) = tokio::join!(
            app.call("media.update", json!({"id": id, "isPublic": true}), Some(&alice)),
            app.call("media.update", json!({"id": id, "metadata": {"k": round}}), Some(&alice)),
            app.call("media.update", json!({"id": id, "entityId": "course-1", "entityType": "course"}), Some(&alice)),
        );
        for result in [a, b, c] {
            result.expect("each PATCH succeeds (retried on a concurrent change)");
        }
        let m = app.store.get(id).await.unwrap().unwrap().media;
        assert!(m.is_public, "round {round}: isPublic lost");
        assert_eq!(m.metadata, Some(json!({"k": round})), "round {round}: metadata lost");
        assert_eq!(m.entity_id.as_deref(), Some("course-1"), "round {round}: entityId lost");
    }
}

/// 14: `metadata` is an object or null (DESIGN §4) on every subject that takes it.
#[tokio::test]
async fn metadata_must_be_an_object_or_null() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let invalid = ("400".parse::<u16>().unwrap(), "VALIDATION_FAILED".to_owned());
    for bad in [json!("a string"), json!(42), json!([1, 2]), json!(true)] {
        let data =
            json!({"originalName": "a.png", "url": "/a.png", "mimeType": "image/png", "size": 1, "metadata": bad});
        assert_eq!(status(app.call("media.create", data, Some(&alice)).await), invalid, "media.create {bad}");
        let file = json!({"file": {"buffer": b64(b"hello"), "originalname": "a.txt"}, "metadata": bad});
        assert_eq!(status(app.call("upload_file", file, Some(&alice)).await), invalid, "upload_file {bad}");
        let open = json!({"originalName": "a.bin", "metadata": bad});
        assert_eq!(status(app.call("upload.create", open, Some(&alice)).await), invalid, "upload.create {bad}");
    }
    let media = create(&app, &alice, "ok.png").await;
    let id = media["id"].as_str().unwrap();
    let patch = json!({"id": id, "metadata": "a string"});
    assert_eq!(status(app.call("media.update", patch, Some(&alice)).await), invalid);
    // Objects and null are fine.
    app.call("media.update", json!({"id": id, "metadata": {"a": 1}}), Some(&alice)).await.unwrap();
    let cleared = app.call("media.update", json!({"id": id, "metadata": null}), Some(&alice)).await.unwrap();
    assert!(cleared.get("metadata").is_none_or(Value::is_null), "{cleared}");
}

/// 13: a raw part is bytes whatever they look like: a file whose last part is a single newline,
/// or valid JSON, uploads byte for byte.
#[tokio::test]
async fn raw_parts_that_look_like_json_or_white_space_are_bytes() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    for last in [&b"\n"[..], br#"{"a":1}"#, b"  ", b"null"] {
        let created = app.call("upload.create", json!({"originalName": "f.bin"}), Some(&alice)).await.unwrap();
        let upload_id = created["uploadId"].as_str().unwrap();
        let part_size = created["partSize"].as_u64().unwrap() as usize;
        // A PDF signature so the file is of an accepted type.
        let mut first = b"%PDF-1.4\n".to_vec();
        first.resize(part_size, b'x');
        raw_part(&app, &alice, upload_id, 1, &first).await.unwrap();
        let accepted = raw_part(&app, &alice, upload_id, 2, last).await.expect("a raw part is never parsed");
        assert_eq!(accepted["size"], last.len(), "{accepted}");
        let media = app.call("upload.complete", json!({"uploadId": upload_id}), Some(&alice)).await.unwrap();
        assert_eq!(media["size"], (part_size + last.len()) as u64, "{media}");
    }
}

/// 12: a service that opens a chunked upload for a user (`userId`) can send its parts, complete
/// it (the media is the user's) and abort another; an unrelated user still cannot touch it.
#[tokio::test]
async fn a_service_finishes_the_upload_it_opened_for_a_user() {
    let app = TestApp::spawn().await;
    let service = token("svc-courses", "service");
    let bob = token("bob", "user");
    let open = json!({"originalName": "for-alice.txt", "userId": "alice"});
    let created = app.call("upload.create", open.clone(), Some(&service)).await.unwrap();
    let upload_id = created["uploadId"].as_str().unwrap();
    let part = json!({"uploadId": upload_id, "partNumber": 1, "data": b64(b"%PDF-1.4 alice")});
    assert_eq!(status(app.call("upload.part", part.clone(), Some(&bob)).await).0, 404, "not bob's");
    app.call("upload.part", part, Some(&service)).await.expect("the service sends the part");
    raw_part(&app, &service, upload_id, 1, b"%PDF-1.4 alice").await.expect("raw too");
    let media = app.call("upload.complete", json!({"uploadId": upload_id}), Some(&service)).await.unwrap();
    assert_eq!(media["userId"], "alice", "{media}");

    let other = app.call("upload.create", open, Some(&service)).await.unwrap();
    let other_id = other["uploadId"].as_str().unwrap();
    assert_eq!(status(app.call("upload.abort", json!({"uploadId": other_id}), Some(&bob)).await).0, 404);
    app.call("upload.abort", json!({"uploadId": other_id}), Some(&service)).await.expect("the service aborts");
}

/// 11: each part extends the session's TTL, so an upload whose parts keep coming outlives the
/// TTL counted from `upload.create`, even with the sweeper running every second.
#[tokio::test]
async fn parts_keep_an_upload_alive_past_its_first_ttl() {
    let mut app = TestApp::spawn().await;
    app.restart_with(|settings| {
        settings.media.upload_ttl_secs = 2;
        settings.media.sweep_interval_secs = 1;
    })
    .await;
    let alice = token("alice", "user");
    let created = app.call("upload.create", json!({"originalName": "slow.pdf"}), Some(&alice)).await.unwrap();
    let upload_id = created["uploadId"].as_str().unwrap();
    let started = std::time::Instant::now();
    // A slow client: the same part again every 700 ms for 4.5 s (more than twice the TTL).
    let part = b"%PDF-1.4 slow".to_vec();
    while started.elapsed() < std::time::Duration::from_millis(4500) {
        raw_part(&app, &alice, upload_id, 1, &part).await.expect("the session is still alive");
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    let media = app.call("upload.complete", json!({"uploadId": upload_id}), Some(&alice)).await.unwrap();
    assert_eq!(media["size"], part.len(), "{media}");
}

/// 10: a completion whose request is cut short (the caller's deadline passes mid-way: 504) still
/// ends whole, and its `Idempotency-Key` does not stay "in progress": retries converge on the
/// one document it made. Deadlines are tried from very short up until one cuts a completion.
#[tokio::test]
async fn a_completion_cut_by_its_deadline_still_ends_whole() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let mut cut = false;
    for (round, deadline_ms) in [2u64, 5, 10, 20, 40, 80].into_iter().enumerate() {
        let created = app.call("upload.create", json!({"originalName": "cut.pdf"}), Some(&alice)).await.unwrap();
        let upload_id = created["uploadId"].as_str().unwrap();
        let part_size = created["partSize"].as_u64().unwrap() as usize;
        let mut first = b"%PDF-1.4\n".to_vec();
        first.resize(part_size, b'x');
        raw_part(&app, &alice, upload_id, 1, &first).await.unwrap();
        raw_part(&app, &alice, upload_id, 2, b"end").await.unwrap();
        let key = format!("complete-{round}");
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let mut headers = HeaderMap::new();
        headers.insert("Idempotency-Key", key.as_str());
        headers.insert(mediabus_rpc::DEADLINE_HEADER, (now_ms + deadline_ms).to_string().as_str());
        let first_try = app.call_with("upload.complete", json!({"uploadId": upload_id}), Some(&alice), headers).await;
        let Err(e) = first_try else { continue };
        if e.status != 504 {
            continue;
        }
        cut = true;
        // Retries with the same key: 409 while the work runs, then the media it made.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let media = loop {
            let mut headers = HeaderMap::new();
            headers.insert("Idempotency-Key", key.as_str());
            match app.call_with("upload.complete", json!({"uploadId": upload_id}), Some(&alice), headers).await {
                Ok(media) => break media,
                Err(e) if e.status == 409 => {}
                Err(e) => panic!("round {round}: the retry got {e:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: the key stayed in progress");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(media["size"], (part_size + 3) as u64, "{media}");
    }
    let page = app.call("media.findByUser", json!({"userId": "alice", "limit": 100}), Some(&alice)).await.unwrap();
    // One document per completed upload, none twice.
    let ids: std::collections::HashSet<_> = page["items"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids.len(), page["items"].as_array().unwrap().len());
    if !cut {
        eprintln!("NOTE: no completion was slow enough to be cut by the shortest deadlines here");
    }
}

/// 10: an `Idempotency-Key` claimed by a create that died with its worker (no document, nothing
/// will release it) answers 409 only until `media.idempotency_claim_ttl_secs`; then a retry takes
/// it over and creates the media, once.
#[tokio::test]
async fn a_claim_left_by_a_dead_create_is_taken_over_after_its_ttl() {
    let mut app = TestApp::spawn().await;
    app.restart_with(|settings| settings.media.idempotency_claim_ttl_secs = 1).await;
    // What a worker killed between claiming the key and writing the document leaves behind.
    let scope = "media.create\u{1f}alice\u{1f}crashed-key";
    assert_eq!(app.store.claim_idempotency(scope, "ghost-media").await.unwrap(), None);

    let alice = token("alice", "user");
    let data = json!({"originalName": "a.png", "url": "https://cdn.example/a.png", "mimeType": "image/png", "size": 1});
    let with_key = || {
        let mut headers = HeaderMap::new();
        headers.insert("Idempotency-Key", "crashed-key");
        headers
    };
    let first = app.call_with("media.create", data.clone(), Some(&alice), with_key()).await;
    assert_eq!(status(first), (409, "IDEMPOTENCY_IN_PROGRESS".into()), "a young claim is in progress");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let media = loop {
        match app.call_with("media.create", data.clone(), Some(&alice), with_key()).await {
            Ok(media) => break media,
            Err(e) if e.status == 409 => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the dead claim was never taken over");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let again = app.call_with("media.create", data, Some(&alice), with_key()).await.unwrap();
    assert_eq!(again["id"], media["id"], "the key now answers with the media it made");
    let page = app.call("media.findByUser", json!({"userId": "alice"}), Some(&alice)).await.unwrap();
    assert_eq!(page["total"], 1, "{page}");
}

/// 10, on S3: a 1 GiB chunked upload whose store takes 35 s to complete (more than the 30 s
/// request timeout every other subject has) completes, exactly once: `upload.complete` runs
/// under its own 15-minute limit, a retry with the same `Idempotency-Key` meanwhile gets 409 and
/// afterwards the same media, and the checksum comes from the running digest of the parts (sent
/// in order) without downloading the object again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_completes_once_on_a_slow_s3() {
    use mediabus_testkit::DelayProxy;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const SLOW_COMPLETE: Duration = Duration::from_secs(35);
    let mut app = TestApp::spawn_with(Files::S3, Docs::Sqlite, 1).await;
    // The worker reaches SeaweedFS through a proxy that holds CompleteMultipartUpload back.
    let media_service::config::StorageConfig::S3 { endpoint: Some(endpoint), .. } = &app.settings.storage else {
        panic!("an S3 app");
    };
    let upstream = endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = DelayProxy::start(
        upstream,
        Arc::new(|chunk: &[u8]| {
            let line = chunk.split(|b| *b == b'\n').next().unwrap_or_default();
            let complete = line.starts_with(b"POST ") && line.windows(9).any(|w| w == b"uploadId=");
            complete.then_some(SLOW_COMPLETE)
        }),
    );
    app.restart_with(|settings| {
        if let media_service::config::StorageConfig::S3 { endpoint, .. } = &mut settings.storage {
            *endpoint = Some(format!("http://{}", proxy.addr()));
        }
    })
    .await;
    // A client that waits longer than the slow completion (its deadline travels with the request).
    let backend = app.nats_server().password("backend");
    let nats = mediabus_rpc::NatsSettings::new(app.nats_server().url()).with_user("backend", backend);
    let client = mediabus_rpc::RpcClient::new(nats.connect("slow-client", 1024).await.unwrap())
        .with_timeout(Duration::from_secs(180));

    let alice = token("alice", "user");
    let total: usize = 1 << 30;
    let created =
        app.call("upload.create", json!({"originalName": "big.mp4", "size": total}), Some(&alice)).await.unwrap();
    let upload_id = created["uploadId"].as_str().unwrap().to_owned();
    let part_size = created["partSize"].as_u64().unwrap() as usize;
    // Parts are made as they are sent (never the whole GiB in memory), one at a time, in order.
    let mut whole = Sha256::new();
    let mut part = vec![0u8; part_size];
    for (n, offset) in (0..total).step_by(part_size).enumerate() {
        let len = part_size.min(total - offset);
        let chunk = &mut part[..len];
        let seed = (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for (i, word) in chunk.chunks_mut(8).enumerate() {
            let value = (seed ^ i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9).to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
        if n == 0 {
            // An MP4 `ftyp` box: the file is typed as video/mp4 by its bytes (4 GiB allowed).
            chunk[..24].copy_from_slice(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2");
        }
        whole.update(&*chunk);
        raw_part(&app, &alice, &upload_id, n as u32 + 1, chunk).await.unwrap();
    }
    let expected: String = whole.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let expected = format!("sha256:{expected}");

    let complete = |client: mediabus_rpc::RpcClient| {
        let (upload_id, alice) = (upload_id.clone(), alice.clone());
        async move {
            let mut headers = HeaderMap::new();
            headers.insert("Authorization", format!("Bearer {alice}").as_str());
            headers.insert("Idempotency-Key", "big-upload");
            client.call_with_headers::<_, Value>("upload.complete", &json!({"uploadId": upload_id}), headers).await
        }
    };
    let before = proxy.bytes_to_clients();
    let started = Instant::now();
    let first = tokio::spawn(complete(client.clone()));
    // While the store is slow, a retry with the same key is told the first is still running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.delayed() == 0 {
        assert!(Instant::now() < deadline, "the completion never reached the store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(complete(client.clone()).await), (409, "IDEMPOTENCY_IN_PROGRESS".into()));
    let media = first.await.unwrap().expect("the slow completion succeeds");
    let took = started.elapsed();
    assert!(took >= SLOW_COMPLETE, "the store was slow: {took:?}");
    assert_eq!(media["size"], total as u64, "{media}");
    assert_eq!(media["checksum"], expected.as_str(), "{media}");
    let read_back = proxy.bytes_to_clients() - before;
    assert!(read_back < 1 << 20, "completion downloaded {read_back} bytes from the store");
    eprintln!("1 GiB completion: {took:?} with the store slowed by {SLOW_COMPLETE:?}; {read_back} bytes read back");

    let again = complete(client).await.expect("a retry after success");
    assert_eq!(again["id"], media["id"], "exactly once");
    let page = app.call("media.findByUser", json!({"userId": "alice"}), Some(&alice)).await.unwrap();
    assert_eq!(page["total"], 1, "{page}");
}

/// 15: file bytes are decoded only for a caller with a valid token: a forged or missing token
/// with a malformed multi-megabyte `upload_file` gets 401 (the body never parsed: not 400), and
/// so does a raw `upload.part`.
#[tokio::test]
async fn upload_bodies_are_decoded_only_after_the_token_is_checked() {
    let app = TestApp::spawn().await;
    let body = format!(r#"{{"pattern":"upload_file","id":"u1","data":{{"file":{{"buffer":"{}"#, "A".repeat(6 << 20));
    for authorization in [None, Some("Bearer forged.token.here")] {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("Authorization", value);
        }
        let reply = app.rpc.nats().request_with_headers("upload_file", headers, body.clone().into()).await.unwrap();
        let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(reply["err"]["status"], 401, "{authorization:?}: {}", reply["err"]);
    }
    let alice = token("alice", "user");
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {alice}").as_str());
    let reply = app.rpc.nats().request_with_headers("upload_file", headers, body.into()).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["err"]["status"], 400, "with a valid token the body is read (and is malformed)");

    let mut headers = HeaderMap::new();
    headers.insert("Upload-Id", "any");
    headers.insert("Part-Number", "1");
    let reply =
        app.rpc.nats().request_with_headers("upload.part", headers, Bytes::from_static(b"bytes")).await.unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["err"]["status"], 401, "{reply}");
}
