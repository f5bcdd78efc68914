//! [`UserStore`] on SQLite: tables `users`, `refresh_tokens`, `login_attempts` (migration 2).
//!
//! Each method is one statement or one `BEGIN IMMEDIATE` transaction on the writer connection,
//! so a refresh-token exchange is atomic against every process sharing the file.

use std::time::Duration;

use async_trait::async_trait;
use mediabus_contracts::Timestamp;
use rusqlite::{OptionalExtension as _, Row, TransactionBehavior, ffi, params};

use super::{SqliteStore, backend, corrupt, extended_code};
use crate::users::window_end;
use crate::{LoginAttempts, RefreshToken, Rotation, StoreError, User, UserStore};

const USER_COLUMNS: &str = "id, email, name, password_hash, roles, created_at, updated_at";

const TOKEN_COLUMNS: &str = "token_hash, family_id, user_id, created_at, expires_at, used_at, revoked_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let roles: String = row.get(4)?;
    Ok(User {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        password_hash: row.get(3)?,
        roles: serde_json::from_str(&roles).map_err(|e| corrupt(4, format!("bad roles: {e}")))?,
        created_at: Timestamp::from_unix_millis(row.get(5)?),
        updated_at: Timestamp::from_unix_millis(row.get(6)?),
    })
}

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<RefreshToken> {
    let at = |column: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(column)?.map(Timestamp::from_unix_millis))
    };
    Ok(RefreshToken {
        token_hash: row.get(0)?,
        family_id: row.get(1)?,
        user_id: row.get(2)?,
        created_at: Timestamp::from_unix_millis(row.get(3)?),
        expires_at: Timestamp::from_unix_millis(row.get(4)?),
        used_at: at(5)?,
        revoked_at: at(6)?,
    })
}

/// A user write's constraint failure as the conflict it is.
fn user_conflict(e: rusqlite::Error, user: &User) -> StoreError {
    match extended_code(&e) {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => StoreError::Conflict(format!("email {} is taken", user.email)),
        Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => StoreError::Conflict(format!("user {} exists", user.id)),
        _ => backend(e),
    }
}

fn roles_json(user: &User) -> Result<String, StoreError> {
    serde_json::to_string(&user.roles).map_err(|e| StoreError::Backend(format!("encode roles: {e}")))
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let (user, roles) = (user.clone(), roles_json(user)?);
        self.write(move |conn| {
            conn.execute(
                &format!("INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    user.id,
                    user.email,
                    user.name,
                    user.password_hash,
                    roles,
                    user.created_at.unix_millis(),
                    user.updated_at.unix_millis()
                ],
            )
            .map(drop)
            .map_err(|e| user_conflict(e, &user))
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.point_by_key(id, |conn, id| {
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
                .and_then(|mut stmt| stmt.query_row([id], user_from_row).optional())
                .map_err(backend)
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        self.point_by_key(email, |conn, email| {
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE email = ?1"))
                .and_then(|mut stmt| stmt.query_row([email], user_from_row).optional())
                .map_err(backend)
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let (user, roles) = (user.clone(), roles_json(user)?);
        self.write(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE users SET email = ?2, name = ?3, password_hash = ?4, roles = ?5, created_at = ?6, \
                     updated_at = ?7 WHERE id = ?1",
                    params![
                        user.id,
                        user.email,
                        user.name,
                        user.password_hash,
                        roles,
                        user.created_at.unix_millis(),
                        user.updated_at.unix_millis()
                    ],
                )
                .map_err(|e| user_conflict(e, &user))?;
            if changed == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError> {
        let t = token.clone();
        self.write(move |conn| {
            let result = conn.execute(
                &format!("INSERT INTO refresh_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    t.token_hash,
                    t.family_id,
                    t.user_id,
                    t.created_at.unix_millis(),
                    t.expires_at.unix_millis(),
                    t.used_at.map(Timestamp::unix_millis),
                    t.revoked_at.map(Timestamp::unix_millis)
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(e) if extended_code(&e) == Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    Err(StoreError::Conflict("refresh token exists".into()))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshToken>, StoreError> {
        self.point_by_key(token_hash, |conn, token_hash| {
            conn.prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE token_hash = ?1"))
                .and_then(|mut stmt| stmt.query_row([token_hash], token_from_row).optional())
                .map_err(backend)
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next_hash: &str,
        now: Timestamp,
        next_expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let (presented, next) = (presented_hash.to_owned(), next_hash.to_owned());
        let (now, next_expires) = (now.unix_millis(), next_expires_at.unix_millis());
        self.write(move |conn| {
            // IMMEDIATE: read, classify and write under the write lock, so two processes
            // exchanging the same token are serialised and the second one sees it used.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let found = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE token_hash = ?1"),
                    [&presented],
                    token_from_row,
                )
                .optional()
                .map_err(backend)?;
            let outcome = match found {
                None => Rotation::Invalid,
                Some(t) if t.revoked_at.is_some() => Rotation::Invalid,
                Some(t) if t.used_at.is_some() => {
                    tx.execute(
                        "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
                        params![t.family_id, now],
                    )
                    .map_err(backend)?;
                    Rotation::Reused { user_id: t.user_id, family_id: t.family_id }
                }
                Some(t) if t.expires_at.unix_millis() <= now => Rotation::Invalid,
                Some(t) => {
                    tx.execute("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1", params![presented, now])
                        .map_err(backend)?;
                    tx.execute(
                        &format!(
                            "INSERT INTO refresh_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL)"
                        ),
                        params![next, t.family_id, t.user_id, now, next_expires],
                    )
                    .map_err(|e| match extended_code(&e) {
                        Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => StoreError::Conflict("refresh token exists".into()),
                        _ => backend(e),
                    })?;
                    Rotation::Rotated { user_id: t.user_id, family_id: t.family_id }
                }
            };
            tx.commit().map_err(backend)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<RefreshToken>, StoreError> {
        let hash = token_hash.to_owned();
        let now = now.unix_millis();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let found = tx
                .query_row(
                    &format!("SELECT {TOKEN_COLUMNS} FROM refresh_tokens WHERE token_hash = ?1"),
                    [&hash],
                    token_from_row,
                )
                .optional()
                .map_err(backend)?;
            if let Some(t) = &found {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
                    params![t.family_id, now],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(found)
        })
        .await
    }

    async fn record_login_attempt(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> Result<LoginAttempts, StoreError> {
        let key = key.to_owned();
        let (now, end) = (now.unix_millis(), window_end(now, window).unix_millis());
        self.write(move |conn| {
            // One statement: SET expressions all read the row as it was, so a stale window
            // restarts at 1 and a live one counts on, atomically.
            conn.query_row(
                "INSERT INTO login_attempts (key, count, window_start, expires_at) VALUES (?1, 1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET \
                   count        = CASE WHEN expires_at <= ?2 THEN 1  ELSE count + 1  END, \
                   window_start = CASE WHEN expires_at <= ?2 THEN ?2 ELSE window_start END, \
                   expires_at   = CASE WHEN expires_at <= ?2 THEN ?3 ELSE expires_at END \
                 RETURNING count, window_start",
                params![key, now, end],
                |r| {
                    let count: i64 = r.get(0)?;
                    Ok(LoginAttempts {
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        window_start: Timestamp::from_unix_millis(r.get(1)?),
                    })
                },
            )
            .map_err(backend)
        })
        .await
    }

    async fn clear_login_attempts(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |conn| {
            conn.execute("DELETE FROM login_attempts WHERE key = ?1", [key]).map(drop).map_err(backend)
        })
        .await
    }

    async fn purge_expired_auth(&self, now: Timestamp) -> Result<u64, StoreError> {
        let now = now.unix_millis();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let tokens = tx.execute("DELETE FROM refresh_tokens WHERE expires_at <= ?1", [now]).map_err(backend)?;
            let attempts = tx.execute("DELETE FROM login_attempts WHERE expires_at <= ?1", [now]).map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok((tokens + attempts) as u64)
        })
        .await
    }
}
