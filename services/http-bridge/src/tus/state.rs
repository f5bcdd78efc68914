//! The state of one tus upload, kept in the shared file store (never in a bridge's memory) so that
//! any bridge instance can continue any upload:
//!
//! - `tus/<tusId>/info.json`: [`TusInfo`] (owner, offset, length, metadata, expiry, the media
//!   service's `uploadId` and part size, the media id once complete), rewritten atomically.
//! - `tus/<tusId>/pending-<offset>`: the bytes after the last full part (`offset % partSize`
//!   of them), prepended to the next PATCH, as tusd's S3 store keeps an incomplete part. The
//!   offset in its name makes every PATCH write a new object, so a request that loses a race never
//!   overwrites the pending bytes another one committed.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use mediabus_rpc::RpcError;
use mediabus_storage::{BlobStore, StorageError, body_from_bytes};
use serde::{Deserialize, Serialize};

/// One tus upload (`tus/<id>/info.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TusInfo {
    /// The tus id: a cuid2 (lowercase letters and digits), the last segment of the upload URL.
    pub id: String,
    /// The owner: the `sub` of the token that created it. Nobody else may see or touch it.
    pub user_id: String,
    /// The media service's chunked upload (`upload.create`).
    pub upload_id: String,
    /// Bytes of every `upload.part` but the last.
    pub part_size: u64,
    /// `Upload-Length`, bytes.
    pub length: u64,
    /// Bytes received and committed: `offset / partSize` parts sent, `offset % partSize` pending.
    pub offset: u64,
    /// `Upload-Metadata` as the client sent it, echoed by HEAD.
    pub metadata: String,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    /// Unix milliseconds (`Upload-Expires`): after this the upload is gone (410, then 404).
    pub expires_at_ms: u64,
    /// The Media created by `upload.complete`.
    #[serde(default)]
    pub media_id: Option<String>,
}

impl TusInfo {
    /// Bytes held in the pending object at `offset`.
    pub fn pending_len(&self) -> u64 {
        self.offset % self.part_size
    }

    /// The pending object's key at the current offset, if any bytes are pending (none once every
    /// byte is in: the last part was sent).
    pub fn pending_key(&self) -> Option<String> {
        (self.pending_len() > 0 && self.offset < self.length).then(|| pending_key(&self.id, self.offset))
    }

    /// Part number of the part that starts at (or holds) the current offset.
    pub fn next_part(&self) -> u32 {
        u32::try_from(self.offset / self.part_size).unwrap_or(u32::MAX - 1) + 1
    }
}

/// `tus/<id>/info.json`.
pub fn info_key(id: &str) -> String {
    format!("tus/{id}/info.json")
}

/// `tus/<id>/pending-<offset>`.
pub fn pending_key(id: &str, offset: u64) -> String {
    format!("tus/{id}/pending-{offset}")
}

/// A tus id from a URL is used in a key: cuid2 only (1..=32 lowercase letters and digits).
pub fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Reads `info.json`; `None` if there is none.
pub async fn load(blobs: &dyn BlobStore, id: &str) -> Result<Option<TusInfo>, RpcError> {
    match read_all(blobs, &info_key(id), 1 << 20).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            tracing::error!(tus_id = %id, error = %e, "unreadable tus state");
            RpcError::internal()
        }),
        Err(StorageError::NotFound) => Ok(None),
        Err(e) => Err(storage_error(e)),
    }
}

/// Writes `info.json` (atomically: readers see the old or the new state).
pub async fn save(blobs: &dyn BlobStore, info: &TusInfo) -> Result<(), RpcError> {
    let json = serde_json::to_vec(info).map_err(|_| RpcError::internal())?;
    blobs.put(&info_key(&info.id), body_from_bytes(json.into())).await.map(drop).map_err(storage_error)
}

/// Removes the state of `info` (its pending bytes, then `info.json`); failures are logged.
pub async fn remove(blobs: &dyn BlobStore, info: &TusInfo) {
    if let Some(key) = info.pending_key() {
        delete_logged(blobs, &key).await;
    }
    delete_logged(blobs, &info_key(&info.id)).await;
}

/// Deletes `key`, logging a failure (what is left is only a small orphan).
pub async fn delete_logged(blobs: &dyn BlobStore, key: &str) {
    if let Err(e) = blobs.delete(key).await {
        tracing::warn!(%key, error = %e, "could not delete tus state");
    }
}

/// The pending bytes of `info` (empty if none).
pub async fn read_pending(blobs: &dyn BlobStore, info: &TusInfo) -> Result<Bytes, RpcError> {
    let Some(key) = info.pending_key() else { return Ok(Bytes::new()) };
    let bytes = read_all(blobs, &key, info.part_size as usize).await.map_err(storage_error)?;
    if bytes.len() as u64 != info.pending_len() {
        tracing::error!(tus_id = %info.id, found = bytes.len(), expected = info.pending_len(), "pending bytes lost");
        return Err(RpcError::internal());
    }
    Ok(bytes)
}

/// An object of at most `max` bytes, read whole.
async fn read_all(blobs: &dyn BlobStore, key: &str, max: usize) -> Result<Bytes, StorageError> {
    let (meta, mut stream) = match blobs.get(key, None).await {
        Ok(found) => found,
        // An empty object has no satisfiable range but is still there.
        Err(StorageError::InvalidRange) => return Ok(Bytes::new()),
        Err(e) => return Err(e),
    };
    if meta.size as usize > max {
        return Err(StorageError::Backend(format!("{key}: {} bytes, expected at most {max}", meta.size)));
    }
    let mut bytes = BytesMut::with_capacity(meta.size as usize);
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes.freeze())
}

/// A file store failure as the contract's error (503: the store is a backend that may come back).
pub fn storage_error(e: StorageError) -> RpcError {
    tracing::error!(error = %e, "tus state store failed");
    RpcError::new(503, "STORAGE_UNAVAILABLE", "the upload state store is unavailable")
}
