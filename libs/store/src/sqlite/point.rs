//! Point reads (one media, upload, user or session by key) on SQLite: run right on the calling
//! task on a pooled reader, media reads batched into one read transaction, and a read that finds
//! the database locked handed to the blocking pool.

use rusqlite::{Connection, OptionalExtension as _, Row};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use mediabus_contracts::{MediaRecord, MediaStatus};

use super::{
    BUSY_TIMEOUT, GET_MEDIA_COLUMNS_SQL, GET_MEDIA_SQL, POINT_BUSY_TIMEOUT, SqliteStore, backend, connect, corrupt,
    doc_of, is_busy, media_from_row, text_column,
};
use crate::{MediaJson, StoreError};

/// A media point read waiting for its batch, and where its answer goes.
type PendingGet = (String, oneshot::Sender<Result<Option<PointRow>, StoreError>>);

/// What a point read fetches: the document as JSON and what the access rules and callers of
/// `get` need besides it.
pub(super) struct PointRow {
    doc: String,
    storage_key: Option<String>,
    user_id: String,
    is_public: bool,
    status: MediaStatus,
}

impl PointRow {
    /// A row of `GET_MEDIA_SQL`; `None` if it has no `doc` (written before migration 2).
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Option<Self>> {
        let Some(doc) = row.get(0)? else { return Ok(None) };
        let status_text = text_column(row, 4)?.unwrap_or_default();
        Ok(Some(Self {
            doc,
            storage_key: row.get(1)?,
            user_id: row.get(2)?,
            is_public: row.get(3)?,
            status: MediaStatus::parse(status_text)
                .ok_or_else(|| corrupt(4, format!("unknown status {status_text}")))?,
        }))
    }

    /// From the columns, for a row without `doc`.
    fn from_record(record: MediaRecord) -> Result<Self, StoreError> {
        let MediaRecord { media, storage_key } = record;
        Ok(Self {
            doc: doc_of(&media)?,
            storage_key,
            is_public: media.is_public,
            status: media.status,
            user_id: media.user_id,
        })
    }

    pub(super) fn into_record(self) -> Result<MediaRecord, StoreError> {
        let media =
            serde_json::from_str(&self.doc).map_err(|e| StoreError::Backend(format!("corrupt media doc: {e}")))?;
        Ok(MediaRecord { media, storage_key: self.storage_key })
    }

    pub(super) fn into_json(self) -> Result<MediaJson, StoreError> {
        let json =
            RawValue::from_string(self.doc).map_err(|e| StoreError::Backend(format!("corrupt media doc: {e}")))?;
        Ok(MediaJson { json, user_id: self.user_id, is_public: self.is_public, status: self.status })
    }
}

/// One point read with `stmt` (`GET_MEDIA_SQL` on `conn`), inside the batch's transaction.
fn point_read(
    conn: &Connection,
    stmt: &mut rusqlite::CachedStatement<'_>,
    id: &str,
) -> Result<Option<PointRow>, StoreError> {
    match stmt.query_row([id], PointRow::from_row).optional().map_err(backend)? {
        None => Ok(None),
        Some(Some(row)) => Ok(Some(row)),
        Some(None) => {
            let mut stmt = conn.prepare_cached(GET_MEDIA_COLUMNS_SQL).map_err(backend)?;
            let record = stmt.query_row([id], media_from_row).optional().map_err(backend)?;
            record.map(PointRow::from_record).transpose()
        }
    }
}

/// The point reads of one batch: the first caller leads (it yields once, then runs them all).
#[derive(Default)]
pub(super) struct PointBatch {
    pub(super) pending: Vec<PendingGet>,
    /// A leader is collecting: later callers just wait for their answer.
    collecting: bool,
}

/// Runs the current batch when dropped: when the leader's wait ends, and also if the leader's
/// future is dropped mid-wait (its caller timed out), so the others still get their answers.
struct RunBatch<'a>(&'a SqliteStore);

impl Drop for RunBatch<'_> {
    fn drop(&mut self) {
        self.0.run_batch();
    }
}

impl SqliteStore {
    /// Runs a point read (one row by primary key) right on the calling task, on a pooled reader
    /// connection. A cached point read of a WAL database takes microseconds, less than handing
    /// it to the blocking pool and back (measured: the futex wake-ups of `spawn_blocking` cost
    /// more CPU than the query); WAL readers never wait for the writer. Scans and writes still go
    /// through [`SqliteStore::read`] / [`SqliteStore::write`].
    fn read_point<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let idle = &self.inner.idle_readers;
        let pooled = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.inner.path)?,
        };
        // Short here (see `POINT_BUSY_TIMEOUT`); pooled connections go back with the long one.
        let result = conn.busy_timeout(POINT_BUSY_TIMEOUT).map_err(backend).and_then(|()| f(&mut conn));
        // A connection left inside a transaction (a failed COMMIT) is not reused.
        if conn.is_autocommit() && conn.busy_timeout(BUSY_TIMEOUT).is_ok() {
            idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
        }
        result
    }

    /// A point read by `key` with `f`: on the calling task (`read_point`), and if that finds the
    /// database locked, again on the blocking pool, where waiting stalls no other request.
    pub(super) async fn point_by_key<T: Send + 'static>(
        &self,
        key: &str,
        f: fn(&mut Connection, &str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.read_point(|conn| f(conn, key)) {
            Err(e) if is_busy(&e) => {
                let key = key.to_owned();
                self.read(move |conn| f(conn, &key)).await
            }
            other => other,
        }
    }

    /// A point read, batched: the first caller yields once to the scheduler, letting the requests
    /// already received reach their point read too, then runs them all right on its task (see
    /// `run_batch`).
    pub(super) async fn point(&self, id: &str) -> Result<Option<PointRow>, StoreError> {
        let (answer, result) = oneshot::channel();
        let lead = {
            let mut batch = self.inner.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.pending.push((id.to_owned(), answer));
            !std::mem::replace(&mut batch.collecting, true)
        };
        if lead {
            let run = RunBatch(self);
            tokio::task::yield_now().await;
            drop(run);
        }
        result.await.unwrap_or_else(|_| Err(StoreError::Backend("point read abandoned".into())))
    }

    /// Answers a point read that found the database locked from the blocking pool, which waits
    /// for the lock up to [`BUSY_TIMEOUT`] without stalling this task (see `POINT_BUSY_TIMEOUT`).
    fn answer_off_task(&self, id: String, answer: oneshot::Sender<Result<Option<PointRow>, StoreError>>) {
        let store = self.clone();
        tokio::spawn(async move {
            let result = store
                .read(move |conn| {
                    let mut stmt = conn.prepare_cached(GET_MEDIA_SQL).map_err(backend)?;
                    point_read(conn, &mut stmt, &id)
                })
                .await;
            let _ = answer.send(result);
        });
    }

    /// Runs every pending point read in one read transaction and answers each. Each read transaction
    /// costs two `fcntl` locks on the WAL index and a snapshot set-up (measured: a third of a
    /// `media.findOne`); a batch pays them once. The snapshot is taken after every batched
    /// caller asked, so each sees every write committed before its request: nothing is stale.
    fn run_batch(&self) {
        let pending = {
            let mut batch = self.inner.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.collecting = false;
            std::mem::take(&mut batch.pending)
        };
        if pending.is_empty() {
            return;
        }
        let results = self.read_point(|conn| {
            let many = pending.len() > 1;
            if many {
                conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(backend)?;
            }
            let mut stmt = conn.prepare_cached(GET_MEDIA_SQL).map_err(backend)?;
            let results: Vec<_> = pending.iter().map(|(id, _)| point_read(conn, &mut stmt, id)).collect();
            drop(stmt);
            if many {
                // Read-only: a failed COMMIT loses nothing read; the connection is then dropped.
                let _ = conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([]));
            }
            Ok(results)
        });
        match results {
            Ok(results) => {
                for ((id, answer), result) in pending.into_iter().zip(results) {
                    match result {
                        Err(e) if is_busy(&e) => self.answer_off_task(id, answer),
                        result => {
                            let _ = answer.send(result);
                        }
                    }
                }
            }
            Err(e) if is_busy(&e) => {
                for (id, answer) in pending {
                    self.answer_off_task(id, answer);
                }
            }
            Err(e) => {
                for (_, answer) in pending {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}
