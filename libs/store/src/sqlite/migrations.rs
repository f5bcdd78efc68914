//! The SQLite schema: numbered migrations applied at open, and the rewrite of the stored JSON
//! documents when their form changes.

use rusqlite::{Connection, TransactionBehavior, params};

use super::{backend, doc_of, media_from_row};
use crate::StoreError;

/// Schema migrations as `(version, SQL)`, applied in order at open; `PRAGMA user_version` is the
/// version of the last one applied. Versions are explicit and run 1, 2, 3, ... without gaps (a
/// unit test checks), so code that depends on a migration names its number. Append only: never
/// edit a migration that has shipped.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    // 1: media, idempotency keys, upload sessions and parts.
    (
        1,
        r#"
    CREATE TABLE media (
        id            TEXT PRIMARY KEY NOT NULL,
        type          TEXT NOT NULL,
        original_name TEXT NOT NULL,
        -- original_name lowercased (Unicode) by the store: `q` searches it with instr(), which
        -- has no wildcards to escape and, unlike LIKE, folds more than ASCII letters.
        name_folded   TEXT NOT NULL,
        mime_type     TEXT NOT NULL,
        size          INTEGER NOT NULL,
        url           TEXT NOT NULL,
        user_id       TEXT NOT NULL,
        entity_id     TEXT,
        entity_type   TEXT,
        metadata      TEXT,               -- JSON
        is_public     INTEGER NOT NULL,   -- 0 or 1
        status        TEXT NOT NULL,
        created_at    INTEGER NOT NULL,   -- unix millis: integer order is time order
        updated_at    INTEGER NOT NULL,   -- unix millis
        checksum      TEXT,
        details       TEXT,               -- JSON
        variants      TEXT NOT NULL,      -- JSON array
        storage_key   TEXT
    ) STRICT;
    -- Listing indexes: each equality filter first, then the (created_at, id) sort/keyset key.
    CREATE INDEX media_created ON media (created_at, id);
    CREATE INDEX media_user    ON media (user_id, created_at, id);
    CREATE INDEX media_entity  ON media (entity_id, entity_type, created_at, id);
    CREATE INDEX media_status  ON media (status, created_at, id);
    CREATE INDEX media_public  ON media (is_public, created_at, id);

    CREATE TABLE idempotency (
        scope_key  TEXT PRIMARY KEY NOT NULL,
        media_id   TEXT NOT NULL,
        created_at INTEGER NOT NULL        -- unix millis, for a future expiry sweep
    ) STRICT;

    CREATE TABLE uploads (
        upload_id         TEXT PRIMARY KEY NOT NULL,
        user_id           TEXT NOT NULL,
        storage_key       TEXT NOT NULL,
        backend_upload_id TEXT NOT NULL,
        original_name     TEXT NOT NULL,
        declared_size     INTEGER,
        entity_id         TEXT,
        entity_type       TEXT,
        is_public         INTEGER NOT NULL,
        metadata          TEXT,            -- JSON
        part_size         INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        expires_at        INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX uploads_expires ON uploads (expires_at);

    CREATE TABLE upload_parts (
        -- The foreign key makes a part for an unknown session fail (-> NotFound) and
        -- deleting a session delete its parts.
        upload_id   TEXT NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
        part_number INTEGER NOT NULL,
        size        INTEGER NOT NULL,
        etag        TEXT NOT NULL,
        PRIMARY KEY (upload_id, part_number)
    ) STRICT, WITHOUT ROWID;
    "#,
    ),
    // 2: users, refresh tokens and failed-login counters of the auth service (`UserStore`).
    (
        2,
        r#"
    CREATE TABLE users (
        id            TEXT PRIMARY KEY NOT NULL,
        email         TEXT NOT NULL UNIQUE,   -- normalised by the service
        name          TEXT NOT NULL,
        password_hash TEXT NOT NULL,          -- bcrypt
        roles         TEXT NOT NULL,          -- JSON array of role names
        created_at    INTEGER NOT NULL,       -- unix millis
        updated_at    INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY NOT NULL,
        family_id  TEXT NOT NULL,
        user_id    TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER,
        revoked_at INTEGER
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX refresh_tokens_family  ON refresh_tokens (family_id);
    CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

    CREATE TABLE login_attempts (
        key          TEXT PRIMARY KEY NOT NULL,
        count        INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL       -- window end
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX login_attempts_expires ON login_attempts (expires_at);
    "#,
    ),
    // 3: each media row keeps its document as JSON (`serde_json` of `Media`), written with the
    // columns, so a point read replies with it instead of decoding columns and encoding them
    // again. Filled for existing rows by `fill_docs`; a later change to `Media`'s JSON form must
    // come with a migration that clears `doc` so it is written again.
    (3, "ALTER TABLE media ADD COLUMN doc TEXT;"),
    // 4: `failureReason` (DESIGN §9). The documents are written again (`fill_docs`) so that
    // replies straight from `doc` carry the new field as `null`.
    (4, "ALTER TABLE media ADD COLUMN failure_reason TEXT; UPDATE media SET doc = NULL;"),
    // 5: lifecycle (DESIGN §14, `LifecycleStore`): removed media awaiting their purge, by removal
    // time; media by storage key (the orphan sweeper's lookups); the sweeper's lease; view and
    // download counters (their own table: `MediaStore::update` rewrites whole media rows).
    (
        5,
        r#"
    CREATE INDEX media_purge_due ON media (updated_at) WHERE status = 'DELETED' AND storage_key IS NOT NULL;
    CREATE INDEX media_storage_key ON media (storage_key);
    CREATE INDEX uploads_storage_key ON uploads (storage_key);
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY NOT NULL,
        holder     TEXT NOT NULL,
        expires_at INTEGER NOT NULL        -- unix millis
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE media_stats (
        id        TEXT PRIMARY KEY NOT NULL,  -- media id
        views     INTEGER NOT NULL,
        downloads INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    ),
    // 6: listings that stay index-ordered as the table grows (issue 13). A caller's visibility
    // (`isPublic OR userId = caller`) is read as two index ranges (`list_blocking`), one per
    // alternative, so `is_public` comes right after the equality filter it goes with, then the
    // (created_at, id) sort key; the columns after it let the visibility rule and the usual
    // filters be checked, and `total` counted, from the index alone, without table rows.
    (
        6,
        r#"
    DROP INDEX media_public;
    CREATE INDEX media_public ON media (is_public, created_at, id, status, type);
    CREATE INDEX media_user_visible ON media (user_id, is_public, created_at, id, status, type);
    CREATE INDEX media_entity_visible
        ON media (entity_id, entity_type, is_public, created_at, id, status, type, user_id);
    "#,
    ),
];

/// The migration that last changed `Media`'s JSON form (4, `failureReason`): a database older
/// than it gets `doc` (re)written for every row by `migrate`.
pub(super) const DOC_FORM_VERSION: i64 = 4;

/// Applies the migrations a database lacks, in one exclusive transaction, and writes `doc` again
/// where the document's form changed since. Errors: a schema newer than this build, or SQLite's.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(backend)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(backend)?;
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if applied > known {
        return Err(StoreError::Backend(format!(
            "database schema version {applied} is newer than this build ({known}): upgrade the binary"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
        tx.execute_batch(sql).map_err(|e| StoreError::Backend(format!("migration {version}: {e}")))?;
    }
    if applied < DOC_FORM_VERSION {
        fill_docs(&tx)?;
    }
    tx.pragma_update(None, "user_version", known).map_err(backend)?;
    tx.commit().map_err(backend)
}

/// Writes `doc` for every media row without one (rows from before migration 2, or cleared by a
/// later one that changed the document's form). Rows a process of an older build inserts later
/// still lack it; point reads fall back to the columns for those.
fn fill_docs(conn: &Connection) -> Result<(), StoreError> {
    let mut select =
        conn.prepare(concat!("SELECT ", media_columns!(), " FROM media WHERE doc IS NULL")).map_err(backend)?;
    let mut update = conn.prepare("UPDATE media SET doc = ?2 WHERE id = ?1").map_err(backend)?;
    let records = select.query_map([], media_from_row).map_err(backend)?;
    for record in records {
        let media = record.map_err(backend)?.media;
        update.execute(params![media.id, doc_of(&media)?]).map_err(backend)?;
    }
    Ok(())
}
