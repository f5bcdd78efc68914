//! Embedded backend: one SQLite file (rusqlite, SQLite compiled in), shared by every worker
//! process on the machine.
//!
//! Concurrency: each store keeps one writer connection and up to [`READERS`] reader connections.
//! The file is in WAL mode, so readers never wait for the writer, and funnelling this process's
//! writes through one connection means they queue on an async mutex instead of spinning in
//! SQLite's busy handler. Other processes' writers are waited for by `busy_timeout`; write
//! transactions that read first start with `BEGIN IMMEDIATE` so they take the write lock up front
//! and cannot fail with a lock upgrade deadlock. Listings and writes run on tokio's blocking pool;
//! point reads run on the calling task (the `point` module).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mediabus_contracts::{ListFilter, MediaRecord, Page, Timestamp};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OptionalExtension as _, TransactionBehavior, ffi, params, params_from_iter};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};

use crate::cursor::CursorKey;
use crate::{MediaJson, MediaStore, StoreError, UploadPart, UploadSession, check_newer, clamp_janitor_limit};

// `UserStore` for this backend; a child module so it shares the connection helpers above.
mod users;
// `ProcessingStore` for this backend (conditional writes of the media processor).
mod processing;
// `LifecycleStore` for this backend (retention, orphans, leases, counters).
mod lifecycle;

/// Reader connections per store: enough to overlap the listing queries of a busy worker on a
/// small machine without holding many file handles.
const READERS: usize = 4;

/// How long a statement waits for another process's write lock before failing as a backend
/// error. Writes are short (one row or one small transaction), so seconds mean trouble.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a point read on the calling task may wait for a lock before it gives up there and
/// runs again on the blocking pool with [`BUSY_TIMEOUT`]: the calling task may be the only thread
/// of a worker's runtime, whose other requests (and `$SRV.PING`) must not wait behind a lock.
const POINT_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// The media columns in `media_from_row` order, as a literal (so `concat!` can build statements).
macro_rules! media_columns {
    () => {
        "id, type, original_name, mime_type, size, url, user_id, entity_id, entity_type, metadata, \
         is_public, status, created_at, updated_at, checksum, details, variants, storage_key, failure_reason"
    };
}

mod migrations;
use migrations::migrate;
// A listing page: its `WHERE` branches, statements and the read itself.
mod listing;
use listing::list_blocking;
// Point reads: on the calling task, media reads batched, locked ones off to the blocking pool.
mod point;
// Rows to records and back: the column codecs every query of this backend shares.
mod rows;
use point::{PointBatch, PointRow};
use rows::{
    corrupt, doc_of, json_text, media_from_row, media_values, text_column, to_i64, u64_column, upload_from_row,
};

const MEDIA_COLUMNS: &str = media_columns!();

/// The point read's statement ([`MediaStore::get`], [`MediaStore::get_json`]): a constant, so the
/// statement cache finds it without building it.
const GET_MEDIA_SQL: &str = "SELECT doc, storage_key, user_id, is_public, status FROM media WHERE id = ?1";
/// The whole row by its columns: for rows without `doc` (see `fill_docs`).
const GET_MEDIA_COLUMNS_SQL: &str = concat!("SELECT ", media_columns!(), " FROM media WHERE id = ?1");
/// Columns written besides `MEDIA_COLUMNS`, in `media_values` order.
const DERIVED_COLUMNS: [&str; 2] = ["name_folded", "doc"];

const UPLOAD_COLUMNS: &str = "upload_id, user_id, storage_key, backend_upload_id, original_name, declared_size, \
     entity_id, entity_type, is_public, metadata, part_size, created_at, expires_at";

/// The embedded store: a SQLite database file. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Arc<AsyncMutex<Connection>>,
    /// Idle reader connections, opened on first use; at most `READERS` exist (the semaphore).
    idle_readers: Arc<Mutex<Vec<Connection>>>,
    reader_slots: Arc<Semaphore>,
    /// `get`s waiting to run together (see [`SqliteStore::get`]).
    batch: Mutex<PointBatch>,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database at `path`, switches it
    /// to WAL mode and applies pending migrations. Other processes may open the same file at the
    /// same time; migrations run in one exclusive transaction, so each is applied once.
    ///
    /// [`StoreError::Backend`] if the file cannot be opened or written, or if its schema is newer
    /// than this build knows.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let writer = blocking(move || {
            if let Some(parent) = open_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Backend(format!("create {}: {e}", parent.display())))?;
            }
            let mut conn = connect(&open_path)?;
            // Persistent (stored in the file): every later connection is in WAL mode too.
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(backend)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "{}: journal_mode is {mode}, WAL needed",
                    open_path.display()
                )));
            }
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Arc::new(AsyncMutex::new(writer)),
                idle_readers: Arc::new(Mutex::new(Vec::new())),
                reader_slots: Arc::new(Semaphore::new(READERS)),
                batch: Mutex::new(PointBatch::default()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer connection (exclusive within this process).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let mut conn = Arc::clone(&self.inner.writer).lock_owned().await;
        blocking(move || f(&mut conn)).await
    }

    /// Runs `f` on a reader connection (up to `READERS` at once).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.inner.reader_slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("reader pool closed".into()))?;
        let idle = Arc::clone(&self.inner.idle_readers);
        let path = self.inner.path.clone();
        blocking(move || {
            let _permit = permit;
            let pooled = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => connect(&path)?,
            };
            let result = f(&mut conn);
            idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            result
        })
        .await
    }
}

/// Opens one connection with the per-connection settings (WAL itself is per file).
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::Backend(format!("open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    // NORMAL is durable across application crashes in WAL mode; only an OS crash or power loss
    // can drop the last transactions, which FULL would prevent at the cost of an fsync per commit.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(backend)?;
    Ok(conn)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?
}

/// Whether a statement failed because another connection held a lock past its busy timeout
/// (`SQLITE_BUSY`, "database is locked"; `backend` keeps SQLite's message).
fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(message) if message.contains("database is locked"))
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

/// The SQLite extended result code of a failed statement, if that is what failed.
fn extended_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => Some(f.extended_code),
        _ => None,
    }
}

#[async_trait]
impl MediaStore for SqliteStore {
    async fn insert(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let values = media_values(record)?;
        let id = record.media.id.clone();
        self.write(move |conn| {
            let sql = format!(
                "INSERT INTO media ({MEDIA_COLUMNS}, {}) VALUES ({})",
                DERIVED_COLUMNS.join(", "),
                placeholders(values.len())
            );
            match conn.execute(&sql, params_from_iter(&values)) {
                Ok(_) => Ok(()),
                Err(e) if extended_code(&e) == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    Err(StoreError::Conflict(format!("media {id} exists")))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    /// Batched with concurrent point reads (see `SqliteStore::point`).
    async fn get(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        self.point(id).await?.map(PointRow::into_record).transpose()
    }

    /// The `doc` column as is: no decoding, no encoding. Batched as [`MediaStore::get`].
    async fn get_json(&self, id: &str) -> Result<Option<MediaJson>, StoreError> {
        self.point(id).await?.map(PointRow::into_json).transpose()
    }

    async fn update(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let values = media_values(record)?;
        self.write(move |conn| {
            // Every column but id (value 1) is set; id is the key.
            let sets: Vec<String> = MEDIA_COLUMNS
                .split(", ")
                .chain(DERIVED_COLUMNS)
                .enumerate()
                .skip(1)
                .map(|(i, col)| format!("{} = ?{}", col.trim(), i + 1))
                .collect();
            let sql = format!("UPDATE media SET {} WHERE id = ?1", sets.join(", "));
            match conn.execute(&sql, params_from_iter(&values)).map_err(backend)? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn replace_if_unchanged(&self, read: &MediaRecord, record: &MediaRecord) -> Result<bool, StoreError> {
        check_newer(read, record)?;
        let mut values = media_values(record)?;
        let n = values.len();
        values.push(read.media.status.as_str().to_owned().into());
        values.push(read.media.updated_at.unix_millis().into());
        values.push(read.storage_key.clone().into());
        self.write(move |conn| {
            let sets: Vec<String> = MEDIA_COLUMNS
                .split(", ")
                .chain(DERIVED_COLUMNS)
                .enumerate()
                .skip(1)
                .map(|(i, col)| format!("{} = ?{}", col.trim(), i + 1))
                .collect();
            // `IS` compares NULL storage keys as equal.
            let sql = format!(
                "UPDATE media SET {} WHERE id = ?1 AND status = ?{} AND updated_at = ?{} AND storage_key IS ?{}",
                sets.join(", "),
                n + 1,
                n + 2,
                n + 3
            );
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let changed = tx.execute(&sql, params_from_iter(&values)).map_err(backend)?;
            let exists = changed == 1
                || tx
                    .query_row("SELECT 1 FROM media WHERE id = ?1", [&values[0]], |_| Ok(()))
                    .optional()
                    .map_err(backend)?
                    .is_some();
            tx.commit().map_err(backend)?;
            if exists { Ok(changed == 1) } else { Err(StoreError::NotFound) }
        })
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        let after = filter.cursor.as_deref().map(CursorKey::decode).transpose()?;
        let filter = filter.clone();
        self.read(move |conn| list_blocking(conn, &filter, after)).await
    }

    async fn claim_idempotency(&self, scope_key: &str, media_id: &str) -> Result<Option<String>, StoreError> {
        let (key, media_id) = (scope_key.to_owned(), media_id.to_owned());
        self.write(move |conn| {
            // IMMEDIATE: the insert-or-read pair is atomic against other processes too.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let inserted = tx
                .execute(
                    "INSERT INTO idempotency (scope_key, media_id, created_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (scope_key) DO NOTHING",
                    params![key, media_id, Timestamp::now().unix_millis()],
                )
                .map_err(backend)?;
            let existing = if inserted == 1 {
                None
            } else {
                Some(
                    tx.query_row("SELECT media_id FROM idempotency WHERE scope_key = ?1", [&key], |r| r.get(0))
                        .map_err(backend)?,
                )
            };
            tx.commit().map_err(backend)?;
            Ok(existing)
        })
        .await
    }

    async fn release_idempotency(&self, scope_key: &str, media_id: &str) -> Result<(), StoreError> {
        let (key, media_id) = (scope_key.to_owned(), media_id.to_owned());
        self.write(move |conn| {
            conn.execute("DELETE FROM idempotency WHERE scope_key = ?1 AND media_id = ?2", [key, media_id])
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn take_over_idempotency(
        &self,
        scope_key: &str,
        stale_media_id: &str,
        media_id: &str,
        claimed_before: Timestamp,
    ) -> Result<bool, StoreError> {
        let (key, stale, media_id) = (scope_key.to_owned(), stale_media_id.to_owned(), media_id.to_owned());
        self.write(move |conn| {
            conn.execute(
                "UPDATE idempotency SET media_id = ?3, created_at = ?4 \
                 WHERE scope_key = ?1 AND media_id = ?2 AND created_at < ?5",
                params![key, stale, media_id, Timestamp::now().unix_millis(), claimed_before.unix_millis()],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn expire_idempotency(&self, claimed_before: Timestamp) -> Result<u64, StoreError> {
        self.write(move |conn| {
            conn.execute("DELETE FROM idempotency WHERE created_at < ?1", [claimed_before.unix_millis()])
                .map(|n| n as u64)
                .map_err(backend)
        })
        .await
    }

    async fn create_upload(&self, s: &UploadSession) -> Result<(), StoreError> {
        let values: Vec<SqlValue> = vec![
            s.upload_id.clone().into(),
            s.user_id.clone().into(),
            s.storage_key.clone().into(),
            s.backend_upload_id.clone().into(),
            s.original_name.clone().into(),
            s.declared_size.map(|n| to_i64(n, "declared size")).transpose()?.into(),
            s.entity_id.clone().into(),
            s.entity_type.clone().into(),
            i64::from(s.is_public).into(),
            json_text(&s.metadata)?.into(),
            to_i64(s.part_size, "part size")?.into(),
            s.created_at.unix_millis().into(),
            s.expires_at.unix_millis().into(),
        ];
        let id = s.upload_id.clone();
        self.write(move |conn| {
            let sql = format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES ({})", placeholders(values.len()));
            match conn.execute(&sql, params_from_iter(&values)) {
                Ok(_) => Ok(()),
                Err(e) if extended_code(&e) == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    Err(StoreError::Conflict(format!("upload {id} exists")))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn get_upload(&self, upload_id: &str) -> Result<Option<UploadSession>, StoreError> {
        self.point_by_key(upload_id, |conn, upload_id| {
            conn.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1"))
                .and_then(|mut stmt| stmt.query_row([upload_id], upload_from_row).optional())
                .map_err(backend)
        })
        .await
    }

    async fn record_part(&self, upload_id: &str, part: &UploadPart) -> Result<(), StoreError> {
        let id = upload_id.to_owned();
        let (number, size, etag) = (i64::from(part.part_number), to_i64(part.size, "part size")?, part.etag.clone());
        self.write(move |conn| {
            let result = conn.execute(
                "INSERT INTO upload_parts (upload_id, part_number, size, etag) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size, etag = excluded.etag",
                params![id, number, size, etag],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if extended_code(&e) == Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Err(StoreError::NotFound),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn list_parts(&self, upload_id: &str) -> Result<Vec<UploadPart>, StoreError> {
        let id = upload_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare("SELECT part_number, size, etag FROM upload_parts WHERE upload_id = ?1 ORDER BY part_number")
                .map_err(backend)?;
            let rows = stmt
                .query_map([id], |r| {
                    let number: i64 = r.get(0)?;
                    Ok(UploadPart {
                        part_number: u32::try_from(number).map_err(|_| corrupt(0, format!("part number {number}")))?,
                        size: u64_column(r, 1)?,
                        etag: r.get(2)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        let id = upload_id.to_owned();
        self.write(move |conn| {
            // The foreign key cascades to the parts; deleting them first as well keeps this
            // correct even on a connection where foreign keys were left off.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            tx.execute("DELETE FROM upload_parts WHERE upload_id = ?1", [&id]).map_err(backend)?;
            tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [&id]).map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn extend_upload(&self, upload_id: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
        let id = upload_id.to_owned();
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE uploads SET expires_at = max(expires_at, ?3) WHERE upload_id = ?1 AND expires_at > ?2",
                    params![id, now.unix_millis(), until.unix_millis()],
                )
                .map_err(backend)?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete_expired_upload(&self, upload_id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let id = upload_id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let deleted = tx
                .execute(
                    "DELETE FROM uploads WHERE upload_id = ?1 AND expires_at <= ?2",
                    params![id, now.unix_millis()],
                )
                .map_err(backend)?;
            if deleted == 1 {
                // As `delete_upload`: correct even where foreign keys were left off.
                tx.execute("DELETE FROM upload_parts WHERE upload_id = ?1", [&id]).map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn expired_uploads(&self, now: Timestamp, limit: u32) -> Result<Vec<UploadSession>, StoreError> {
        let limit = i64::from(clamp_janitor_limit(limit));
        self.read(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE expires_at <= ?1 ORDER BY expires_at, upload_id LIMIT ?2"
                ))
                .map_err(backend)?;
            let rows = stmt.query_map(params![now.unix_millis(), limit], upload_from_row).map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn health_check(&self) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT COUNT(*) FROM media WHERE 0", [], |r| r.get::<_, i64>(0)).map(drop).map_err(backend)
        })
        .await
    }
}

/// `?1, ?2, .., ?n`.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use mediabus_contracts::{Media, MediaStatus, MediaType};
    use serde_json::Value;

    use super::migrations::{DOC_FORM_VERSION, MIGRATIONS};
    use super::*;

    fn record(id: &str) -> MediaRecord {
        let now = Timestamp::from_unix_millis(1_795_219_200_000);
        MediaRecord {
            media: Media {
                id: id.to_owned(),
                media_type: MediaType::Image,
                original_name: format!("{id}.png"),
                mime_type: "image/png".into(),
                size: 1,
                url: format!("/{id}.png"),
                user_id: "u1".into(),
                entity_id: None,
                entity_type: None,
                metadata: None,
                is_public: false,
                status: MediaStatus::Ready,
                created_at: now,
                updated_at: now,
                checksum: None,
                details: None,
                variants: vec![],
                failure_reason: None,
            },
            storage_key: None,
        }
    }

    async fn store_with(ids: &[&str]) -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("m.db")).await.unwrap();
        for id in ids {
            store.insert(&record(id)).await.unwrap();
        }
        (dir, store)
    }

    #[test]
    fn migrations_are_numbered_one_to_n_without_gaps() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
        assert!(MIGRATIONS.iter().any(|(v, _)| *v == DOC_FORM_VERSION));
    }

    /// Upgrades from every earlier schema version: a database made by the first `n` migrations
    /// (as a build of that time left it, with a row written the way that build wrote it) opens
    /// with this build, gets a current `doc` for the row and reads it back.
    #[tokio::test]
    async fn a_database_of_every_earlier_version_upgrades() {
        for n in 0..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.db");
            let old = record("old");
            {
                let conn = connect(&path).unwrap();
                for (_, sql) in &MIGRATIONS[..n] {
                    conn.execute_batch(sql).unwrap();
                }
                conn.pragma_update(None, "user_version", n as i64).unwrap();
                if n > 0 {
                    // The columns of version n: `doc` from 3, `failure_reason` from 4.
                    let values = media_values(&old).unwrap();
                    let (mut columns, mut row): (Vec<&str>, Vec<SqlValue>) =
                        MEDIA_COLUMNS.split(", ").zip(values[..19].iter().cloned()).unzip();
                    columns.push("name_folded");
                    row.push(values[19].clone());
                    if n < 4 {
                        let at = columns.iter().position(|c| *c == "failure_reason").unwrap();
                        columns.remove(at);
                        row.remove(at);
                    }
                    if n == 3 {
                        // A version-3 build wrote its documents without `failureReason`.
                        let mut doc = serde_json::to_value(&old.media).unwrap();
                        doc.as_object_mut().unwrap().remove("failureReason");
                        columns.push("doc");
                        row.push(doc.to_string().into());
                    } else if n > 3 {
                        columns.push("doc");
                        row.push(values[20].clone());
                    }
                    let sql =
                        format!("INSERT INTO media ({}) VALUES ({})", columns.join(", "), placeholders(row.len()));
                    conn.execute(&sql, params_from_iter(row)).unwrap();
                }
            }
            let store = SqliteStore::open(&path).await.unwrap_or_else(|e| panic!("version {n}: {e}"));
            let conn = connect(&path).unwrap();
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64, "from version {n}");
            if n == 0 {
                store.insert(&old).await.unwrap();
            }
            let doc: String = conn.query_row("SELECT doc FROM media WHERE id = 'old'", [], |r| r.get(0)).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&doc).unwrap(),
                serde_json::to_value(&old.media).unwrap(),
                "from version {n}"
            );
            assert_eq!(store.get("old").await.unwrap(), Some(old.clone()), "from version {n}");
            let json = store.get_json("old").await.unwrap().unwrap();
            assert!(json.json.get().contains("\"failureReason\":null"), "from version {n}: {}", json.json.get());
        }
    }

    /// A row without `doc` (inserted by a process of an older build during an upgrade) is read
    /// from its columns.
    #[tokio::test]
    async fn a_row_without_its_document_is_read_from_the_columns() {
        let (dir, store) = store_with(&["legacy"]).await;
        connect(&dir.path().join("m.db")).unwrap().execute("UPDATE media SET doc = NULL", []).unwrap();
        assert_eq!(store.get("legacy").await.unwrap(), Some(record("legacy")));
        let doc = store.get_json("legacy").await.unwrap().unwrap();
        assert_eq!(serde_json::from_str::<Media>(doc.json.get()).unwrap(), record("legacy").media);
        assert_eq!((doc.user_id.as_str(), doc.is_public, doc.status), ("u1", false, MediaStatus::Ready));
    }

    #[test]
    fn the_column_fallback_selects_the_media_columns() {
        assert_eq!(GET_MEDIA_COLUMNS_SQL, format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = ?1"));
    }

    /// Concurrent gets share batches; each gets its own answer, and a write committed before a
    /// get is seen by it.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_gets_each_get_their_record() {
        let (_dir, store) = store_with(&["a", "b", "c"]).await;
        let ids = ["a", "missing", "b", "c", "a"];
        let got = futures_util::future::join_all(ids.iter().map(|id| store.get(id))).await;
        let got: Vec<Option<String>> = got.into_iter().map(|r| r.unwrap().map(|r| r.media.id)).collect();
        assert_eq!(got, [Some("a".into()), None, Some("b".into()), Some("c".into()), Some("a".into())]);

        let mut changed = record("b");
        changed.media.is_public = true;
        store.update(&changed).await.unwrap();
        let (b, d) = tokio::join!(store.get("b"), store.get("d"));
        assert!(b.unwrap().unwrap().media.is_public, "sees the committed write");
        assert!(d.unwrap().is_none());
        assert!(store.inner.batch.lock().unwrap().pending.is_empty());
    }

    /// 18: a read that finds the database locked is recognised as such (`is_busy`), so the
    /// point reads retry it on the blocking pool. (A WAL file cannot be locked against readers
    /// while the store holds it open, so this uses a rollback-journal file to get a real
    /// `SQLITE_BUSY`.)
    #[test]
    fn a_locked_database_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.db");
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("CREATE TABLE t (x INTEGER); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);").unwrap();
        let reader = Connection::open(&path).unwrap();
        reader.busy_timeout(POINT_BUSY_TIMEOUT).unwrap();
        let started = std::time::Instant::now();
        let err = reader.query_row("SELECT COUNT(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "bounded by the short timeout");
        assert!(is_busy(&backend(err)));
        assert!(!is_busy(&StoreError::Backend("sqlite: no such table: t".into())));
    }

    /// A caller that gives up while leading a batch still gets the others answered.
    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_leader_does_not_strand_the_batch() {
        let (_dir, store) = store_with(&["a", "b"]).await;
        let mut leader = Box::pin(store.get("a"));
        assert!(futures_util::poll!(&mut leader).is_pending(), "the leader yields once");
        let mut follower = Box::pin(store.get("b"));
        assert!(futures_util::poll!(&mut follower).is_pending());
        drop(leader);
        assert_eq!(follower.await.unwrap().unwrap().media.id, "b");
        // The next caller leads a batch of its own.
        assert_eq!(store.get("a").await.unwrap().unwrap().media.id, "a");
    }
}
