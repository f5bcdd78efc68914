//! The local filesystem backend: the contract on a `LocalStore` in a temp dir, and its specifics.

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
    let mut parts = [pattern_bytes(71, PART), pattern_bytes(72, PART), pattern_bytes(73, PART), pattern_bytes(74, 9)];
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
