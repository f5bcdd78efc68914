//! The media lifecycle (DESIGN §14) behind [`LifecycleStore`]: cascading removals in batches,
//! retention purges, what the orphan sweeper asks, a lease so one sweeper runs at a time, and
//! view/download counters. Both backends implement it next to [`crate::MediaStore`] (its
//! supertrait), on the same database, so an `Arc<dyn MediaStore>` reaches it too.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use mediabus_contracts::MediaRecord;
use mediabus_contracts::Timestamp;
use mediabus_contracts::lifecycle::MediaStats;

use crate::StoreError;

/// Which media a cascade removes ([`LifecycleStore::remove_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemovalScope {
    /// Every media owned by the user (`user.deleted`).
    User { user_id: String },
    /// Every media linked to the entity (`entity.deleted`): both fields must match.
    Entity { entity_type: String, entity_id: String },
}

/// Largest batch of the lifecycle methods that take a `limit`.
pub const MAX_LIFECYCLE_BATCH: u32 = 1000;

/// Lifecycle operations. Object-safe, like [`crate::MediaStore`].
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Marks up to `limit` (clamped to 1..=[`MAX_LIFECYCLE_BATCH`]) media of `scope` that are not
    /// `DELETED` as `DELETED`, with `updatedAt = now` (the removal time retention counts from),
    /// and returns them as changed. Each media is changed by exactly one call, however many race
    /// (two workers handling the same event twice): callers emit `media.removed` for what they
    /// got. Call again until it returns nothing (a short batch may only mean that a racing call
    /// took part of it): nothing is loaded whole. It returns nothing only when no media of `scope`
    /// is left to remove, even while racing calls (of this or an overlapping scope) take media.
    async fn remove_batch(
        &self,
        scope: &RemovalScope,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MediaRecord>, StoreError>;

    /// Up to `limit` (clamped) `DELETED` media removed at or before `removed_before` (their
    /// `updatedAt`) whose bytes are not purged yet (a storage key is set), removed longest ago
    /// first.
    async fn due_for_purge(&self, removed_before: Timestamp, limit: u32) -> Result<Vec<MediaRecord>, StoreError>;

    /// Claims the purge of media `id`: if it is `DELETED` and not purged, clears its storage key
    /// and variants (the document stays, `DELETED`, as admins see it), sets `updatedAt = now`
    /// and returns the record as it was before, whose key and variants the caller then deletes.
    /// `None` when there is nothing to purge (absent, not `DELETED`, already purged, or claimed
    /// by a racing call): no two callers ever get the same media.
    async fn claim_purge(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError>;

    /// The members of `keys` that some media document (any status) or upload session names as
    /// its storage key: the blob-store objects that are not orphans.
    async fn referenced_keys(&self, keys: &[String]) -> Result<HashSet<String>, StoreError>;

    /// The backend upload ids (`UploadSession::backend_upload_id`) of every session not expired
    /// at `now`: multipart uploads still in flight, which the orphan sweeper leaves alone.
    async fn live_backend_uploads(&self, now: Timestamp) -> Result<HashSet<String>, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `now + ttl`: `true` if the lease was
    /// free, expired, or already `holder`'s; `false` while another holder's lease runs. Atomic
    /// against every process sharing the store.
    async fn try_lease(&self, name: &str, holder: &str, now: Timestamp, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives lease `name` up if `holder` holds it (else nothing changes).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Adds each entry's `views` and `downloads` to the counters of its media id (created at zero
    /// when missing). Ids need not be media that exist (counts of a removed media are kept).
    async fn add_counts(&self, counts: &[MediaStats]) -> Result<(), StoreError>;

    /// The counters of media `id` (zeros if nothing was counted).
    async fn stats(&self, id: &str) -> Result<MediaStats, StoreError>;

    /// What `user_id` stores, for the quotas (DESIGN §14): `(bytes, count)` of its media whose
    /// status is not `DELETED` (originals' sizes), and its upload sessions not expired at `now`.
    async fn usage(&self, user_id: &str, now: Timestamp) -> Result<StoredUsage, StoreError>;
}

/// Clamp for the lifecycle batches.
pub(crate) fn clamp_batch(limit: u32) -> u32 {
    limit.clamp(1, MAX_LIFECYCLE_BATCH)
}

/// `now + ttl` in the store's millisecond time.
pub(crate) fn lease_end(now: Timestamp, ttl: Duration) -> Timestamp {
    crate::users::window_end(now, ttl)
}

/// A user's stored media and open uploads, as counted by [`LifecycleStore::usage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredUsage {
    /// Sum of the sizes of the user's media that are not `DELETED`, in bytes.
    pub bytes: u64,
    /// Number of those media.
    pub count: u64,
    /// Upload sessions of the user not yet expired.
    pub open_uploads: u64,
}
