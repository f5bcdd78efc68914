//! Blob storage behind one trait (DESIGN §8): the local filesystem (default, embedded) or any
//! S3-compatible endpoint. The media service holds an `Arc<dyn BlobStore>` picked from config at
//! startup and never learns which backend it has.
//!
//! Several worker processes may serve the parts of one chunked upload, so every bit of upload state
//! (parts, the upload itself) lives in the store, none in process memory: any instance can put a
//! part, list the parts, complete or abort.
//!
//! Keys are generated ([`new_key`]), never derived from a client's file name, and validated by
//! every operation ([`validate_key`]).
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use mediabus_storage::{BlobStore, LocalStore, body_from_bytes, new_key};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
//! let key = new_key();
//! let stored = store.put(&key, body_from_bytes(Bytes::from_static(b"abc"))).await.unwrap();
//! assert_eq!(stored.size, 3);
//! let sha256_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
//! assert_eq!(stored.sha256_hex, sha256_abc);
//! assert_eq!(store.head(&key).await.unwrap().size, 3);
//! # });
//! ```

mod config;
mod local;
mod s3;

pub use config::StorageConfig;
pub use local::LocalStore;
pub use s3::{DIGEST_PREFIX, S3Config, S3Store};

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

/// A body streamed in or out of a store: chunks of any size; an `Err` item aborts the transfer.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// A [`ByteStream`] yielding `bytes` as one chunk (nothing if empty).
pub fn body_from_bytes(bytes: Bytes) -> ByteStream {
    Box::pin(futures_util::stream::iter((!bytes.is_empty()).then_some(Ok(bytes))))
}

/// What a write stored: computed while the bytes streamed through, never by re-reading a file the
/// caller handed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// Object size in bytes.
    pub size: u64,
    /// SHA-256 of the whole object, 64 lowercase hex digits.
    pub sha256_hex: String,
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size of the whole object in bytes (also for a ranged `get`).
    pub size: u64,
    /// When the object was last written (second precision on S3).
    pub last_modified: SystemTime,
    /// Opaque version tag: changes whenever the object is rewritten; compare for equality only.
    /// Local: `<size hex>-<mtime ns hex>`; S3: the server's ETag, quotes included.
    pub etag: String,
}

/// An inclusive byte range of an object, as in HTTP `Range: bytes=start-end`.
///
/// Construct with [`ByteRange::new`] (`start..=end`) or [`ByteRange::from`] (`start..` to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    start: u64,
    end_inclusive: Option<u64>,
}

impl ByteRange {
    /// Bytes `start..=end_inclusive`; `None` if `start > end_inclusive`. An end past the object
    /// is clamped to its last byte when read, as HTTP does.
    pub fn new(start: u64, end_inclusive: u64) -> Option<Self> {
        (start <= end_inclusive).then_some(Self { start, end_inclusive: Some(end_inclusive) })
    }

    /// Bytes from `start` to the end of the object.
    pub fn from(start: u64) -> Self {
        Self { start, end_inclusive: None }
    }

    /// First byte offset.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Last byte offset as requested (`None`: to the end).
    pub fn end_inclusive(&self) -> Option<u64> {
        self.end_inclusive
    }

    /// The `(start, end_inclusive)` actually served from an object of `size` bytes, or `None` if
    /// the range is not satisfiable (`start >= size`). Callers use this for `Content-Range`.
    pub fn resolve(&self, size: u64) -> Option<(u64, u64)> {
        if self.start >= size {
            return None;
        }
        let last = size - 1;
        Some((self.start, self.end_inclusive.map_or(last, |end| end.min(last))))
    }

    /// The HTTP `Range` header value (`bytes=0-9`, `bytes=10-`).
    pub fn to_http(&self) -> String {
        match self.end_inclusive {
            Some(end) => format!("bytes={}-{end}", self.start),
            None => format!("bytes={}-", self.start),
        }
    }
}

/// Proof that a part of a multipart upload was stored; hand all receipts back to
/// [`BlobStore::complete_multipart`]. Serializable so a worker can keep them in a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartReceipt {
    /// 1..=10000, as on S3.
    pub part_number: u32,
    /// Opaque tag of the stored part (see [`ObjectMeta::etag`]).
    pub etag: String,
    /// Part size in bytes.
    pub size: u64,
}

/// Highest part number of a multipart upload (the S3 limit, kept for the local backend too).
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Errors of every store. Not-found is its own variant so callers can answer 404 without parsing.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No object under the key, or no such multipart upload (or it belongs to another key).
    #[error("not found")]
    NotFound,
    /// A key or upload id that breaks the rules of [`validate_key`]; the string says which and why.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The requested range starts at or after the end of the object.
    #[error("range not satisfiable")]
    InvalidRange,
    /// A multipart request the store refuses: part number out of 1..=10000, empty or unordered part
    /// list, a part missing or changed since its receipt, a non-last part below
    /// [`BlobStore::min_part_size`].
    #[error("invalid multipart request: {0}")]
    InvalidPart(String),
    /// Local I/O failed, or the body stream handed to `put` yielded an error.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The remote store failed or refused (network, auth, missing bucket, ...).
    #[error("storage backend: {0}")]
    Backend(String),
}

/// A blob store. All methods validate the key first ([`StorageError::InvalidKey`]).
///
/// Object-safe: use it as `Arc<dyn BlobStore>`.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Streams `body` into the object `key`, replacing any previous object atomically: readers see
    /// the old object or the complete new one, never a partial one. If the body yields an error
    /// the put fails and nothing changes under the key. At most one part (S3) or one chunk (local)
    /// of the body is held in memory.
    async fn put(&self, key: &str, body: ByteStream) -> Result<Stored, StorageError>;

    /// The object's metadata and its bytes (only `range` of them if given; `ObjectMeta::size` is
    /// still the whole size). Errors: `NotFound`, `InvalidRange` if `range` starts at or past the
    /// end (also for an empty object).
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<(ObjectMeta, ByteStream), StorageError>;

    /// The object's metadata. Errors: `NotFound`.
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError>;

    /// Removes the object; succeeds if there is none (idempotent).
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Starts a multipart upload to `key` and returns its upload id. Nothing is visible under the
    /// key until [`complete_multipart`](Self::complete_multipart).
    async fn create_multipart(&self, key: &str) -> Result<String, StorageError>;

    /// Stores part `part_number` (1..=10000) of the upload; parts may arrive in any order, from
    /// any process, and a part put again replaces the earlier one. Every part but the last must
    /// hold at least [`min_part_size`](Self::min_part_size) bytes (checked at completion).
    /// Errors: `NotFound` (no such upload for this key), `InvalidPart` (bad part number).
    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError>;

    /// [`put_part`](Self::put_part) for a caller that knows where the part starts in the finished
    /// object: `offset` is the size of all lower-numbered parts (`(part_number - 1) * part_size`
    /// when every part but the last has `part_size` bytes). The local backend writes the part in
    /// place into one file per upload, so completing it copies nothing; S3 uses `offset` to
    /// advance the upload's running digest. Receipts, listing and completion work as for
    /// `put_part`; an offset that does not match the parts listed at completion costs only that
    /// copy (local) or a longer read-back (S3).
    ///
    /// Errors: as `put_part`; `InvalidPart` if `offset + data.len()` overflows.
    async fn put_part_at(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        offset: u64,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError>;

    /// The parts stored so far, one per part number, ascending. Errors: `NotFound`; `Backend` on
    /// SeaweedFS if a part was re-sent with different bytes within one second (it keeps every
    /// upload of a part, with second-precision times, so the current one cannot be told). The
    /// receipts from [`put_part`](Self::put_part) are always exact: keep those if parts may be
    /// replaced.
    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, StorageError>;

    /// Joins `parts` (ascending part numbers; parts not listed are discarded) into the object
    /// `key`, atomically like [`put`](Self::put), and ends the upload.
    ///
    /// The returned SHA-256 covers the whole object. Parts arrive at different workers, so no one
    /// process saw every byte, so both backends keep a running digest of the parts put in order
    /// with [`put_part_at`](Self::put_part_at) and read back only the bytes it does not cover:
    /// the local backend from the finished file (parts put with `put_part_at` already sit in it;
    /// others are concatenated first), the S3 backend from the completed object, pinned to its
    /// new ETag (none at all when every part arrived in order; the state lives under
    /// [`DIGEST_PREFIX`] until then).
    ///
    /// Errors: `NotFound` (no such upload), `InvalidPart` (see the variant).
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<Stored, StorageError>;

    /// Ends the upload and removes all its parts; succeeds if there is no such upload (idempotent).
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError>;

    /// `Ok` if the store can be read and written now (local: a probe file; S3: HeadBucket).
    async fn health_check(&self) -> Result<(), StorageError>;

    /// Minimum size in bytes of every part but the last: S3 5 MiB, local 1.
    fn min_part_size(&self) -> u64;

    /// Up to `limit` (clamped to 1..=[`MAX_LIST_LIMIT`]) objects whose key starts with `prefix`
    /// (`""` for all), in ascending byte order of key, strictly after `start_after` when given:
    /// pass the last key of a page to get the next (S3 `ListObjectsV2` with `StartAfter`). Objects
    /// written or removed meanwhile may or may not appear; none is listed twice. Temp files and
    /// multipart parts are never listed. (SeaweedFS walks its directories instead: keys with a
    /// `-`, `.` or `_` where another has a `/` may come in another order; generated keys have
    /// none.)
    ///
    /// Errors: `InvalidKey` for a prefix with characters a key cannot have (see
    /// [`validate_prefix`]), `Backend`/`Io` when the store fails.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ListedObject>, StorageError>;

    /// Up to `limit` (clamped to 1..=[`MAX_LIST_LIMIT`]) multipart uploads, not completed nor
    /// aborted, last active more than `older_than` ago (S3: initiated; local: the last part
    /// written), for a janitor to abort (S3 `ListMultipartUploads`).
    async fn list_incomplete_uploads(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<IncompleteUpload>, StorageError>;

    /// Aborts the multipart uploads [`list_incomplete_uploads`](Self::list_incomplete_uploads)
    /// returns for `older_than` (up to `limit`), except those whose upload id is in `keep` (the
    /// caller's live upload sessions). Returns how many were aborted.
    async fn sweep_incomplete_uploads(
        &self,
        older_than: Duration,
        limit: u32,
        keep: &HashSet<String>,
    ) -> Result<usize, StorageError> {
        let mut aborted = 0;
        for upload in self.list_incomplete_uploads(older_than, limit).await? {
            if !keep.contains(&upload.upload_id) {
                self.abort_multipart(&upload.key, &upload.upload_id).await?;
                aborted += 1;
            }
        }
        Ok(aborted)
    }

    /// Removes the store's own temp files not modified for `older_than` (leftovers of writes that
    /// crashed; a live write touches its file with every chunk) and returns how many went: the
    /// local store's temp files, the S3 store's running digests of abandoned uploads. The default
    /// does nothing.
    async fn sweep_temp(&self, older_than: Duration) -> Result<usize, StorageError> {
        let _ = older_than;
        Ok(0)
    }
}

/// Most entries one [`BlobStore::list`] or [`BlobStore::list_incomplete_uploads`] returns (S3's
/// own page size).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One object of a [`BlobStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// When the object was last written (second precision on S3).
    pub last_modified: SystemTime,
}

/// A multipart upload that was neither completed nor aborted ([`BlobStore::list_incomplete_uploads`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// The key the upload would create.
    pub key: String,
    /// The backend's upload id, as [`BlobStore::create_multipart`] returned it.
    pub upload_id: String,
    /// S3: when it was initiated; local: when a part was last written into it.
    pub last_active: SystemTime,
}

/// Checks a listing prefix: empty, or what starts a valid key (see [`validate_key`]): characters of
/// `[a-z0-9._-/]`, no leading `/`, no empty segment before the end, no segment starting with `.`.
/// A trailing `/` is allowed. Errors: `InvalidKey`.
pub fn validate_prefix(prefix: &str) -> Result<(), StorageError> {
    let invalid = |why: &str| Err(StorageError::InvalidKey(format!("prefix {prefix:?}: {why}")));
    if prefix.len() > MAX_KEY_LEN {
        return invalid("too long");
    }
    if prefix.is_empty() {
        return Ok(());
    }
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    for segment in body.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment");
        }
        if segment.starts_with('.') {
            return invalid("segment starts with '.'");
        }
        if !segment.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-')) {
            return invalid("only a-z 0-9 . _ - and / are allowed");
        }
    }
    Ok(())
}

/// The clamp of listing limits.
fn clamp_list_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_LIST_LIMIT)
}

/// Longest key accepted (S3 allows 1024 bytes; keys here are generated and short).
pub const MAX_KEY_LEN: usize = 512;

/// Checks a key: 1..=512 characters of `[a-z0-9._-]` in `/`-separated segments, no empty segment
/// (so no leading, trailing or doubled `/`), no segment starting with `.` (so no `.`, `..` or the
/// local backend's own `.tmp` and `.uploads`). Errors: `InvalidKey` naming the key and the rule.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let invalid = |why: &str| Err(StorageError::InvalidKey(format!("{key:?}: {why}")));
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return invalid("length must be 1..=512");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return invalid("empty path segment");
        }
        if segment.starts_with('.') {
            return invalid("segment starts with '.'");
        }
        if !segment.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-')) {
            return invalid("only a-z 0-9 . _ - and / are allowed");
        }
    }
    Ok(())
}

/// A new random key, `xx/yy/<cuid2>` (e.g. `k3/9f/cz0vx8l1j8v3k2q9r7t5w39fk3`): the two prefix
/// segments spread objects over directories, and nothing in it comes from the client.
pub fn new_key() -> String {
    let id = cuid2::create_id();
    // cuid2's leading character is always a letter; its trailing ones are the random-looking part.
    let n = id.len();
    format!("{}/{}/{id}", &id[n - 2..], &id[n - 4..n - 2])
}

/// Key prefix of every generated rendition (variant) of media `media_id`: `variants/<mediaId>/`
/// (file names: `mediabus_contracts::variants`). Purging a media removes everything under it.
/// Media ids are cuid2 (lowercase letters and digits), so the prefix passes [`validate_key`] once a
/// file name follows.
pub fn variant_prefix(media_id: &str) -> String {
    format!("variants/{media_id}/")
}

/// Checks the part list handed to `complete_multipart`: non-empty, part numbers in
/// 1..=[`MAX_PART_NUMBER`] and strictly ascending.
fn validate_part_list(parts: &[PartReceipt]) -> Result<(), StorageError> {
    if parts.is_empty() {
        return Err(StorageError::InvalidPart("no parts".into()));
    }
    for part in parts {
        check_part_number(part.part_number)?;
    }
    if let Some(w) = parts.windows(2).find(|w| w[0].part_number >= w[1].part_number) {
        return Err(StorageError::InvalidPart(format!(
            "part numbers must ascend: {} then {}",
            w[0].part_number, w[1].part_number
        )));
    }
    Ok(())
}

fn check_part_number(part_number: u32) -> Result<(), StorageError> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(StorageError::InvalidPart(format!("part number {part_number} not in 1..=10000")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for ok in ["a", "ab/cd/x1", "a-b_c.d/e", "0/1/2", "x.y"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        for bad in ["", "/a", "a/", "a//b", ".", "..", "../x", "a/../b", ".tmp/x", "A", "a b", "é", &long] {
            assert!(matches!(validate_key(bad), Err(StorageError::InvalidKey(_))), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_are_validated() {
        for ok in ["", "variants/", "variants/abc/", "ab", "ab/c"] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["/", "/a", "a//", ".tmp/", "a/.uploads", "A/", "a b"] {
            assert!(matches!(validate_prefix(bad), Err(StorageError::InvalidKey(_))), "{bad:?}");
        }
    }

    #[test]
    fn new_keys_are_valid_and_distinct() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        validate_key(&a).unwrap();
        assert_eq!(a.split('/').count(), 3);
        assert!(a.ends_with(&a[..2]), "prefix comes from the id's tail: {a}");
    }

    #[test]
    fn ranges_resolve_like_http() {
        assert_eq!(ByteRange::new(5, 3), None);
        let r = ByteRange::new(2, 100).unwrap();
        assert_eq!(r.resolve(10), Some((2, 9)));
        assert_eq!(r.resolve(2), None);
        assert_eq!(ByteRange::from(0).resolve(0), None);
        assert_eq!(ByteRange::from(7).resolve(10), Some((7, 9)));
        assert_eq!(r.to_http(), "bytes=2-100");
        assert_eq!(ByteRange::from(7).to_http(), "bytes=7-");
    }

    #[test]
    fn part_lists_must_ascend() {
        let p = |n| PartReceipt { part_number: n, etag: String::new(), size: 1 };
        assert!(validate_part_list(&[p(1), p(2), p(5)]).is_ok());
        for bad in [vec![], vec![p(2), p(1)], vec![p(1), p(1)], vec![p(0)], vec![p(10_001)]] {
            assert!(matches!(validate_part_list(&bad), Err(StorageError::InvalidPart(_))));
        }
    }
}
