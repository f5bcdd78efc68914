//! One contract, two backends: every check in `contract` runs against a `LocalStore` in a temp dir
//! and an `S3Store` on a real SeaweedFS (one server for this test binary, one bucket per test).
//! Backend-specific checks (no temp file left, no multipart upload left) follow in `local_fs` and
//! `s3`.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_storage::{
    BlobStore, ByteRange, ByteStream, DIGEST_PREFIX, LocalStore, S3Config, S3Store, StorageError, body_from_bytes,
    new_key,
};
use mediabus_testkit::SeaweedS3;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;
const SHA256_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// ---------------------------------------------------------------------------------------------
// Test data: a deterministic pseudo-random byte source, so big bodies are generated chunk by
// chunk on both sides (put and check) instead of being held in memory.

/// xorshift64* bytes; `seed` picks the sequence.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    Pattern::new(seed).fill(&mut buf);
    buf
}

/// `total` pattern bytes as a stream of `chunk`-sized chunks (the last one shorter).
fn pattern_stream(seed: u64, total: usize, chunk: usize) -> ByteStream {
    let state = (Pattern::new(seed), total);
    Box::pin(futures_util::stream::unfold(state, move |(mut pattern, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; left.min(chunk)];
        pattern.fill(&mut buf);
        let left = left - buf.len();
        Some((Ok(Bytes::from(buf)), (pattern, left)))
    }))
}

/// The size and SHA-256 of what `pattern_stream(seed, total, chunk)` yields, computed apart.
async fn pattern_digest(seed: u64, total: usize, chunk: usize) -> (u64, String) {
    digest_stream(pattern_stream(seed, total, chunk)).await
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    Box::pin(futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()))
}

/// `ok_bytes` pattern bytes in 1 MiB chunks, then an I/O error, as a client that goes away.
fn failing_stream(ok_bytes: usize) -> ByteStream {
    let failure = futures_util::stream::iter([Err(io::Error::other("client went away"))]);
    Box::pin(pattern_stream(9, ok_bytes, MIB).chain(failure))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    out
}

async fn digest_stream(mut body: ByteStream) -> (u64, String) {
    let (mut size, mut hasher) = (0, Sha256::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (size, hex::encode(hasher.finalize()))
}

async fn get_bytes(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let (meta, body) = store.get(key, None).await.expect("get");
    let data = read_all(body).await;
    assert_eq!(meta.size, data.len() as u64, "meta.size of {key}");
    data
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(matches!(result, Err(StorageError::NotFound)), "{what}: expected NotFound, got {result:?}");
}

// ---------------------------------------------------------------------------------------------
// The contract: what every BlobStore does.

mod contract {
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
}

// ---------------------------------------------------------------------------------------------
// The local filesystem backend.

mod local_fs {
    use super::*;
    use std::path::Path;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("blobs")).unwrap();
        (dir, store)
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    macro_rules! contract_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                let (_dir, store) = store();
                contract::$name(&store).await;
                let left = entries(&store.root().join(".tmp"));
                assert_eq!(left, Vec::<String>::new(), "temp files left");
            }
        )*};
    }

    contract_tests!(round_trip, large_body, ranges, missing_and_delete, invalid_keys, health);
    contract_tests!(multipart_errors);
    contract_tests!(listing, incomplete_uploads);

    #[tokio::test]
    async fn multipart_at_offsets() {
        let (_dir, a) = store();
        let b = LocalStore::new(a.root()).unwrap();
        contract::multipart_at_offsets(&a, &b).await;
        assert_eq!(entries(&a.root().join(".uploads")), Vec::<String>::new(), "parts removed");
        assert_eq!(entries(&a.root().join(".tmp")), Vec::<String>::new());
    }

    /// Parts written in place and a part file (put without offset) for the same upload: the
    /// object is their concatenation; then nothing is left over.
    #[tokio::test]
    async fn parts_in_place_and_part_files_mix() {
        let (_dir, store) = store();
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let r1 = store.put_part_at(&key, &id, 1, 0, Bytes::from_static(b"abc")).await.unwrap();
        let r2 = store.put_part(&key, &id, 2, Bytes::from_static(b"de")).await.unwrap();
        // Offsets that do not join up still give the listed parts, in order.
        let r3 = store.put_part_at(&key, &id, 3, 100, Bytes::from_static(b"fgh")).await.unwrap();
        assert_eq!(store.list_parts(&key, &id).await.unwrap(), vec![r1.clone(), r2.clone(), r3.clone()]);
        let stored = store.complete_multipart(&key, &id, &[r1, r2, r3]).await.unwrap();
        assert_eq!(stored.sha256_hex, super::sha256_hex(b"abcdefgh"));
        assert_eq!(super::get_bytes(&store, &key).await, b"abcdefgh");
        assert_eq!(entries(&store.root().join(".uploads")), Vec::<String>::new());
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    /// Bytes of an upload's data file covered by its running digest (`sha256` in the upload
    /// directory), if it has one.
    fn hashed(store: &LocalStore, id: &str) -> Option<u64> {
        let bytes = std::fs::read(store.root().join(".uploads").join(id).join("sha256")).ok()?;
        Some(u64::from_le_bytes(bytes[..8].try_into().unwrap()))
    }

    /// Parts are hashed as they arrive in order (a part waits for the one before it, then is read
    /// back), the running digest recorded in the upload directory; a part sent again over hashed
    /// bytes drops it. Completion carries the digest on, or hashes all without one.
    #[tokio::test]
    async fn parts_in_order_are_hashed_as_they_arrive() {
        const PART: usize = 64 * 1024;
        let (_dir, store) = store();
        let key = new_key();
        let mut parts =
            [pattern_bytes(71, PART), pattern_bytes(72, PART), pattern_bytes(73, PART), pattern_bytes(74, 9)];
        let all = 3 * PART as u64 + 9;
        let put = async |id: &str, n: usize, data: &[u8]| {
            let at = (n * PART) as u64;
            store.put_part_at(&key, id, n as u32 + 1, at, Bytes::copy_from_slice(data)).await.unwrap();
            hashed(&store, id)
        };
        let complete = async |id: &str| {
            let receipts = store.list_parts(&key, id).await.unwrap();
            store.complete_multipart(&key, id, &receipts).await.unwrap().sha256_hex
        };

        let id = store.create_multipart(&key).await.unwrap();
        assert_eq!(put(&id, 1, &parts[1]).await, None, "part 2 alone continues nothing");
        assert_eq!(put(&id, 0, &parts[0]).await, Some(2 * PART as u64), "part 1, then part 2 read back");
        assert_eq!(put(&id, 3, &parts[3]).await, Some(2 * PART as u64), "part 4 waits for part 3");
        assert_eq!(put(&id, 2, &parts[2]).await, Some(all), "parts 3 and 4");
        parts[1] = pattern_bytes(75, PART);
        assert_eq!(put(&id, 1, &parts[1]).await, None, "part 2 sent again with other bytes");
        assert_eq!(complete(&id).await, super::sha256_hex(&parts.concat()), "hashed whole at completion");

        let id = store.create_multipart(&key).await.unwrap();
        for (n, data) in parts.iter().enumerate() {
            assert_eq!(put(&id, n, data).await, Some((n * PART + data.len()) as u64), "part {}", n + 1);
        }
        assert_eq!(complete(&id).await, super::sha256_hex(&parts.concat()), "the digest carried on");
        assert_eq!(super::get_bytes(&store, &key).await, parts.concat());
    }

    /// A part written in place and re-sent: a completion with the old receipt is refused and
    /// leaves the upload as it was; the new receipt completes it.
    #[tokio::test]
    async fn a_replaced_span_invalidates_its_old_receipt() {
        let (_dir, store) = store();
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let r1 = store.put_part_at(&key, &id, 1, 0, Bytes::from_static(b"one")).await.unwrap();
        let old = store.put_part_at(&key, &id, 2, 3, Bytes::from_static(b"old")).await.unwrap();
        let new = store.put_part_at(&key, &id, 2, 3, Bytes::from_static(b"two")).await.unwrap();
        let r = store.complete_multipart(&key, &id, &[r1.clone(), old]).await;
        assert!(matches!(r, Err(StorageError::InvalidPart(_))), "{r:?}");
        assert!(matches!(store.head(&key).await, Err(StorageError::NotFound)));
        assert_eq!(store.list_parts(&key, &id).await.unwrap(), vec![r1.clone(), new.clone()]);
        let stored = store.complete_multipart(&key, &id, &[r1, new]).await.unwrap();
        assert_eq!(stored.sha256_hex, super::sha256_hex(b"onetwo"));
        assert_eq!(super::get_bytes(&store, &key).await, b"onetwo");
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    /// A part re-sent the other way (with, then without offset) replaces the earlier form.
    #[tokio::test]
    async fn a_part_resent_without_offset_replaces_its_span() {
        let (_dir, store) = store();
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let old = store.put_part_at(&key, &id, 1, 0, Bytes::from_static(b"old")).await.unwrap();
        let new = store.put_part(&key, &id, 1, Bytes::from_static(b"new!")).await.unwrap();
        assert_eq!(store.list_parts(&key, &id).await.unwrap(), vec![new.clone()]);
        let r = store.complete_multipart(&key, &id, &[old]).await;
        assert!(matches!(r, Err(StorageError::InvalidPart(_))), "{r:?}");
        assert_eq!(store.complete_multipart(&key, &id, &[new]).await.unwrap().size, 4);
        assert_eq!(super::get_bytes(&store, &key).await, b"new!");
    }

    /// Parts written in place, then aborted: nothing is left, and late parts are refused.
    #[tokio::test]
    async fn abort_removes_parts_written_in_place() {
        let (_dir, store) = store();
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let r1 = store.put_part_at(&key, &id, 1, 0, Bytes::from(super::pattern_bytes(71, MIB))).await.unwrap();
        store.abort_multipart(&key, &id).await.unwrap();
        let late = store.put_part_at(&key, &id, 2, MIB as u64, Bytes::from_static(b"x")).await;
        assert!(matches!(late, Err(StorageError::NotFound)), "{late:?}");
        let r = store.complete_multipart(&key, &id, &[r1]).await;
        assert!(matches!(r, Err(StorageError::NotFound)), "{r:?}");
        assert!(matches!(store.head(&key).await, Err(StorageError::NotFound)));
        assert_eq!(entries(&store.root().join(".uploads")), Vec::<String>::new());
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn multipart_across_instances() {
        let (_dir, a) = store();
        let b = LocalStore::new(a.root()).unwrap(); // a second process on the same directory
        contract::multipart(&a, &b).await;
        assert_eq!(entries(&a.root().join(".uploads")), Vec::<String>::new(), "parts removed");
        assert_eq!(entries(&a.root().join(".tmp")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn abort_removes_the_parts() {
        let (_dir, store) = store();
        let (_, id) = contract::abort(&store).await;
        assert!(!store.root().join(".uploads").join(id).exists(), "upload dir removed");
        assert_eq!(entries(&store.root().join(".uploads")), Vec::<String>::new());
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn failing_body_leaves_no_temp_file() {
        let (_dir, store) = store();
        contract::failing_body(&store, 3 * MIB).await;
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    #[tokio::test]
    async fn dropped_put_leaves_no_temp_file() {
        let (_dir, store) = store();
        contract::dropped_put(&store, 2 * MIB).await;
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }

    /// A part replaced by different bytes: listed as the new one; the old receipt is refused.
    #[tokio::test]
    async fn replaced_part_invalidates_its_old_receipt() {
        let (_dir, store) = store();
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let old = store.put_part(&key, &id, 1, Bytes::from_static(b"old")).await.unwrap();
        let new = store.put_part(&key, &id, 1, Bytes::from_static(b"newer")).await.unwrap();
        assert_ne!(old.etag, new.etag);
        assert_eq!(store.list_parts(&key, &id).await.unwrap(), vec![new.clone()]);
        let r = store.complete_multipart(&key, &id, &[old]).await;
        assert!(matches!(r, Err(StorageError::InvalidPart(_))), "{r:?}");
        assert_eq!(store.complete_multipart(&key, &id, &[new]).await.unwrap().size, 5);
        assert_eq!(super::get_bytes(&store, &key).await, b"newer");
    }

    #[tokio::test]
    async fn upload_ids_are_validated() {
        let (_dir, store) = store();
        let key = new_key();
        for id in ["", "../x", "a/b", "UP", ".", "x".repeat(65).as_str()] {
            let r = store.put_part(&key, id, 1, Bytes::from_static(b"x")).await;
            assert!(matches!(r, Err(StorageError::InvalidKey(_))), "{id:?}: {r:?}");
        }
    }

    #[tokio::test]
    async fn keys_become_files_under_the_root() {
        let (_dir, store) = store();
        let key = new_key();
        store.put(&key, chunks(&[b"on disk"])).await.unwrap();
        assert_eq!(std::fs::read(store.root().join(&key)).unwrap(), b"on disk");
    }

    #[tokio::test]
    async fn sweep_removes_only_old_temp_files() {
        let (_dir, store) = store();
        std::fs::write(store.root().join(".tmp/leftover.put"), b"crashed").unwrap();
        assert_eq!(store.sweep_tmp(Duration::from_secs(3600)).await.unwrap(), 0);
        assert_eq!(store.sweep_tmp(Duration::ZERO).await.unwrap(), 1);
        assert_eq!(entries(&store.root().join(".tmp")), Vec::<String>::new());
    }
}

// ---------------------------------------------------------------------------------------------
// The S3 backend on SeaweedFS.

mod s3 {
    use super::*;

    /// One SeaweedFS for the whole test binary (start-up takes seconds); tests keep apart by
    /// bucket. Its watchdog kills it when the binary exits, though a static is never dropped.
    fn seaweed() -> &'static SeaweedS3 {
        static SERVER: OnceLock<SeaweedS3> = OnceLock::new();
        SERVER.get_or_init(SeaweedS3::start)
    }

    fn config(bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(seaweed().endpoint()),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key: "mediabus".into(),
            secret_key: "not-checked-by-seaweed".into(),
            force_path_style: true,
        }
    }

    /// A store on a fresh bucket named after the test.
    async fn store(test: &str) -> S3Store {
        let store = S3Store::new(config(&format!("t-{}", test.replace('_', "-"))));
        store.ensure_bucket().await.unwrap();
        store.ensure_bucket().await.expect("ensure_bucket is idempotent");
        store
    }

    /// Multipart uploads in progress for `key`.
    async fn uploads_in_progress(store: &S3Store, key: &str) -> usize {
        let out = store.client().list_multipart_uploads().bucket(store.bucket()).prefix(key).send().await.unwrap();
        out.uploads().len()
    }

    macro_rules! contract_tests {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                contract::$name(&store(stringify!($name)).await).await;
            }
        )*};
    }

    contract_tests!(round_trip, large_body, ranges, missing_and_delete, invalid_keys, health);
    contract_tests!(multipart_errors);
    contract_tests!(listing, incomplete_uploads);

    #[tokio::test]
    async fn multipart_at_offsets() {
        let a = store("multipart_at_offsets").await;
        let b = S3Store::new(config(a.bucket()));
        contract::multipart_at_offsets(&a, &b).await;
    }

    #[tokio::test]
    async fn multipart_across_instances() {
        let a = store("multipart_across_instances").await;
        let b = S3Store::new(config(a.bucket()));
        contract::multipart(&a, &b).await;
    }

    #[tokio::test]
    async fn abort_removes_the_parts() {
        let store = store("abort_removes_the_parts").await;
        let (key, _) = contract::abort(&store).await;
        assert_eq!(uploads_in_progress(&store, &key).await, 0);
    }

    /// Fails once in the single-PutObject path and once after two 8 MiB parts went up.
    #[tokio::test]
    async fn failing_body_leaves_no_upload() {
        let store = store("failing_body_leaves_no_upload").await;
        for ok_bytes in [3 * MIB, 17 * MIB] {
            let [existing, fresh] = contract::failing_body(&store, ok_bytes).await;
            assert_eq!(uploads_in_progress(&store, &existing).await, 0, "{ok_bytes}");
            assert_eq!(uploads_in_progress(&store, &fresh).await, 0, "{ok_bytes}");
        }
    }

    /// Dropped after the first 8 MiB part went up: the upload is aborted in the background.
    #[tokio::test]
    async fn dropped_put_aborts_its_upload() {
        let store = store("dropped_put_aborts_its_upload").await;
        let key = contract::dropped_put(&store, 10 * MIB).await;
        let mut left = usize::MAX;
        for _ in 0..50 {
            left = uploads_in_progress(&store, &key).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "multipart upload still in progress");
    }

    /// A part replaced by different bytes within a second. SeaweedFS keeps both uploads and lists
    /// both with second-precision times: list_parts must then refuse rather than guess, and
    /// completing with the newest receipts must assemble the newest bytes.
    #[tokio::test]
    async fn replaced_part_completes_by_receipt() {
        let store = store("replaced_part_completes_by_receipt").await;
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let min = store.min_part_size() as usize;
        let r1 = store.put_part(&key, &id, 1, Bytes::from(pattern_bytes(51, min))).await.unwrap();
        let old = store.put_part(&key, &id, 2, Bytes::from_static(b"old")).await.unwrap();
        let new = store.put_part(&key, &id, 2, Bytes::from_static(b"newer")).await.unwrap();
        assert_ne!(old.etag, new.etag);
        match store.list_parts(&key, &id).await {
            Ok(listed) => assert_eq!(listed, vec![r1.clone(), new.clone()], "never the stale part"),
            Err(StorageError::Backend(why)) => assert!(why.contains("part 2"), "{why}"),
            Err(e) => panic!("{e:?}"),
        }
        let stored = store.complete_multipart(&key, &id, &[r1, new]).await.unwrap();
        let mut whole = pattern_bytes(51, min);
        whole.extend_from_slice(b"newer");
        assert_eq!(stored.sha256_hex, sha256_hex(&whole));
        assert_eq!(get_bytes(&store, &key).await, whole);
    }

    /// Sizes of the running digests stored in the test's bucket (one per upload in flight).
    async fn digests(store: &S3Store) -> Vec<u64> {
        let listed = store.list(DIGEST_PREFIX, None, 100).await.unwrap();
        listed.iter().map(|o| o.size).collect()
    }

    /// Parts put in order with their offsets keep a running digest in the bucket, so completion
    /// reads back only what it does not cover; out of order, or with a part sent again over
    /// hashed bytes, the checksum is still that of the object. Completion, abort and the temp
    /// sweep remove the digest.
    #[tokio::test]
    async fn parts_in_order_are_hashed_as_they_arrive() {
        let store = store("parts_in_order_are_hashed_as_they_arrive").await;
        let min = store.min_part_size() as usize;
        let mut parts = [pattern_bytes(81, min), pattern_bytes(82, min), pattern_bytes(83, 9)];
        let put = async |key: &str, id: &str, n: usize, data: &[u8]| {
            let at = (n * min) as u64;
            store.put_part_at(key, id, n as u32 + 1, at, Bytes::copy_from_slice(data)).await.unwrap()
        };
        let complete = async |key: &str, id: &str, receipts: &[mediabus_storage::PartReceipt]| {
            store.complete_multipart(key, id, receipts).await.unwrap().sha256_hex
        };

        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let mut receipts = Vec::new();
        for (n, data) in parts.iter().enumerate() {
            receipts.push(put(&key, &id, n, data).await);
            assert_eq!(digests(&store).await.len(), 1, "one digest for the upload after part {}", n + 1);
        }
        assert_eq!(complete(&key, &id, &receipts).await, sha256_hex(&parts.concat()), "in order");
        assert_eq!(digests(&store).await, Vec::<u64>::new(), "completion removes the digest");
        assert_eq!(get_bytes(&store, &key).await, parts.concat());

        // Out of order: part 2 first continues nothing; the digest covers part 1 only.
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        let r2 = put(&key, &id, 1, &parts[1]).await;
        assert_eq!(digests(&store).await, Vec::<u64>::new(), "part 2 alone starts no digest");
        let r1 = put(&key, &id, 0, &parts[0]).await;
        let r3 = put(&key, &id, 2, &parts[2]).await;
        assert_eq!(complete(&key, &id, &[r1, r2, r3]).await, sha256_hex(&parts.concat()), "out of order");

        // Part 1 sent again with other bytes after parts 1 and 2 were hashed.
        let key = new_key();
        let id = store.create_multipart(&key).await.unwrap();
        put(&key, &id, 0, &parts[0]).await;
        let r2 = put(&key, &id, 1, &parts[1]).await;
        parts[0] = pattern_bytes(84, min);
        let r1 = put(&key, &id, 0, &parts[0]).await;
        assert_eq!(digests(&store).await, Vec::<u64>::new(), "a part sent over hashed bytes drops the digest");
        let r3 = put(&key, &id, 2, &parts[2]).await;
        assert_eq!(complete(&key, &id, &[r1, r2, r3]).await, sha256_hex(&parts.concat()), "part 1 replaced");

        // Abort and the temp sweep remove digests.
        let id = store.create_multipart(&key).await.unwrap();
        put(&key, &id, 0, &parts[0]).await;
        store.abort_multipart(&key, &id).await.unwrap();
        assert_eq!(digests(&store).await, Vec::<u64>::new(), "abort removes the digest");
        let id = store.create_multipart(&key).await.unwrap();
        put(&key, &id, 0, &parts[0]).await;
        assert_eq!(store.sweep_temp(Duration::from_secs(3600)).await.unwrap(), 0, "a live upload's digest stays");
        assert_eq!(store.sweep_temp(Duration::ZERO).await.unwrap(), 1);
        assert_eq!(digests(&store).await, Vec::<u64>::new());
        store.abort_multipart(&key, &id).await.unwrap();
    }

    #[tokio::test]
    async fn missing_bucket_is_a_backend_error() {
        let store = S3Store::new(config("t-never-created"));
        let r = store.health_check().await;
        assert!(matches!(r, Err(StorageError::Backend(_))), "{r:?}");
        let r = store.put(&new_key(), chunks(&[b"x"])).await;
        assert!(matches!(r, Err(StorageError::Backend(_))), "{r:?}");
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_a_backend_error() {
        let port = mediabus_testkit::free_port();
        let store =
            S3Store::new(S3Config { endpoint: Some(format!("http://127.0.0.1:{port}")), ..config("t-unreachable") });
        let r = store.health_check().await;
        assert!(matches!(r, Err(StorageError::Backend(_))), "{r:?}");
    }
}
