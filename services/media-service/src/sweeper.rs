//! The lifecycle sweeper (DESIGN §14): retention purges and orphan removal, one worker at a time.
//!
//! Every `media.lifecycle_sweep_secs` each worker tries to take the store lease [`LEASE`]
//! ([`mediabus_store::LifecycleStore::try_lease`], renewed between batches, released at the end); the one that
//! gets it sweeps, the others skip that round. A worker that dies mid-sweep leaves the lease to
//! expire ([`LEASE_TTL`]). Work is claimed per media in the store as well ([`purge`]), so a purge
//! racing with `media.purge` or a second sweeper deletes each media's bytes once.
//!
//! One sweep:
//! 1. **Retention:** media removed (`DELETED`) more than `media.retention_days` ago (0: at once)
//!    lose their original's bytes and every object under `variants/<id>/`; the document stays,
//!    `DELETED`, with no storage key and no variants (what marks it purged).
//! 2. **Orphans** older than `media.orphan_grace_secs`: objects no document or upload session
//!    names (bytes whose document was never written, or whose purge was interrupted), objects
//!    under `variants/<id>/` of a media that is purged or does not exist, the file store's temp
//!    files, and multipart uploads (S3 `ListMultipartUploads`) no live upload session owns. The
//!    grace period spares uploads in flight: their bytes exist before their document does. Keys
//!    under [`FOREIGN_PREFIXES`] (the bridge's tus state, the S3 store's running digests) are
//!    left to their owner.
//! 3. **Idempotency keys** claimed more than [`IDEMPOTENCY_KEY_TTL`] (24 h) ago are deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mediabus_contracts::{MediaRecord, MediaStatus, Timestamp};
use mediabus_storage::{BlobStore, StorageError, variant_prefix};
use mediabus_store::MediaStore;

use crate::AppState;
use crate::error::Result;

/// Name of the store lease only the sweeping worker holds.
pub const LEASE: &str = "media-lifecycle-sweeper";
/// How long the lease lasts unless renewed: the longest a dead sweeper blocks the others.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// Key prefixes other components own and sweep themselves: the HTTP bridge's tus state
/// (`tus/<id>/...`, removed by its own sweeper when a tus upload expires) and the S3 store's
/// running digests of uploads in flight (removed by `BlobStore::sweep_temp`).
pub const FOREIGN_PREFIXES: [&str; 2] = ["tus/", mediabus_storage::DIGEST_PREFIX];
/// How long an `Idempotency-Key` keeps answering with its first result: claims older than this
/// are deleted by the sweep (a retry after that creates anew).
pub const IDEMPOTENCY_KEY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Media purged per store batch, and objects per listing page.
const BATCH: u32 = 200;
const PAGE: u32 = 1000;

/// What one [`Sweeper::sweep_once`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Media whose bytes and variants were purged (retention over).
    pub purged: usize,
    /// Objects deleted that no document or upload names (originals and variants).
    pub orphans: usize,
    /// Temp files of the file store removed.
    pub temp_files: usize,
    /// Abandoned multipart uploads aborted.
    pub uploads: usize,
    /// Idempotency claims older than [`IDEMPOTENCY_KEY_TTL`] deleted.
    pub idempotency_keys: u64,
}

/// The sweeper's handles and settings. Cheap to clone.
#[derive(Clone)]
pub struct Sweeper {
    pub store: Arc<dyn MediaStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// `media.retention_days`.
    pub retention_days: u64,
    /// `media.orphan_grace_secs`.
    pub orphan_grace: Duration,
}

impl Sweeper {
    /// The sweeper of a running service.
    pub fn of(state: &AppState) -> Self {
        Self {
            store: Arc::clone(&state.store),
            blobs: Arc::clone(&state.blobs),
            retention_days: state.settings.retention_days,
            orphan_grace: Duration::from_secs(state.settings.orphan_grace_secs),
        }
    }

    /// Every `every`, runs [`Sweeper::sweep_once`]; failures are logged and the next round tries
    /// again.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.sweep_once().await {
                Ok(Some(report)) if report != SweepReport::default() => tracing::info!(?report, "lifecycle sweep"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lifecycle sweep failed"),
            }
        }
    }

    /// One sweep if this caller gets the lease: `Ok(None)` when another sweeper holds it.
    pub async fn sweep_once(&self) -> Result<Option<SweepReport>> {
        // One holder id per sweep, so two services in one process are still two holders.
        let holder = nuid::next().to_string();
        if !self.store.try_lease(LEASE, &holder, Timestamp::now(), LEASE_TTL).await? {
            return Ok(None);
        }
        let result = self.sweep_holding(&holder).await;
        if let Err(e) = self.store.release_lease(LEASE, &holder).await {
            tracing::warn!(error = %e, "could not release the sweeper lease (it expires by itself)");
        }
        result.map(Some)
    }

    async fn sweep_holding(&self, holder: &str) -> Result<SweepReport> {
        let mut report = SweepReport::default();

        // 1. Retention.
        let retention_ms = i64::try_from(self.retention_days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        loop {
            let cutoff = Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_sub(retention_ms));
            let due = self.store.due_for_purge(cutoff, BATCH).await?;
            let mut progressed = false;
            for record in &due {
                if self.purge(&record.media.id).await?.is_some() {
                    report.purged += 1;
                    progressed = true;
                }
            }
            self.renew(holder).await?;
            // A batch purged entirely by someone else (`media.purge`) shows up no more: stop when
            // a batch comes back short or changed nothing.
            if due.len() < BATCH as usize || !progressed {
                break;
            }
        }

        // 2. Orphans.
        let old_before = SystemTime::now().checked_sub(self.orphan_grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut after: Option<String> = None;
        loop {
            let page = self.blobs.list("", after.as_deref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let full = page.len() == PAGE as usize;
            let old: Vec<String> = page
                .into_iter()
                .filter(|o| o.last_modified <= old_before)
                .filter(|o| !FOREIGN_PREFIXES.iter().any(|p| o.key.starts_with(p)))
                .map(|o| o.key)
                .collect();
            report.orphans += self.sweep_page(old).await?;
            self.renew(holder).await?;
            if !full {
                break;
            }
        }
        report.temp_files = self.blobs.sweep_temp(self.orphan_grace).await?;
        let live = self.store.live_backend_uploads(Timestamp::now()).await?;
        report.uploads = self.blobs.sweep_incomplete_uploads(self.orphan_grace, PAGE, &live).await?;

        // 3. Expired idempotency keys.
        let ttl_ms = IDEMPOTENCY_KEY_TTL.as_millis() as i64;
        let cutoff = Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_sub(ttl_ms));
        report.idempotency_keys = self.store.expire_idempotency(cutoff).await?;
        Ok(report)
    }

    /// Keeps the lease for another [`LEASE_TTL`]; fails if another sweeper took it over (this one
    /// was too slow), so two never sweep at once for long.
    async fn renew(&self, holder: &str) -> Result<()> {
        if self.store.try_lease(LEASE, holder, Timestamp::now(), LEASE_TTL).await? {
            Ok(())
        } else {
            Err(StorageError::Backend("the sweeper lease was taken over".into()).into())
        }
    }

    /// Deletes the keys of one listing page (already past the grace period) that are orphans.
    async fn sweep_page(&self, keys: Vec<String>) -> Result<usize> {
        let (variants, originals): (Vec<String>, Vec<String>) =
            keys.into_iter().partition(|k| k.starts_with("variants/"));
        let mut deleted = 0;
        let referenced = self.store.referenced_keys(&originals).await?;
        for key in originals.iter().filter(|k| !referenced.contains(*k)) {
            tracing::info!(%key, "removing orphan bytes");
            self.blobs.delete(key).await?;
            deleted += 1;
        }
        // `variants/<id>/...`: kept while media `<id>` exists and is not purged.
        let mut keep: HashSet<String> = HashSet::new();
        let mut gone: HashSet<String> = HashSet::new();
        for key in &variants {
            let Some(id) = key.split('/').nth(1) else { continue };
            if !keep.contains(id) && !gone.contains(id) {
                let wanted = self.store.get(id).await?.is_some_and(|r| !is_purged(&r));
                if wanted {
                    keep.insert(id.to_owned());
                } else {
                    gone.insert(id.to_owned());
                }
            }
            if gone.contains(id) {
                tracing::info!(%key, "removing orphan variant");
                self.blobs.delete(key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Purges media `id` if it is removed and not purged yet: claims it in the store (so of
    /// racing purges one proceeds), then deletes its original and everything under
    /// `variants/<id>/`. Returns the record as it was before, `None` if there was nothing to
    /// purge. A failure after the claim leaves orphans, which the orphan sweep removes.
    pub async fn purge(&self, id: &str) -> Result<Option<MediaRecord>> {
        let Some(before) = self.store.claim_purge(id, Timestamp::now()).await? else {
            return Ok(None);
        };
        if let Some(key) = &before.storage_key {
            self.blobs.delete(key).await?;
        }
        self.delete_prefix(&variant_prefix(id)).await?;
        tracing::info!(%id, "purged removed media");
        Ok(Some(before))
    }

    /// Deletes every object under `prefix`, a page at a time.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let mut deleted = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.blobs.list(prefix, after.as_deref(), PAGE).await?;
            for object in &page {
                self.blobs.delete(&object.key).await?;
                deleted += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.key.clone()),
                _ => return Ok(deleted),
            }
        }
    }
}

/// [`Sweeper::run`] for a running service.
pub async fn run(state: AppState, every: Duration) {
    Sweeper::of(&state).run(every).await;
}

/// [`Sweeper::purge`] for a running service.
pub async fn purge(state: &AppState, id: &str) -> Result<Option<MediaRecord>> {
    Sweeper::of(state).purge(id).await
}

/// A `DELETED` document without storage key: its bytes are gone (or it never had any).
fn is_purged(record: &MediaRecord) -> bool {
    record.media.status == MediaStatus::Deleted && record.storage_key.is_none()
}
