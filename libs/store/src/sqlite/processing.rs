//! [`ProcessingStore`] on SQLite: each method reads the row and rewrites it (columns and `doc`)
//! in one `BEGIN IMMEDIATE` transaction on the writer connection, so the condition and the write
//! are atomic against every process sharing the file.

use async_trait::async_trait;
use mediabus_contracts::{Media, MediaRecord, MediaStatus, Timestamp, Variant};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params_from_iter};
use serde_json::Value;

use super::{DERIVED_COLUMNS, MEDIA_COLUMNS, SqliteStore, backend, media_from_row, media_values};
use crate::processing::check_final;
use crate::{ProcessingStore, StoreError};

impl SqliteStore {
    /// Reads media `id`, and if `applies` holds for it, changes it with `change` and writes it
    /// back, all in one immediate transaction. Returns the record as written, or `None`.
    async fn modify_if(
        &self,
        id: &str,
        applies: impl FnOnce(&MediaRecord) -> bool + Send + 'static,
        change: impl FnOnce(&mut MediaRecord) + Send + 'static,
    ) -> Result<Option<MediaRecord>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let sql = format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = ?1");
            let record = tx.query_row(&sql, [&id], media_from_row).optional().map_err(backend)?;
            let Some(mut record) = record.filter(|r| applies(r)) else { return Ok(None) };
            let before = record.media.updated_at;
            change(&mut record);
            // Strictly later, so that a writer who read the old version fails its compare
            // (`MediaStore::replace_if_unchanged`).
            record.media.updated_at = crate::later_than(before, record.media.updated_at);
            rewrite(&tx, &record)?;
            tx.commit().map_err(backend)?;
            Ok(Some(record))
        })
        .await
    }
}

/// Rewrites every column of `record`'s row, `doc` included (as `MediaStore::update`).
fn rewrite(conn: &Connection, record: &MediaRecord) -> Result<(), StoreError> {
    let values = media_values(record)?;
    let sets: Vec<String> = MEDIA_COLUMNS
        .split(", ")
        .chain(DERIVED_COLUMNS)
        .enumerate()
        .skip(1)
        .map(|(i, col)| format!("{} = ?{}", col.trim(), i + 1))
        .collect();
    let sql = format!("UPDATE media SET {} WHERE id = ?1", sets.join(", "));
    conn.execute(&sql, params_from_iter(&values)).map_err(backend)?;
    Ok(())
}

/// Whether a job for `checksum` may still change `record`.
fn processing_with(record: &MediaRecord, checksum: &str) -> bool {
    record.media.status == MediaStatus::Processing && record.media.checksum.as_deref() == Some(checksum)
}

#[async_trait]
impl ProcessingStore for SqliteStore {
    async fn save_progress(
        &self,
        id: &str,
        checksum: &str,
        details: Option<Value>,
        variants: Vec<Variant>,
        now: Timestamp,
    ) -> Result<Option<Media>, StoreError> {
        let checksum = checksum.to_owned();
        let changed = self
            .modify_if(
                id,
                move |r| processing_with(r, &checksum),
                move |r| {
                    r.media.details = details.filter(|d| !d.is_null());
                    r.media.variants = variants;
                    r.media.updated_at = now;
                },
            )
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
        let checksum = checksum.to_owned();
        let changed = self
            .modify_if(
                id,
                move |r| processing_with(r, &checksum),
                move |r| {
                    r.media.status = status;
                    r.media.failure_reason = failure_reason;
                    r.media.updated_at = now;
                },
            )
            .await?;
        Ok(changed.map(|r| r.media))
    }

    async fn restart_processing(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError> {
        self.modify_if(
            id,
            |r| r.media.status != MediaStatus::Deleted && r.storage_key.is_some() && r.media.checksum.is_some(),
            move |r| {
                r.media.status = MediaStatus::Processing;
                r.media.failure_reason = None;
                r.media.details = None;
                r.media.variants = Vec::new();
                r.media.updated_at = now;
            },
        )
        .await
    }
}
