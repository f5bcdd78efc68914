//! Rows of the SQLite backend to records and back: a media row (`MEDIA_COLUMNS` order, then
//! `DERIVED_COLUMNS`), an upload session row, and the column codecs they share (JSON text,
//! sizes stored as INTEGER, borrowed TEXT). A value this store would never write is reported as
//! a conversion failure naming its column: the file was changed behind the store's back.

use mediabus_contracts::{Media, MediaRecord, MediaStatus, MediaType, Timestamp};
use rusqlite::Row;
use rusqlite::types::{Type, Value as SqlValue};
use serde_json::Value;

use crate::{StoreError, UploadSession, non_null};

/// The `doc` column of `media`.
pub(super) fn doc_of(media: &Media) -> Result<String, StoreError> {
    serde_json::to_string(media).map_err(|e| StoreError::Backend(format!("encode media {}: {e}", media.id)))
}

pub(super) fn to_i64(n: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Backend(format!("{what} {n} exceeds the storable range")))
}

pub(super) fn json_text(value: &Option<Value>) -> Result<Option<String>, StoreError> {
    non_null(value).map(serde_json::to_string).transpose().map_err(|e| StoreError::Backend(format!("encode JSON: {e}")))
}

/// A row value that is not what this store writes: the file was changed behind its back.
pub(super) fn corrupt(column: usize, what: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, what.into().into())
}

pub(super) fn json_column<T: serde::de::DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<T>> {
    // Parsed from the row's own text: no String copy (point reads are the hot path).
    text_column(row, column)?
        .map(|t| serde_json::from_str(t).map_err(|e| corrupt(column, format!("bad JSON: {e}"))))
        .transpose()
}

/// A TEXT (or NULL) column, borrowed from the row.
pub(super) fn text_column<'r>(row: &'r Row<'_>, column: usize) -> rusqlite::Result<Option<&'r str>> {
    match row.get_ref(column)? {
        rusqlite::types::ValueRef::Null => Ok(None),
        value => value
            .as_str()
            .map(Some)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, value.data_type(), Box::new(e))),
    }
}

pub(super) fn u64_column(row: &Row<'_>, column: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(column)?;
    u64::try_from(n).map_err(|_| corrupt(column, format!("negative size {n}")))
}

pub(super) fn media_from_row(row: &Row<'_>) -> rusqlite::Result<MediaRecord> {
    let type_text = text_column(row, 1)?.unwrap_or_default();
    let status_text = text_column(row, 11)?.unwrap_or_default();
    let media = Media {
        id: row.get(0)?,
        media_type: MediaType::parse(type_text).ok_or_else(|| corrupt(1, format!("unknown type {type_text}")))?,
        original_name: row.get(2)?,
        mime_type: row.get(3)?,
        size: u64_column(row, 4)?,
        url: row.get(5)?,
        user_id: row.get(6)?,
        entity_id: row.get(7)?,
        entity_type: row.get(8)?,
        metadata: json_column(row, 9)?,
        is_public: row.get(10)?,
        status: MediaStatus::parse(status_text).ok_or_else(|| corrupt(11, format!("unknown status {status_text}")))?,
        created_at: Timestamp::from_unix_millis(row.get(12)?),
        updated_at: Timestamp::from_unix_millis(row.get(13)?),
        checksum: row.get(14)?,
        details: json_column(row, 15)?,
        // Nearly always `[]`: skip the JSON parser for it.
        variants: match text_column(row, 16)? {
            None | Some("[]") => Vec::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt(16, format!("bad JSON: {e}")))?,
        },
        failure_reason: row.get(18)?,
    };
    Ok(MediaRecord { media, storage_key: row.get(17)? })
}

pub(super) fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<UploadSession> {
    let declared: Option<i64> = row.get(5)?;
    Ok(UploadSession {
        upload_id: row.get(0)?,
        user_id: row.get(1)?,
        storage_key: row.get(2)?,
        backend_upload_id: row.get(3)?,
        original_name: row.get(4)?,
        declared_size: declared.map(|n| u64::try_from(n).map_err(|_| corrupt(5, "negative size"))).transpose()?,
        entity_id: row.get(6)?,
        entity_type: row.get(7)?,
        is_public: row.get(8)?,
        metadata: json_column(row, 9)?,
        part_size: u64_column(row, 10)?,
        created_at: Timestamp::from_unix_millis(row.get(11)?),
        expires_at: Timestamp::from_unix_millis(row.get(12)?),
    })
}

/// The 21 column values of a media row: `MEDIA_COLUMNS` order, then `DERIVED_COLUMNS`.
pub(super) fn media_values(record: &MediaRecord) -> Result<Vec<SqlValue>, StoreError> {
    let m = &record.media;
    let variants =
        serde_json::to_string(&m.variants).map_err(|e| StoreError::Backend(format!("encode variants: {e}")))?;
    Ok(vec![
        m.id.clone().into(),
        m.media_type.as_str().to_owned().into(),
        m.original_name.clone().into(),
        m.mime_type.clone().into(),
        to_i64(m.size, "size")?.into(),
        m.url.clone().into(),
        m.user_id.clone().into(),
        m.entity_id.clone().into(),
        m.entity_type.clone().into(),
        json_text(&m.metadata)?.into(),
        i64::from(m.is_public).into(),
        m.status.as_str().to_owned().into(),
        m.created_at.unix_millis().into(),
        m.updated_at.unix_millis().into(),
        m.checksum.clone().into(),
        json_text(&m.details)?.into(),
        variants.into(),
        record.storage_key.clone().into(),
        m.failure_reason.clone().into(),
        m.original_name.to_lowercase().into(),
        doc_of(m)?.into(),
    ])
}
