//! Handlers, one module per subject family. Each is an async fn `(Ctx<AppState>, Input) -> Result<Output>`.

pub mod lifecycle;
pub mod media;
pub mod upload;
pub mod usage;

use std::future::Future;

use mediabus_auth::Identity;
use mediabus_contracts::{Media, MediaStatus, MediaType, Timestamp, new_media_id};
use mediabus_rpc::Ctx;
use serde_json::Value;

use crate::AppState;
use crate::content::Sniffed;
use crate::error::{MediaError, Result};

/// Header names that make a create retry-safe (DESIGN §3), first found wins.
const IDEMPOTENCY_HEADERS: [&str; 2] = ["Idempotency-Key", "Nats-Msg-Id"];

/// Runs `create(new_id)` at most once per idempotency key, subject and owner: a retry carrying the
/// same `Idempotency-Key` (or `Nats-Msg-Id`) gets the first result instead of a second document.
/// Without such a header, `create` simply runs.
///
/// The work runs in a task of its own, so it ends whole (a document, or nothing and the key
/// released) even when this request is dropped half-way: its caller or the subject's timeout gave
/// up. A retry then gets 409 while it runs, and its result after.
///
/// A claim older than `media.idempotency_claim_ttl_secs` that left no document belongs to a
/// create that died with its worker: the retry takes it over and creates the media.
///
/// Errors: 409 `IDEMPOTENCY_IN_PROGRESS` while the first request with the key is still running;
/// whatever `create` fails with (the key is then released, so a retry can succeed).
async fn idempotent<F, Fut>(ctx: &Ctx<AppState>, subject: &str, owner: &str, create: F) -> Result<Media>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<Media>> + Send + 'static,
{
    let id = new_media_id();
    let Some(key) = IDEMPOTENCY_HEADERS.iter().find_map(|h| ctx.header(h)) else {
        return spawn_whole(create(id)).await;
    };
    if key.is_empty() || key.len() > 256 {
        return Err(MediaError::Invalid("Idempotency-Key must be 1 to 256 bytes".into()));
    }
    let store = ctx.state.store.clone();
    // Unit separators keep (subject, owner, key) unambiguous.
    let scope = format!("{subject}\u{1f}{owner}\u{1f}{key}");
    let work = create(id.clone());
    let claim_ttl = ctx.state.settings.idempotency_claim_ttl_secs;
    let stale_before = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - claim_ttl as i64 * 1000);
    // The claim too runs on the task: a request dropped while claiming must not leave a claim
    // that nothing will ever complete or release.
    spawn_whole(async move {
        if let Some(existing) = store.claim_idempotency(&scope, &id).await? {
            if let Some(record) = store.get(&existing).await? {
                return Ok(record.media);
            }
            if !store.take_over_idempotency(&scope, &existing, &id, stale_before).await? {
                return Err(MediaError::InProgress);
            }
            tracing::warn!(media_id = %existing, "took over an idempotency key whose create died");
        }
        let result = work.await;
        if result.is_err()
            && let Err(e) = store.release_idempotency(&scope, &id).await
        {
            tracing::warn!(error = %e, "could not release an idempotency key");
        }
        result
    })
    .await
}

/// Runs `work` on a task of its own (see [`idempotent`]) and waits for it.
async fn spawn_whole(work: impl Future<Output = Result<Media>> + Send + 'static) -> Result<Media> {
    tokio::spawn(work).await.unwrap_or_else(|e| {
        // A panic in the work: a claim (if any) stays, as after a crash; logged for operators.
        tracing::error!(error = %e, "create task failed");
        Err(MediaError::Store(mediabus_store::StoreError::Backend("create task failed".into())))
    })
}

/// The fields of a new stored-file Media document.
struct NewFile {
    id: String,
    owner: String,
    original_name: String,
    sniffed: Sniffed,
    size: u64,
    sha256_hex: String,
    entity_id: Option<String>,
    entity_type: Option<String>,
    is_public: bool,
    metadata: Option<Value>,
}

impl NewFile {
    /// The document, with its content URL under the configured base.
    fn into_media(self, state: &AppState) -> Media {
        let now = Timestamp::now();
        // Processed media stay PROCESSING until their job ends (DESIGN §9).
        let status = if crate::jobs::needs_processing(self.sniffed.media_type, &self.sniffed.mime_type) {
            MediaStatus::Processing
        } else {
            MediaStatus::Ready
        };
        Media {
            url: format!("{}/api/media/{}/content", state.settings.public_base_url.trim_end_matches('/'), self.id),
            id: self.id,
            media_type: self.sniffed.media_type,
            original_name: self.original_name,
            mime_type: self.sniffed.mime_type,
            size: self.size,
            user_id: self.owner,
            entity_id: self.entity_id,
            entity_type: self.entity_type,
            metadata: self.metadata.filter(|m| !m.is_null()),
            is_public: self.is_public,
            status,
            created_at: now,
            updated_at: now,
            checksum: Some(format!("sha256:{}", self.sha256_hex)),
            details: None,
            variants: Vec::new(),
            failure_reason: None,
        }
    }
}

/// Validates the optional entity link fields.
fn check_entity(entity_id: Option<&str>, entity_type: Option<&str>) -> Result<()> {
    if let Some(id) = entity_id {
        crate::content::check_id("entityId", id)?;
    }
    if let Some(kind) = entity_type {
        crate::content::check_id("entityType", kind)?;
    }
    Ok(())
}

/// The caller, required to be signed in, and the identity they act as (see `access::Caller`).
fn signed_in(ctx: &Ctx<AppState>, acting_for: Option<&str>) -> Result<Identity> {
    let caller = crate::access::Caller::from_ctx(ctx, &ctx.state.verifier)?;
    caller.require()?;
    Ok(caller.acting_for(acting_for).expect("signed in"))
}

/// `MediaType` of a `media.create` without explicit type.
fn type_of(mime_type: &str, explicit: Option<MediaType>) -> MediaType {
    explicit.unwrap_or_else(|| MediaType::from_mime(mime_type))
}
