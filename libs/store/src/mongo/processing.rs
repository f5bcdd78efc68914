//! [`ProcessingStore`] on MongoDB: each method reads the document, changes it, and writes it back
//! with a `replaceOne` whose filter repeats the condition, so of racing writers only the first
//! replace matches (the pattern of `mongo/lifecycle.rs`; nx-27017, the test stand-in, also keeps
//! dates written by a whole-document replace, which it does not for `$set`).

use async_trait::async_trait;
use mediabus_contracts::{Media, MediaRecord, MediaStatus, Timestamp, Variant};
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;

use super::{MongoStore, backend, media_from_doc, media_to_doc};
use crate::processing::check_final;
use crate::{ProcessingStore, StoreError};

impl MongoStore {
    /// Reads the media matching `filter` (which names its `_id`), changes it with `change` and
    /// replaces it if it still matches `filter`. The record as written, or `None`.
    async fn replace_if(
        &self,
        filter: Document,
        change: impl FnOnce(&mut MediaRecord),
    ) -> Result<Option<MediaRecord>, StoreError> {
        let found = self.media.find_one(filter.clone()).await.map_err(backend)?;
        let Some(mut record) = found.as_ref().map(media_from_doc).transpose()? else { return Ok(None) };
        let before = record.media.updated_at;
        change(&mut record);
        // Strictly later, so that a writer who read the old version fails its compare
        // (`MediaStore::replace_if_unchanged`).
        record.media.updated_at = crate::later_than(before, record.media.updated_at);
        let replaced = self.media.replace_one(filter, media_to_doc(&record)?).await.map_err(backend)?;
        Ok((replaced.matched_count == 1).then_some(record))
    }
}

/// The condition of a job's writes: still `PROCESSING` with the job's checksum.
fn processing_with(id: &str, checksum: &str) -> Document {
    doc! { "_id": id, "status": MediaStatus::Processing.as_str(), "checksum": checksum }
}

#[async_trait]
impl ProcessingStore for MongoStore {
    async fn save_progress(
        &self,
        id: &str,
        checksum: &str,
        details: Option<Value>,
        variants: Vec<Variant>,
        now: Timestamp,
    ) -> Result<Option<Media>, StoreError> {
        let changed = self
            .replace_if(processing_with(id, checksum), |r| {
                r.media.details = details.filter(|d| !d.is_null());
                r.media.variants = variants;
                r.media.updated_at = now;
            })
            .await?;
        Ok(changed.map(|r| r.media))
    }

    async fn finish_processing(
        &self,
        id: &str,
        checksum: &str,
        status: MediaStatus,
        failure_reason: Option<String>,
        now: Timestamp,
    ) -> Result<Option<Media>, StoreError> {
        check_final(status)?;
        let changed = self
            .replace_if(processing_with(id, checksum), |r| {
                r.media.status = status;
                r.media.failure_reason = failure_reason;
                r.media.updated_at = now;
            })
            .await?;
        Ok(changed.map(|r| r.media))
    }

    async fn restart_processing(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError> {
        // Read first: the replace is conditional on the status seen, so a racing removal wins.
        let found = self.media.find_one(doc! { "_id": id }).await.map_err(backend)?;
        let Some(before) = found.as_ref().map(media_from_doc).transpose()? else { return Ok(None) };
        let (Some(_), Some(_)) = (&before.storage_key, &before.media.checksum) else { return Ok(None) };
        if before.media.status == MediaStatus::Deleted {
            return Ok(None);
        }
        let filter = doc! { "_id": id, "status": before.media.status.as_str(), "storageKey": { "$ne": Bson::Null } };
        self.replace_if(filter, |r| {
            r.media.status = MediaStatus::Processing;
            r.media.failure_reason = None;
            r.media.details = None;
            r.media.variants = Vec::new();
            r.media.updated_at = now;
        })
        .await
    }
}
