//! Processing state of media (DESIGN §9) behind [`ProcessingStore`]: the conditional writes of
//! the media processor (progress, then `READY` or `FAILED`) and of `media.reprocess`. Both
//! backends implement it next to [`crate::MediaStore`], on the same database.
//!
//! Every write is conditional and atomic against every process sharing the store: a job only
//! changes a media that is still `PROCESSING` with the checksum the job was queued for, so a
//! stale or duplicated job (a redelivery racing the first delivery, a job queued before a
//! reprocess) can never overwrite a newer state or revive a removed media.

use std::sync::Arc;

use async_trait::async_trait;
use mediabus_contracts::{Media, MediaRecord, MediaStatus, Timestamp, Variant};
use serde_json::Value;

use crate::{MongoStore, SqliteStore, StoreConfig, StoreError};

/// The conditional writes of processing. Object-safe, like [`crate::MediaStore`].
#[async_trait]
pub trait ProcessingStore: Send + Sync {
    /// Records what a job has produced so far: sets `details` and `variants` (replacing both)
    /// and `updatedAt = now` of media `id` if it is `PROCESSING` and its checksum is `checksum`.
    /// Returns the document as changed, `None` when the condition does not hold (absent,
    /// removed, finished, or bytes replaced): the job is stale and should stop.
    async fn save_progress(
        &self,
        id: &str,
        checksum: &str,
        details: Option<Value>,
        variants: Vec<Variant>,
        now: Timestamp,
    ) -> Result<Option<Media>, StoreError>;

    /// Ends processing of media `id` under the same condition as
    /// [`ProcessingStore::save_progress`]: `status` (`READY` or `FAILED`; anything else is a
    /// [`StoreError::Backend`] programming error), `failureReason = failure_reason`,
    /// `updatedAt = now`. Returns the final document, or `None` if the condition does not hold
    /// (then nothing changed and no `media.processed` should be emitted: exactly one caller
    /// finishes a given processing run).
    async fn finish_processing(
        &self,
        id: &str,
        checksum: &str,
        status: MediaStatus,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<Media>, StoreError>;

    /// Starts processing media `id` again (`media.reprocess`): if it exists, is not `DELETED`
    /// and has stored bytes (a storage key and a checksum), sets `PROCESSING`, clears
    /// `failureReason`, `details` and `variants`, sets `updatedAt = now` and returns the record
    /// as changed. `None` otherwise (nothing changed).
    async fn restart_processing(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError>;
}

/// Opens the configured store for [`ProcessingStore`], exactly as [`crate::open`] does (same
/// file or database, migrations and indexes). [`StoreError::Backend`] if that fails.
pub async fn open_processing(config: &StoreConfig) -> Result<Arc<dyn ProcessingStore>, StoreError> {
    Ok(match config {
        StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        StoreConfig::Mongodb { uri, database } => {
            Arc::new(MongoStore::connect(secrecy::ExposeSecret::expose_secret(uri), database).await?)
        }
    })
}

/// Refuses a final status other than `READY` or `FAILED` (shared by both backends).
pub(crate) fn check_final(status: MediaStatus) -> Result<(), StoreError> {
    match status {
        MediaStatus::Ready | MediaStatus::Failed => Ok(()),
        other => Err(StoreError::Backend(format!("finish_processing with status {}", other.as_str()))),
    }
}
