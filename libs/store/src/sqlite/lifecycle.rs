//! [`LifecycleStore`] on SQLite: the `media` table (indexes of migration 5: purge candidates by
//! removal time, lookups by storage key), and tables `leases` and `media_stats`.
//!
//! Each method is one statement or one `BEGIN IMMEDIATE` transaction on the writer connection:
//! a batch's select-then-update is atomic against every process sharing the file, so a media is
//! removed or purged by one caller only.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use mediabus_contracts::lifecycle::MediaStats;
use mediabus_contracts::{MediaRecord, MediaStatus, Timestamp};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params, params_from_iter};

use super::{
    DERIVED_COLUMNS, MEDIA_COLUMNS, SqliteStore, backend, media_from_row, media_values, placeholders, to_i64,
    u64_column,
};
use crate::lifecycle::{clamp_batch, lease_end};
use crate::{LifecycleStore, RemovalScope, StoreError, StoredUsage};

/// Rewrites every column of `record`'s row (as `MediaStore::update`), `doc` included.
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
    conn.prepare_cached(&sql).and_then(|mut stmt| stmt.execute(params_from_iter(&values))).map_err(backend)?;
    Ok(())
}

/// The records a `SELECT {MEDIA_COLUMNS} ...` returns.
fn select_records(conn: &Connection, sql: &str, args: &[SqlValue]) -> Result<Vec<MediaRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
    let rows = stmt.query_map(params_from_iter(args), media_from_row).map_err(backend)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
}

#[async_trait]
impl LifecycleStore for SqliteStore {
    async fn remove_batch(
        &self,
        scope: &RemovalScope,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MediaRecord>, StoreError> {
        let (condition, mut args): (&str, Vec<SqlValue>) = match scope {
            RemovalScope::User { user_id } => ("user_id = ?1", vec![user_id.clone().into()]),
            RemovalScope::Entity { entity_type, entity_id } => {
                ("entity_id = ?1 AND entity_type = ?2", vec![entity_id.clone().into(), entity_type.clone().into()])
            }
        };
        args.push(i64::from(clamp_batch(limit)).into());
        let sql = format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE {condition} AND status != 'DELETED' ORDER BY id LIMIT ?{}",
            args.len()
        );
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let mut records = select_records(&tx, &sql, &args)?;
            for record in &mut records {
                record.media.status = MediaStatus::Deleted;
                record.media.updated_at = crate::later_than(record.media.updated_at, now);
                rewrite(&tx, record)?;
            }
            tx.commit().map_err(backend)?;
            Ok(records)
        })
        .await
    }

    async fn due_for_purge(&self, removed_before: Timestamp, limit: u32) -> Result<Vec<MediaRecord>, StoreError> {
        let args: Vec<SqlValue> = vec![removed_before.unix_millis().into(), i64::from(clamp_batch(limit)).into()];
        // Written to match the partial index `media_purge_due` (migration 5).
        let sql = format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE status = 'DELETED' AND storage_key IS NOT NULL \
             AND updated_at <= ?1 ORDER BY updated_at, id LIMIT ?2"
        );
        self.read(move |conn| select_records(conn, &sql, &args)).await
    }

    async fn claim_purge(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError> {
        let sql = format!(
            "SELECT {MEDIA_COLUMNS} FROM media WHERE id = ?1 AND status = 'DELETED' AND storage_key IS NOT NULL"
        );
        let id = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let Some(before) = select_records(&tx, &sql, &[id.into()])?.pop() else {
                return Ok(None);
            };
            let mut purged = before.clone();
            purged.storage_key = None;
            purged.media.variants.clear();
            purged.media.updated_at = crate::later_than(before.media.updated_at, now);
            rewrite(&tx, &purged)?;
            tx.commit().map_err(backend)?;
            Ok(Some(before))
        })
        .await
    }

    async fn referenced_keys(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let args: Vec<SqlValue> = keys.iter().map(|k| k.clone().into()).collect();
        let list = placeholders(args.len());
        // SQLite's default limit of host parameters is 32766; callers pass a listing page (≤ 1000).
        let sql = format!(
            "SELECT storage_key FROM media WHERE storage_key IN ({list}) \
             UNION SELECT storage_key FROM uploads WHERE storage_key IN ({list})"
        );
        self.read(move |conn| {
            let mut stmt = conn.prepare(&sql).map_err(backend)?;
            let rows = stmt.query_map(params_from_iter(&args), |r| r.get::<_, String>(0)).map_err(backend)?;
            rows.collect::<Result<HashSet<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn live_backend_uploads(&self, now: Timestamp) -> Result<HashSet<String>, StoreError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare("SELECT backend_upload_id FROM uploads WHERE expires_at > ?1").map_err(backend)?;
            let rows = stmt.query_map([now.unix_millis()], |r| r.get::<_, String>(0)).map_err(backend)?;
            rows.collect::<Result<HashSet<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn try_lease(&self, name: &str, holder: &str, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let until = lease_end(now, ttl).unix_millis();
        self.write(move |conn| {
            // The upsert's WHERE makes taking over conditional: a running lease of another holder
            // leaves the row as it is, and `changes()` is 0.
            let changed = conn
                .execute(
                    "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leases.expires_at <= ?4 OR leases.holder = excluded.holder",
                    params![name, holder, until, now.unix_millis()],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |conn| {
            conn.execute("DELETE FROM leases WHERE name = ?1 AND holder = ?2", [name, holder])
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn add_counts(&self, counts: &[MediaStats]) -> Result<(), StoreError> {
        let rows = counts
            .iter()
            .filter(|c| c.views > 0 || c.downloads > 0)
            .map(|c| Ok((c.id.clone(), to_i64(c.views, "views")?, to_i64(c.downloads, "downloads")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.write(move |conn| {
            // One transaction per batch: a flush is counted whole or not at all.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO media_stats (id, views, downloads) VALUES (?1, ?2, ?3) ON CONFLICT (id) \
                         DO UPDATE SET views = views + excluded.views, downloads = downloads + excluded.downloads",
                    )
                    .map_err(backend)?;
                for (id, views, downloads) in &rows {
                    stmt.execute(params![id, views, downloads]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn stats(&self, id: &str) -> Result<MediaStats, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let counts = conn
                .query_row("SELECT views, downloads FROM media_stats WHERE id = ?1", [&id], |r| {
                    Ok((u64_column(r, 0)?, u64_column(r, 1)?))
                })
                .optional()
                .map_err(backend)?;
            let (views, downloads) = counts.unwrap_or_default();
            Ok(MediaStats { id, views, downloads })
        })
        .await
    }

    async fn usage(&self, user_id: &str, now: Timestamp) -> Result<StoredUsage, StoreError> {
        let user_id = user_id.to_owned();
        self.read(move |conn| {
            // Index `media_user` narrows the scan to the user's rows.
            let (bytes, count) = conn
                .query_row(
                    "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM media WHERE user_id = ?1 AND status != 'DELETED'",
                    [&user_id],
                    |r| Ok((u64_column(r, 0)?, u64_column(r, 1)?)),
                )
                .map_err(backend)?;
            let open_uploads = conn
                .query_row(
                    "SELECT COUNT(*) FROM uploads WHERE user_id = ?1 AND expires_at > ?2",
                    params![user_id, now.unix_millis()],
                    |r| u64_column(r, 0),
                )
                .map_err(backend)?;
            Ok(StoredUsage { bytes, count, open_uploads })
        })
        .await
    }
}
