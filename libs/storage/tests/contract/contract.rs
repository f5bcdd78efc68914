//! The contract: what every `BlobStore` does, each check a function taking the store(s).

use super::*;

pub async fn round_trip(store: &dyn BlobStore) {
    let key = new_key();
    let stored = store.put(&key, chunks(&[b"a", b"", b"bc"])).await.unwrap();
    assert_eq!(stored.size, 3);
    assert_eq!(stored.sha256_hex, SHA256_ABC, "known SHA-256 test vector");
    let (meta, body) = store.get(&key, None).await.unwrap();
    assert_eq!(read_all(body).await, b"abc");
    assert_eq!(meta.size, 3);
    assert!(!meta.etag.is_empty());
    let head = store.head(&key).await.unwrap();
    assert_eq!((head.size, &head.etag), (3, &meta.etag));
    let age = head.last_modified.elapsed().unwrap_or_default();
    assert!(age < Duration::from_secs(120), "last_modified is about now: {age:?} ago");

    // Odd chunk sizes, hash checked against a separate computation.
    let data = pattern_bytes(1, 100_000);
    let body =
        futures_util::stream::iter(data.chunks(7_001).map(|c| Ok(Bytes::copy_from_slice(c))).collect::<Vec<_>>());
    let stored = store.put(&key, Box::pin(body)).await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256_hex, sha256_hex(&data));
    assert_eq!(get_bytes(store, &key).await, data, "overwrite replaced the object");
    assert_ne!(store.head(&key).await.unwrap().etag, meta.etag, "etag changes on rewrite");

    let empty = new_key();
    let stored = store.put(&empty, body_from_bytes(Bytes::new())).await.unwrap();
    assert_eq!((stored.size, stored.sha256_hex.as_str()), (0, SHA256_EMPTY));
    assert_eq!(get_bytes(store, &empty).await, b"");
    assert_eq!(store.head(&empty).await.unwrap().size, 0);
}

/// 20 MiB streamed in and out in odd-sized chunks; neither side holds it whole.
pub async fn large_body(store: &dyn BlobStore) {
    let (total, chunk) = (20 * MIB, 300_007);
    let key = new_key();
    let stored = store.put(&key, pattern_stream(2, total, chunk)).await.unwrap();
    let (size, sha) = pattern_digest(2, total, chunk).await;
    assert_eq!((stored.size, &stored.sha256_hex), (size, &sha));
    assert_eq!(store.head(&key).await.unwrap().size, total as u64);
    let (meta, body) = store.get(&key, None).await.unwrap();
    assert_eq!(meta.size, total as u64);
    assert_eq!(digest_stream(body).await, (size, sha), "read back equals what was put");
}

pub async fn ranges(store: &dyn BlobStore) {
    let data = pattern_bytes(3, 10_000);
    let key = new_key();
    store.put(&key, body_from_bytes(Bytes::from(data.clone()))).await.unwrap();
    let cases = [
        (ByteRange::new(0, 0).unwrap(), 0..=0), // first byte
        (ByteRange::new(0, 99).unwrap(), 0..=99),
        (ByteRange::new(5_000, 5_999).unwrap(), 5_000..=5_999), // middle
        (ByteRange::new(9_999, 9_999).unwrap(), 9_999..=9_999), // last byte
        (ByteRange::new(9_990, 20_000).unwrap(), 9_990..=9_999), // end clamped
        (ByteRange::from(9_000), 9_000..=9_999),                // open end
    ];
    for (range, expected) in cases {
        let (meta, body) = store.get(&key, Some(range)).await.unwrap();
        assert_eq!(meta.size, 10_000, "{range:?}: size is the whole object's");
        assert_eq!(range.resolve(meta.size), Some((*expected.start(), *expected.end())));
        let (start, end) = (*expected.start() as usize, *expected.end() as usize);
        assert_eq!(read_all(body).await, &data[start..=end], "{range:?}");
    }
    for range in [ByteRange::new(10_000, 10_005).unwrap(), ByteRange::from(12_345)] {
        let result = store.get(&key, Some(range)).await.map(|(meta, _)| meta);
        assert!(matches!(result, Err(StorageError::InvalidRange)), "{range:?}: {result:?}");
    }
    let empty = new_key();
    store.put(&empty, body_from_bytes(Bytes::new())).await.unwrap();
    let result = store.get(&empty, Some(ByteRange::from(0))).await.map(|(meta, _)| meta);
    assert!(matches!(result, Err(StorageError::InvalidRange)), "empty object: {result:?}");
    let missing = store.get(&new_key(), Some(ByteRange::from(0))).await;
    assert_not_found(missing.map(|r| r.0), "range of a missing key");
}

pub async fn missing_and_delete(store: &dyn BlobStore) {
    let missing = new_key();
    assert_not_found(store.get(&missing, None).await.map(|r| r.0), "get missing");
    assert_not_found(store.head(&missing).await, "head missing");
    store.delete(&missing).await.expect("deleting a missing key succeeds");

    let key = new_key();
    store.put(&key, body_from_bytes(Bytes::from_static(b"doomed"))).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_not_found(store.head(&key).await, "head after delete");
    assert_not_found(store.get(&key, None).await.map(|r| r.0), "get after delete");
    store.delete(&key).await.expect("delete is idempotent");
}

pub async fn invalid_keys(store: &dyn BlobStore) {
    let long = "a".repeat(513);
    let bad = ["", "/abs", "trailing/", "a//b", "..", "../up", "a/../b", ".tmp/x", ".uploads/x"];
    let bad = bad.iter().copied().chain(["UPPER", "sp ace", "ümlaut", "back\\slash", &long]);
    for key in bad {
        let invalid = |what: &str, r: Result<(), StorageError>| {
            assert!(matches!(r, Err(StorageError::InvalidKey(_))), "{what}({key:?}): {r:?}");
        };
        invalid("put", store.put(key, chunks(&[b"x"])).await.map(drop));
        invalid("get", store.get(key, None).await.map(drop));
        invalid("head", store.head(key).await.map(drop));
        invalid("delete", store.delete(key).await);
        invalid("create_multipart", store.create_multipart(key).await.map(drop));
        invalid("put_part", store.put_part(key, "u1", 1, Bytes::new()).await.map(drop));
        invalid("list_parts", store.list_parts(key, "u1").await.map(drop));
        invalid("complete", store.complete_multipart(key, "u1", &[]).await.map(drop));
        invalid("abort", store.abort_multipart(key, "u1").await);
    }
    // Nothing was created by any of them.
    assert_not_found(store.head("a/b").await, "sanity");
}

/// Parts put out of order through two store instances (as two workers would), one of them
/// re-sent (a retry: same bytes); completed through the other instance.
pub async fn multipart(a: &dyn BlobStore, b: &dyn BlobStore) {
    let min = a.min_part_size().max(64 * 1024) as usize;
    let parts = [pattern_bytes(11, min + 17), pattern_bytes(12, min), pattern_bytes(13, 1_000)];
    let whole = parts.concat();
    let key = new_key();
    let id = a.create_multipart(&key).await.unwrap();
    assert_not_found(a.head(&key).await, "nothing visible before completion");

    let put = |store: &'static str, n: u32, data: &[u8]| {
        let store = if store == "a" { a } else { b };
        store.put_part(&key, &id, n, Bytes::copy_from_slice(data))
    };
    let r3 = put("b", 3, &parts[2]).await.unwrap();
    let r1 = put("a", 1, &parts[0]).await.unwrap();
    put("b", 2, &parts[1]).await.unwrap();
    let r2 = put("a", 2, &parts[1]).await.unwrap(); // the retry replaces the first attempt
    assert_eq!((r1.part_number, r1.size), (1, parts[0].len() as u64));
    assert_eq!((r3.part_number, r3.size), (3, 1_000));

    let listed = b.list_parts(&key, &id).await.unwrap();
    assert_eq!(listed, vec![r1.clone(), r2.clone(), r3.clone()], "parts as stored, in order");
    assert_not_found(a.head(&key).await, "still nothing visible");

    let stored = b.complete_multipart(&key, &id, &[r1, r2, r3]).await.unwrap();
    assert_eq!(stored.size, whole.len() as u64);
    assert_eq!(stored.sha256_hex, sha256_hex(&whole), "hash of the whole object");
    assert_eq!(get_bytes(a, &key).await, whole);
    assert_not_found(a.list_parts(&key, &id).await, "upload ended by completion");
    a.abort_multipart(&key, &id).await.expect("abort after completion is a no-op");
    assert_eq!(get_bytes(b, &key).await, whole, "and left the object alone");
}

/// Parts put with their offsets (`put_part_at`), out of order through two instances, the last
/// one first and re-sent shorter, the first one re-sent with other bytes: the object is exactly
/// the parts listed at completion.
pub async fn multipart_at_offsets(a: &dyn BlobStore, b: &dyn BlobStore) {
    let part = a.min_part_size().max(64 * 1024) as usize;
    let parts = [pattern_bytes(61, part), pattern_bytes(62, part), pattern_bytes(63, part), pattern_bytes(64, 999)];
    let whole = parts.concat();
    let key = new_key();
    let id = a.create_multipart(&key).await.unwrap();
    let put = |store: &'static str, n: u32, data: Vec<u8>| {
        let store = if store == "a" { a } else { b };
        store.put_part_at(&key, &id, n, (n as u64 - 1) * part as u64, Bytes::from(data))
    };
    put("a", 4, pattern_bytes(65, 5_000)).await.unwrap(); // a longer last part, replaced below
    let r4 = put("b", 4, parts[3].clone()).await.unwrap();
    let r2 = put("a", 2, parts[1].clone()).await.unwrap();
    let r3 = put("b", 3, parts[2].clone()).await.unwrap();
    let first = put("a", 1, pattern_bytes(66, part)).await.unwrap();
    let r1 = put("b", 1, parts[0].clone()).await.unwrap(); // replaces the first attempt
    assert_ne!(first.etag, r1.etag);
    assert_eq!((r4.part_number, r4.size), (4, 999));
    match b.list_parts(&key, &id).await {
        Ok(listed) => assert_eq!(listed, vec![r1.clone(), r2.clone(), r3.clone(), r4.clone()]),
        // SeaweedFS cannot tell parts re-sent within a second apart (see `list_parts`).
        Err(StorageError::Backend(_)) => {}
        Err(e) => panic!("list_parts: {e:?}"),
    }
    assert_not_found(a.head(&key).await, "nothing visible before completion");

    let stored = a.complete_multipart(&key, &id, &[r1, r2, r3, r4]).await.unwrap();
    assert_eq!(stored.size, whole.len() as u64);
    assert_eq!(stored.sha256_hex, sha256_hex(&whole));
    assert_eq!(get_bytes(b, &key).await, whole);
    assert_not_found(b.list_parts(&key, &id).await, "upload ended by completion");
    let late = b.put_part_at(&key, &id, 2, part as u64, Bytes::from_static(b"late")).await;
    assert_not_found(late, "a part after completion");
    assert_eq!(get_bytes(a, &key).await, whole, "and the object is unchanged");
}

pub async fn multipart_errors(store: &dyn BlobStore) {
    let key = new_key();
    let id = store.create_multipart(&key).await.unwrap();
    let invalid_part = |what: &str, r: Result<(), StorageError>| {
        assert!(matches!(r, Err(StorageError::InvalidPart(_))), "{what}: {r:?}");
    };
    for n in [0, 10_001] {
        let r = store.put_part(&key, &id, n, Bytes::from_static(b"x")).await.map(drop);
        invalid_part(&format!("part number {n}"), r);
    }
    invalid_part("no parts", store.complete_multipart(&key, &id, &[]).await.map(drop));

    let min = store.min_part_size() as usize;
    let r1 = store.put_part(&key, &id, 1, Bytes::from(pattern_bytes(21, min))).await.unwrap();
    let r2 = store.put_part(&key, &id, 2, Bytes::from_static(b"tail")).await.unwrap();
    let r = store.complete_multipart(&key, &id, &[r2.clone(), r1.clone()]).await.map(drop);
    invalid_part("descending parts", r);
    let mut never_sent = r2.clone();
    never_sent.part_number = 3;
    let r = store.complete_multipart(&key, &id, &[r1.clone(), never_sent]).await.map(drop);
    invalid_part("a part never uploaded", r);
    assert_not_found(store.head(&key).await, "failed completions leave no object");

    // The upload is still usable after refused completions.
    let stored = store.complete_multipart(&key, &id, &[r1, r2]).await.unwrap();
    assert_eq!(stored.size, min as u64 + 4);

    let other = store.create_multipart(&new_key()).await.unwrap();
    let r = store.put_part(&key, &other, 1, Bytes::from_static(b"x")).await;
    assert_not_found(r, "an upload id of another key");
    let unknown = store.put_part(&new_key(), "nosuchupload", 1, Bytes::from_static(b"x")).await;
    assert_not_found(unknown, "an unknown upload id");
}

/// Aborts an upload with two parts; returns its key and id for backend-specific checks.
pub async fn abort(store: &dyn BlobStore) -> (String, String) {
    let key = new_key();
    let id = store.create_multipart(&key).await.unwrap();
    let min = store.min_part_size() as usize;
    let r1 = store.put_part(&key, &id, 1, Bytes::from(pattern_bytes(31, min))).await.unwrap();
    let r2 = store.put_part(&key, &id, 2, Bytes::from_static(b"end")).await.unwrap();
    assert_eq!(store.list_parts(&key, &id).await.unwrap().len(), 2);

    store.abort_multipart(&key, &id).await.unwrap();
    assert_not_found(store.list_parts(&key, &id).await, "parts after abort");
    assert_not_found(store.complete_multipart(&key, &id, &[r1, r2]).await, "complete after abort");
    assert_not_found(store.head(&key).await, "no object from an aborted upload");
    store.abort_multipart(&key, &id).await.expect("abort is idempotent");
    (key, id)
}

/// A body that fails after `ok_bytes`: the put fails, an existing object stays as it was, a
/// new key stays empty. Returns the keys for backend-specific checks.
pub async fn failing_body(store: &dyn BlobStore, ok_bytes: usize) -> [String; 2] {
    let existing = new_key();
    store.put(&existing, chunks(&[b"old ", b"content"])).await.unwrap();
    let result = store.put(&existing, failing_stream(ok_bytes)).await;
    assert!(matches!(result, Err(StorageError::Io(_))), "{result:?}");
    assert_eq!(get_bytes(store, &existing).await, b"old content", "old object untouched");

    let fresh = new_key();
    let result = store.put(&fresh, failing_stream(ok_bytes)).await;
    assert!(matches!(result, Err(StorageError::Io(_))), "{result:?}");
    assert_not_found(store.head(&fresh).await, "no partial object");
    assert_not_found(store.get(&fresh, None).await.map(|r| r.0), "no partial object");
    [existing, fresh]
}

/// A put whose future is dropped mid-body (the caller gave up) leaves no object.
pub async fn dropped_put(store: &dyn BlobStore, ok_bytes: usize) -> String {
    let key = new_key();
    let stalled = pattern_stream(41, ok_bytes, MIB).chain(futures_util::stream::pending());
    let result = tokio::time::timeout(Duration::from_secs(1), store.put(&key, Box::pin(stalled)));
    assert!(result.await.is_err(), "the put was still waiting for the body");
    assert_not_found(store.head(&key).await, "no object from a dropped put");
    key
}

pub async fn health(store: &dyn BlobStore) {
    store.health_check().await.unwrap();
}

/// `list`: every object once, in byte order of key, paged by `start_after`, filtered by
/// prefix (a partial segment too); multipart uploads in progress and temp files never show.
pub async fn listing(store: &dyn BlobStore) {
    let mut keys = vec![
        "ab/cd/k1".to_owned(),
        "ab/cd/k2".to_owned(),
        "ab/ce/k3".to_owned(),
        "abx/k4".to_owned(),
        "variants/m1/thumb.webp".to_owned(),
        "variants/m1/hls/master.m3u8".to_owned(),
        "variants/m2/thumb.webp".to_owned(),
    ];
    for (i, key) in keys.iter().enumerate() {
        store.put(key, body_from_bytes(Bytes::from(vec![b'x'; i + 1]))).await.unwrap();
    }
    let pending = new_key();
    let upload = store.create_multipart(&pending).await.unwrap();
    store.put_part(&pending, &upload, 1, Bytes::from_static(b"part")).await.unwrap();
    keys.sort();

    let all = store.list("", None, 1000).await.unwrap();
    assert_eq!(all.iter().map(|o| o.key.clone()).collect::<Vec<_>>(), keys, "byte order, parts never listed");
    let size_of = |key: &str| all.iter().find(|o| o.key == key).unwrap().size;
    assert_eq!(size_of("ab/cd/k1"), 1);
    assert_eq!(size_of("variants/m2/thumb.webp"), 7);
    assert!(all.iter().all(|o| o.last_modified.elapsed().unwrap_or_default() < Duration::from_secs(300)));

    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("", after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        walked.extend(page.into_iter().map(|o| o.key));
    }
    assert_eq!(walked, keys, "pages of 2 walk every key once");

    let names = |listed: Vec<mediabus_storage::ListedObject>| listed.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(
        names(store.list("variants/m1/", None, 10).await.unwrap()),
        ["variants/m1/hls/master.m3u8", "variants/m1/thumb.webp"]
    );
    assert_eq!(names(store.list("ab/c", None, 10).await.unwrap()), ["ab/cd/k1", "ab/cd/k2", "ab/ce/k3"]);
    assert_eq!(names(store.list("ab/", Some("ab/cd/k1"), 10).await.unwrap()), ["ab/cd/k2", "ab/ce/k3"]);
    assert_eq!(names(store.list("none/", None, 10).await.unwrap()), Vec::<String>::new());
    assert!(matches!(store.list("../", None, 10).await, Err(StorageError::InvalidKey(_))));
    assert!(matches!(store.list(".tmp/", None, 10).await, Err(StorageError::InvalidKey(_))));

    store.delete("ab/cd/k2").await.unwrap();
    assert_eq!(names(store.list("ab/cd/", None, 10).await.unwrap()), ["ab/cd/k1"]);
    store.abort_multipart(&pending, &upload).await.unwrap();
}

/// `list_incomplete_uploads` lists uploads idle longer than asked; `sweep_incomplete_uploads`
/// aborts them except those kept; completed uploads never show.
pub async fn incomplete_uploads(store: &dyn BlobStore) {
    let (stale, kept, done) = (new_key(), new_key(), new_key());
    let stale_id = store.create_multipart(&stale).await.unwrap();
    store.put_part(&stale, &stale_id, 1, Bytes::from_static(b"stale")).await.unwrap();
    let kept_id = store.create_multipart(&kept).await.unwrap();
    let done_id = store.create_multipart(&done).await.unwrap();
    let receipt = store.put_part(&done, &done_id, 1, Bytes::from_static(b"done")).await.unwrap();
    store.complete_multipart(&done, &done_id, &[receipt]).await.unwrap();

    let recent = store.list_incomplete_uploads(Duration::from_secs(3600), 100).await.unwrap();
    assert_eq!(recent, vec![], "nothing has been idle for an hour");
    // S3 times have second precision: poll until both count as idle for zero seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let listed = store.list_incomplete_uploads(Duration::ZERO, 100).await.unwrap();
        if listed.len() >= 2 || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids: Vec<(String, String)> = listed.iter().map(|u| (u.key.clone(), u.upload_id.clone())).collect();
    ids.sort();
    let mut want = vec![(stale.clone(), stale_id.clone()), (kept.clone(), kept_id.clone())];
    want.sort();
    assert_eq!(ids, want, "the two open uploads, not the completed one");

    let keep = std::collections::HashSet::from([kept_id.clone()]);
    assert_eq!(store.sweep_incomplete_uploads(Duration::ZERO, 100, &keep).await.unwrap(), 1);
    assert_not_found(store.list_parts(&stale, &stale_id).await, "the swept upload");
    assert!(store.list_parts(&kept, &kept_id).await.is_ok(), "the kept upload stays");
    assert_eq!(store.sweep_temp(Duration::from_secs(3600)).await.unwrap(), 0, "no old temp file");
    store.abort_multipart(&kept, &kept_id).await.unwrap();
}
