//! The media lifecycle subjects (DESIGN §14):
//!
//! - `user.deleted {userId}` and `entity.deleted {entityType, entityId}`: integration events
//!   (NestJS `emit`, no reply) that remove every media of a user or linked to an entity. Events
//!   carry no caller: only NATS permissions decide who may publish them (`nats/permissions.conf`
//!   allows `backend`). Removal runs in store batches ([`mediabus_store::LifecycleStore::remove_batch`]), never
//!   loading the whole set; each media changed emits one `media.removed`; receiving an event
//!   twice, even on two workers at once, changes and emits nothing more. A cascade runs under
//!   [`CASCADE_TIMEOUT`], not the service's `request_timeout`: core NATS never redelivers an
//!   event, so one cut off early would leave media behind. A graceful shutdown (SIGTERM) waits for
//!   cascades in flight, as for any handler; one that still ends unfinished (its timeout, a store
//!   error, the runtime dropping it at exit) logs an error naming the scope whose media remain
//!   (`Progress`), and a worker killed outright leaves its start and progress lines: publishing
//!   the event again finishes it.
//! - `media.purge {id}` (admin): removes the media if needed and purges its bytes and variants now.
//! - `media.stats {id}` (owner or admin) → `{id, views, downloads}`.
//! - `media.analytics {counts}` (the HTTP bridge's flushes): adds view/download counts.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use mediabus_contracts::lifecycle::{AnalyticsBatch, EntityDeleted, MAX_ANALYTICS_BATCH, MediaStats, UserDeleted};
use mediabus_contracts::requests::MediaRef;
use mediabus_contracts::{Media, MediaStatus, Timestamp, subjects};
use mediabus_rpc::Ctx;
use mediabus_store::RemovalScope;
use serde_json::{Value, json};

use crate::AppState;
use crate::access::{Caller, can_write};
use crate::error::{MediaError, Result};
use crate::sweeper;

/// Media changed per store batch of a cascade.
const CASCADE_BATCH: u32 = 500;

/// Longest one `user.deleted` / `entity.deleted` cascade may run: the router's timeout of both
/// subjects ([`crate::router`]), in place of `service.request_timeout_ms` (30 s by default), which
/// a user with many media outlasts. 1,000 media take about 0.4 s on SQLite and 1.1 s on the
/// MongoDB stand-in (`tests/api/lifecycle.rs`), so an hour covers millions; past it the cascade
/// stops and logs what remains.
pub const CASCADE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often a running cascade logs its progress, so that a worker killed mid-cascade (SIGKILL
/// after the stop grace period) leaves a recent count and the scope in its log.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `user.deleted` (event): removes every media owned by `userId`.
pub async fn user_deleted(ctx: Ctx<AppState>, input: UserDeleted) -> Result<()> {
    crate::content::check_id("userId", &input.user_id)?;
    cascade(&ctx, RemovalScope::User { user_id: input.user_id }).await
}

/// `entity.deleted` (event): removes every media linked to `(entityType, entityId)`.
pub async fn entity_deleted(ctx: Ctx<AppState>, input: EntityDeleted) -> Result<()> {
    crate::content::check_id("entityType", &input.entity_type)?;
    crate::content::check_id("entityId", &input.entity_id)?;
    cascade(&ctx, RemovalScope::Entity { entity_type: input.entity_type, entity_id: input.entity_id }).await
}

/// Removes `scope` batch by batch, emitting `media.removed` for each media this call changed;
/// with `retention_days = 0` their bytes are purged right away too.
async fn cascade(ctx: &Ctx<AppState>, scope: RemovalScope) -> Result<()> {
    let state = &ctx.state;
    let headers = event_headers(ctx);
    let purge_now = state.settings.retention_days == 0;
    let mut progress = Progress::start(scope);
    loop {
        let batch = state.store.remove_batch(&progress.scope, Timestamp::now(), CASCADE_BATCH).await?;
        // Only an empty batch means done: a worker racing on the same event (received twice)
        // may have claimed part of this one.
        let done = batch.is_empty();
        for record in &batch {
            state.events.emit(subjects::MEDIA_REMOVED, &record.media, headers.clone()).await;
        }
        if purge_now {
            for record in &batch {
                if let Err(e) = sweeper::purge(state, &record.media.id).await {
                    // The sweeper retries: the media stays due until its purge is claimed.
                    tracing::warn!(id = %record.media.id, error = %e, "immediate purge failed");
                }
            }
        }
        progress.add(batch.len());
        if done {
            break;
        }
    }
    progress.finish();
    Ok(())
}

/// A cascade's log trail: a line when it starts, one every [`PROGRESS_EVERY`], one when it ends,
/// and, when it is dropped before [`Progress::finish`] (timeout, store error, the runtime dropping
/// its task at exit), an error naming the scope whose remaining media stay. Nothing is loaded to
/// count them: the rest is "every media of the scope not yet `DELETED`", which the same event
/// removes when published again (receiving it twice is safe).
struct Progress {
    scope: RemovalScope,
    removed: usize,
    started: Instant,
    logged: Instant,
    finished: bool,
}

impl Progress {
    fn start(scope: RemovalScope) -> Self {
        tracing::info!(?scope, "cascade removal started");
        let now = Instant::now();
        Self { scope, removed: 0, started: now, logged: now, finished: false }
    }

    /// Counts `n` more media removed by this cascade; logs when the last line is old.
    fn add(&mut self, n: usize) {
        self.removed += n;
        if self.logged.elapsed() >= PROGRESS_EVERY {
            self.logged = Instant::now();
            tracing::info!(scope = ?self.scope, removed = self.removed, "cascade removal in progress");
        }
    }

    fn finish(mut self) {
        self.finished = true;
        let ms = self.started.elapsed().as_millis() as u64;
        tracing::info!(scope = ?self.scope, removed = self.removed, ms, "cascade removal");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.finished {
            let ms = self.started.elapsed().as_millis() as u64;
            tracing::error!(
                scope = ?self.scope,
                removed = self.removed,
                ms,
                "cascade removal cut off: the media of this scope not yet DELETED remain; publish the event \
                 again to remove them (receiving it twice is safe)"
            );
        }
    }
}

/// The headers events carry: `traceparent` only, never the caller's `Authorization` (DESIGN §10).
fn event_headers(ctx: &Ctx<AppState>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(trace) = ctx.header("traceparent") {
        headers.insert("traceparent", trace);
    }
    headers
}

/// `media.purge {id}` (admin): a media not yet removed is removed first (`media.removed`); then
/// its bytes and variants are deleted and the `DELETED` document stays. Idempotent: purging a
/// purged media answers the document again. Errors: 401, 403 for non-admins, 404.
pub async fn purge(ctx: Ctx<AppState>, input: MediaRef) -> Result<Media> {
    let caller = Caller::from_ctx(&ctx, &ctx.state.verifier)?;
    if !caller.require()?.is_admin() {
        return Err(MediaError::Forbidden("only an admin may purge media"));
    }
    let state = &ctx.state;
    let mut record = state.store.get(&input.id).await?.ok_or(MediaError::NotFound)?;
    if record.media.status != MediaStatus::Deleted {
        record.media.status = MediaStatus::Deleted;
        record.media.updated_at = Timestamp::now();
        state.store.update(&record).await?;
        state.events.emit(subjects::MEDIA_REMOVED, &record.media, event_headers(&ctx)).await;
    }
    sweeper::purge(state, &input.id).await?;
    Ok(state.store.get(&input.id).await?.ok_or(MediaError::NotFound)?.media)
}

/// `media.stats {id}` → `{id, views, downloads}`: the owner, or an admin (also of removed media).
/// Others get 404, as from `media.findOne`. Errors: 401 without a token.
pub async fn stats(ctx: Ctx<AppState>, input: MediaRef) -> Result<MediaStats> {
    let caller = Caller::from_ctx(&ctx, &ctx.state.verifier)?;
    let who = caller.require()?;
    let record = ctx.state.store.get(&input.id).await?.ok_or(MediaError::NotFound)?;
    let visible =
        who.is_admin() || (record.media.status != MediaStatus::Deleted && can_write(Some(who), &record.media));
    if !visible {
        return Err(MediaError::NotFound);
    }
    Ok(ctx.state.store.stats(&input.id).await?)
}

/// `media.analytics {counts:[{id, views, downloads}]}` → `{}`: adds the counts of one flush of
/// the HTTP bridge (NATS permissions let only the bridge publish it). Errors: 400 for more than
/// [`MAX_ANALYTICS_BATCH`] entries or an empty or overlong id.
pub async fn analytics(ctx: Ctx<AppState>, input: AnalyticsBatch) -> Result<Value> {
    if input.counts.len() > MAX_ANALYTICS_BATCH {
        return Err(MediaError::Invalid(format!("at most {MAX_ANALYTICS_BATCH} counts per batch")));
    }
    if input.counts.iter().any(|c| c.id.is_empty() || c.id.len() > 64) {
        return Err(MediaError::Invalid("each count needs a media id of 1 to 64 characters".into()));
    }
    ctx.state.store.add_counts(&input.counts).await?;
    Ok(json!({}))
}
