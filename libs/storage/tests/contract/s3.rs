//! The S3 backend on SeaweedFS: the contract on an `S3Store`, one bucket per test, and its specifics.

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
