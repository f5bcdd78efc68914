//! [`UserStore`] on MongoDB.
//!
//! Collections:
//! - `users`: `{_id: user id, email, name, passwordHash, roles: [..], createdAt, updatedAt}`,
//!   unique index on `email`.
//! - `refresh_tokens`: `{_id: token hash, familyId, userId, createdAt, expiresAt, usedAt}`,
//!   indexed by `familyId` and `expiresAt`.
//! - `refresh_families`: `{_id: family id, userId, createdAt, revokedAt}`: one document per login
//!   session, and the only place revocation is recorded (a token's `revoked_at` is its family's).
//!   Revoking is then a single-document write, so no multi-document transaction is needed: a
//!   rotation that races with a revocation either sees the family revoked, or leaves behind a
//!   successor that is dead through its family anyway.
//! - `login_attempts`: `{_id: key, count, windowStart, expiresAt}`.
//!
//! Dates are only ever written inside whole documents (insert or replace), never by `$set`:
//! nx-27017, the MongoDB stand-in the tests use, stores a `$set` date as text. Conditional
//! replaces (`find_one_and_replace` on `usedAt: null` / `revokedAt: null`) keep each change atomic.

use std::time::Duration;

use async_trait::async_trait;
use mediabus_contracts::Timestamp;
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;

use super::{MongoStore, backend, corrupt, date, get_opt_int, get_str, get_time, index, is_duplicate_key};
use crate::users::window_end;
use crate::{LoginAttempts, RefreshToken, Rotation, StoreError, User, UserStore};

impl MongoStore {
    fn users(&self) -> Collection<Document> {
        self.db.collection("users")
    }

    fn tokens(&self) -> Collection<Document> {
        self.db.collection("refresh_tokens")
    }

    fn families(&self) -> Collection<Document> {
        self.db.collection("refresh_families")
    }

    fn attempts(&self) -> Collection<Document> {
        self.db.collection("login_attempts")
    }

    /// The indexes of the user collections (a no-op when they exist).
    pub(super) async fn create_user_indexes(&self) -> Result<(), StoreError> {
        self.users().create_index(index("users_email", doc! { "email": 1 }, true)).await.map_err(backend)?;
        self.tokens()
            .create_indexes([
                index("refresh_tokens_family", doc! { "familyId": 1 }, false),
                index("refresh_tokens_expires", doc! { "expiresAt": 1 }, false),
            ])
            .await
            .map_err(backend)?;
        self.attempts()
            .create_index(index("login_attempts_expires", doc! { "expiresAt": 1 }, false))
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The family document, or `None`.
    async fn family(&self, family_id: &str) -> Result<Option<Document>, StoreError> {
        self.families().find_one(doc! { "_id": family_id }).await.map_err(backend)
    }

    /// Marks a family revoked at `now` unless it already is (the first revocation time stays).
    async fn revoke_family(&self, family_id: &str, now: Timestamp) -> Result<(), StoreError> {
        let Some(mut family) = self.family(family_id).await? else {
            return Ok(());
        };
        if !is_null(family.get("revokedAt")) {
            return Ok(());
        }
        family.insert("revokedAt", date(now));
        // Conditional: if another worker revoked it meanwhile, theirs stands.
        self.families()
            .find_one_and_replace(doc! { "_id": family_id, "revokedAt": Bson::Null }, family)
            .await
            .map(drop)
            .map_err(backend)
    }

    /// The token with this hash, its revocation read from its family.
    async fn token_with_family(&self, token_hash: &str) -> Result<Option<(RefreshToken, FamilyState)>, StoreError> {
        let Some(found) = self.tokens().find_one(doc! { "_id": token_hash }).await.map_err(backend)? else {
            return Ok(None);
        };
        let mut token = token_from_doc(&found)?;
        let state = match self.family(&token.family_id).await? {
            None => FamilyState::Missing,
            Some(f) => match get_opt_time(&f, "revokedAt")? {
                Some(at) => {
                    token.revoked_at = Some(at);
                    FamilyState::Revoked
                }
                None => FamilyState::Live,
            },
        };
        Ok(Some((token, state)))
    }
}

/// What a token's family says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyState {
    Live,
    Revoked,
    /// Purged or never written: treated as revoked (fail closed).
    Missing,
}

fn is_null(value: Option<&Bson>) -> bool {
    matches!(value, None | Some(Bson::Null))
}

fn opt_date(t: Option<Timestamp>) -> Bson {
    t.map_or(Bson::Null, |t| Bson::DateTime(date(t)))
}

fn get_opt_time(d: &Document, field: &str) -> Result<Option<Timestamp>, StoreError> {
    match d.get(field) {
        None | Some(Bson::Null) => Ok(None),
        Some(_) => get_time(d, field).map(Some),
    }
}

fn user_to_doc(u: &User) -> Document {
    doc! {
        "_id": &u.id,
        "email": &u.email,
        "name": &u.name,
        "passwordHash": &u.password_hash,
        "roles": u.roles.clone(),
        "createdAt": date(u.created_at),
        "updatedAt": date(u.updated_at),
    }
}

fn user_from_doc(d: &Document) -> Result<User, StoreError> {
    let roles = match d.get("roles") {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned).ok_or_else(|| corrupt("roles", "expected strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(corrupt("roles", "expected an array")),
    };
    Ok(User {
        id: get_str(d, "_id")?,
        email: get_str(d, "email")?,
        name: get_str(d, "name")?,
        password_hash: get_str(d, "passwordHash")?,
        roles,
        created_at: get_time(d, "createdAt")?,
        updated_at: get_time(d, "updatedAt")?,
    })
}

fn token_to_doc(t: &RefreshToken) -> Document {
    doc! {
        "_id": &t.token_hash,
        "familyId": &t.family_id,
        "userId": &t.user_id,
        "createdAt": date(t.created_at),
        "expiresAt": date(t.expires_at),
        "usedAt": opt_date(t.used_at),
    }
}

fn token_from_doc(d: &Document) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        token_hash: get_str(d, "_id")?,
        family_id: get_str(d, "familyId")?,
        user_id: get_str(d, "userId")?,
        created_at: get_time(d, "createdAt")?,
        expires_at: get_time(d, "expiresAt")?,
        used_at: get_opt_time(d, "usedAt")?,
        // Filled in from the family by the caller.
        revoked_at: None,
    })
}

fn attempts_from_doc(d: &Document) -> Result<LoginAttempts, StoreError> {
    let count = get_opt_int(d, "count")?.ok_or_else(|| corrupt("count", "missing"))?;
    Ok(LoginAttempts {
        count: u32::try_from(count).map_err(|_| corrupt("count", "out of range"))?,
        window_start: get_time(d, "windowStart")?,
    })
}

/// A user write's duplicate-key failure as a conflict.
fn user_conflict(e: mongodb::error::Error, user: &User) -> StoreError {
    if is_duplicate_key(&e) {
        // Ids are fresh cuids, so a duplicate is in practice the unique email.
        StoreError::Conflict(format!("email {} is taken (or user {} exists)", user.email, user.id))
    } else {
        backend(e)
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.users().insert_one(user_to_doc(user)).await.map(drop).map_err(|e| user_conflict(e, user))
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let found = self.users().find_one(doc! { "_id": id }).await.map_err(backend)?;
        found.as_ref().map(user_from_doc).transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let found = self.users().find_one(doc! { "email": email }).await.map_err(backend)?;
        found.as_ref().map(user_from_doc).transpose()
    }

    async fn update_user(&self, user: &User) -> Result<(), StoreError> {
        let replaced = self
            .users()
            .replace_one(doc! { "_id": &user.id }, user_to_doc(user))
            .await
            .map_err(|e| user_conflict(e, user))?;
        if replaced.matched_count == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError> {
        let family = doc! {
            "_id": &token.family_id,
            "userId": &token.user_id,
            "createdAt": date(token.created_at),
            "revokedAt": opt_date(token.revoked_at),
        };
        match self.families().insert_one(family).await {
            // An existing family (not the normal case: logins start new ones) keeps its state.
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        match self.tokens().insert_one(token_to_doc(token)).await {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate_key(&e) => Err(StoreError::Conflict("refresh token exists".into())),
            Err(e) => Err(backend(e)),
        }
    }

    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshToken>, StoreError> {
        Ok(self.token_with_family(token_hash).await?.map(|(token, _)| token))
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next_hash: &str,
        now: Timestamp,
        next_expires_at: Timestamp,
    ) -> Result<Rotation, StoreError> {
        let Some((token, family)) = self.token_with_family(presented_hash).await? else {
            return Ok(Rotation::Invalid);
        };
        if family != FamilyState::Live {
            return Ok(Rotation::Invalid);
        }
        let reused = |t: RefreshToken| Rotation::Reused { user_id: t.user_id, family_id: t.family_id };
        if token.used_at.is_some() {
            self.revoke_family(&token.family_id, now).await?;
            return Ok(reused(token));
        }
        // Compared here, in milliseconds (nx-27017 compares dates in whole seconds).
        if token.expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        // Claim it: only one replace can match `usedAt: null`, so only one caller rotates.
        let used = RefreshToken { used_at: Some(now), ..token.clone() };
        let claimed = self
            .tokens()
            .find_one_and_replace(doc! { "_id": presented_hash, "usedAt": Bson::Null }, token_to_doc(&used))
            .await
            .map_err(backend)?;
        if claimed.is_none() {
            // Another exchange of the same token got there first: that is a reuse too.
            self.revoke_family(&token.family_id, now).await?;
            return Ok(reused(token));
        }
        let next = RefreshToken {
            token_hash: next_hash.to_owned(),
            created_at: now,
            expires_at: next_expires_at,
            used_at: None,
            revoked_at: None,
            ..token.clone()
        };
        match self.tokens().insert_one(token_to_doc(&next)).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => return Err(StoreError::Conflict("refresh token exists".into())),
            Err(e) => return Err(backend(e)),
        }
        // A revocation that raced with us already killed the successor through its family;
        // say so rather than hand out a dead token.
        match self.family(&token.family_id).await? {
            Some(f) if is_null(f.get("revokedAt")) => {
                Ok(Rotation::Rotated { user_id: token.user_id, family_id: token.family_id })
            }
            _ => Ok(Rotation::Invalid),
        }
    }

    async fn revoke_refresh_family(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<RefreshToken>, StoreError> {
        let Some((token, _)) = self.token_with_family(token_hash).await? else {
            return Ok(None);
        };
        self.revoke_family(&token.family_id, now).await?;
        Ok(Some(token))
    }

    async fn record_login_attempt(
        &self,
        key: &str,
        now: Timestamp,
        window: Duration,
    ) -> Result<LoginAttempts, StoreError> {
        let fresh =
            doc! { "_id": key, "count": 1_i64, "windowStart": date(now), "expiresAt": date(window_end(now, window)) };
        // Count on in a live window; else restart a stale one; else create it. Each step is a
        // single-document operation, and losing a race to another worker just means the next
        // round finds the window that worker made.
        for _ in 0..3 {
            let counted = self
                .attempts()
                .find_one_and_update(
                    doc! { "_id": key, "expiresAt": { "$gt": date(now) } },
                    doc! { "$inc": { "count": 1_i64 } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?;
            if let Some(d) = counted {
                return attempts_from_doc(&d);
            }
            let restarted = self
                .attempts()
                .replace_one(doc! { "_id": key, "expiresAt": { "$lte": date(now) } }, fresh.clone())
                .await
                .map_err(backend)?;
            if restarted.matched_count == 1 {
                return Ok(LoginAttempts { count: 1, window_start: now });
            }
            match self.attempts().insert_one(fresh.clone()).await {
                Ok(_) => return Ok(LoginAttempts { count: 1, window_start: now }),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Err(StoreError::Backend(format!("login counter {key} keeps changing")))
    }

    async fn clear_login_attempts(&self, key: &str) -> Result<(), StoreError> {
        self.attempts().delete_one(doc! { "_id": key }).await.map(drop).map_err(backend)
    }

    async fn purge_expired_auth(&self, now: Timestamp) -> Result<u64, StoreError> {
        let expired = doc! { "expiresAt": { "$lte": date(now) } };
        let families = self.tokens().distinct("familyId", expired.clone()).await.map_err(backend)?;
        let tokens = self.tokens().delete_many(expired.clone()).await.map_err(backend)?;
        let attempts = self.attempts().delete_many(expired).await.map_err(backend)?;
        // A family goes with its last token. Not counted: SQLite keeps no family records.
        for family in families {
            let left = self.tokens().find_one(doc! { "familyId": family.clone() }).await.map_err(backend)?;
            if left.is_none() {
                self.families().delete_one(doc! { "_id": family }).await.map_err(backend)?;
            }
        }
        Ok(tokens.deleted_count + attempts.deleted_count)
    }
}
