//! `upload_file` (a whole file in one message) and the chunked upload `upload.create` →
//! `upload.part`* → `upload.complete` | `upload.abort`, for files larger than one NATS message.
//!
//! Parts may reach any worker of the queue group: the session lives in the document store and
//! the parts in the file store's multipart upload, never in one worker's memory. A session that
//! is not completed before it expires is swept: its parts are removed ([`sweep_expired`]).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_auth::Identity;
use mediabus_contracts::requests::{
    PartAccepted, UploadComplete, UploadCreate, UploadCreated, UploadFile, UploadPart as PartRequest, UploadRef,
    headers,
};
use mediabus_contracts::{Media, MediaRecord, Timestamp, new_media_id, subjects};
use mediabus_rpc::{Body, Ctx};
use mediabus_storage::{ByteRange, MAX_PART_NUMBER, PartReceipt, body_from_bytes, new_key};
use mediabus_store::{UploadPart, UploadSession};
use serde_json::{Value, json};

use super::{NewFile, check_entity, idempotent, signed_in, usage};
use crate::AppState;
use crate::access::Caller;
use crate::content::{SNIFF_BYTES, sanitize_name, sniff};
use crate::error::{MediaError, Result};

/// `mediabus_upload_bytes_total{service="media-service"}` (DESIGN §12): file bytes received.
fn received(bytes: usize) {
    metrics::counter!("mediabus_upload_bytes_total", "service" => "media-service").increment(bytes as u64);
}

/// `upload_file`: stores the bytes, then the document. If the document cannot be written, the
/// bytes are removed; if the bytes cannot be written, no document is created.
pub async fn upload_file(ctx: Ctx<AppState>, input: UploadFile) -> Result<Media> {
    let owner = signed_in(&ctx, input.user_id.as_deref())?;
    let original_name = sanitize_name(&input.file.originalname)?;
    check_entity(input.entity_id.as_deref(), input.entity_type.as_deref())?;
    let state = ctx.state.clone();
    state.rules.check_metadata(input.metadata.as_ref())?;
    let bytes = Bytes::from(input.file.buffer.0);
    received(bytes.len());
    let sniffed = sniff(&bytes[..bytes.len().min(SNIFF_BYTES)]);
    if let Some(claimed) = input.file.mimetype.as_deref().filter(|c| *c != sniffed.mime_type) {
        tracing::debug!(claimed, sniffed = %sniffed.mime_type, "client-declared type ignored");
    }
    state.rules.check(&sniffed, bytes.len() as u64)?;
    let headers = ctx.forwarded_headers();
    let owner_id = owner.user_id.clone();
    idempotent(&ctx, subjects::UPLOAD_FILE, &owner_id, |id| async move {
        let adding = usage::Adding { bytes: bytes.len() as u64, count: 1, open_uploads: 0 };
        usage::check(&state, &owner.user_id, adding).await?;
        let key = new_key();
        let stored = state.blobs.put(&key, body_from_bytes(bytes)).await?;
        let file = NewFile {
            id,
            owner: owner.user_id,
            original_name,
            sniffed,
            size: stored.size,
            sha256_hex: stored.sha256_hex,
            entity_id: input.entity_id,
            entity_type: input.entity_type,
            is_public: input.is_public.unwrap_or(false),
            metadata: input.metadata,
        };
        let media = insert_or_remove_bytes(&state, file, key).await?;
        let media = state.jobs.after_upload(media, headers.get("traceparent").map(|v| v.as_str())).await;
        state.events.emit(subjects::MEDIA_CREATED, &media, headers).await;
        Ok(media)
    })
    .await
}

/// Inserts the document of stored bytes; on failure removes the bytes (nothing half-made stays).
async fn insert_or_remove_bytes(state: &AppState, file: NewFile, key: String) -> Result<Media> {
    let media = file.into_media(state);
    if let Err(e) = state.store.insert(&MediaRecord { media: media.clone(), storage_key: Some(key.clone()) }).await {
        remove_bytes(state, &key).await;
        return Err(e.into());
    }
    Ok(media)
}

async fn remove_bytes(state: &AppState, key: &str) {
    if let Err(e) = state.blobs.delete(key).await {
        tracing::error!(%key, error = %e, "could not remove orphaned bytes");
    }
}

/// `upload.create`: opens a multipart upload. Reply: `{uploadId, partSize}`.
pub async fn create(ctx: Ctx<AppState>, input: UploadCreate) -> Result<UploadCreated> {
    let owner = signed_in(&ctx, input.user_id.as_deref())?;
    let state = &ctx.state;
    let original_name = sanitize_name(&input.original_name)?;
    check_entity(input.entity_id.as_deref(), input.entity_type.as_deref())?;
    state.rules.check_metadata(input.metadata.as_ref())?;
    match input.size {
        Some(0) => return Err(MediaError::EmptyFile),
        Some(size) if size > state.rules.max_any() => {
            return Err(MediaError::TooLarge { limit: state.rules.max_any() });
        }
        _ => {}
    }
    // Quotas before any byte: the declared size (if any), the media to come, the open upload.
    let adding = usage::Adding { bytes: input.size.unwrap_or(0), count: 1, open_uploads: 1 };
    usage::check(state, &owner.user_id, adding).await?;
    let part_size = state.settings.part_size_bytes.max(state.blobs.min_part_size());
    let storage_key = new_key();
    let backend_upload_id = state.blobs.create_multipart(&storage_key).await?;
    let now = Timestamp::now();
    let session = UploadSession {
        upload_id: new_media_id(),
        user_id: owner.user_id,
        storage_key,
        backend_upload_id,
        original_name,
        declared_size: input.size,
        entity_id: input.entity_id,
        entity_type: input.entity_type,
        is_public: input.is_public.unwrap_or(false),
        metadata: input.metadata,
        part_size,
        created_at: now,
        expires_at: ttl_from_now(state),
    };
    if let Err(e) = state.store.create_upload(&session).await {
        discard(state, &session).await;
        return Err(e.into());
    }
    Ok(UploadCreated { upload_id: session.upload_id, part_size })
}

/// `upload.part`: JSON `{uploadId, partNumber, data(base64)}`, or the raw bytes as the body with
/// NATS headers `Upload-Id` and `Part-Number`. A part sent again replaces the earlier one.
pub async fn part(ctx: Ctx<AppState>, body: Body) -> Result<PartAccepted> {
    let (upload_id, part_number, data) = match body {
        Body::Json(raw) => {
            let part: PartRequest =
                serde_json::from_str(raw.get()).map_err(|e| MediaError::Invalid(format!("invalid data: {e}")))?;
            (part.upload_id, part.part_number, Bytes::from(part.data.0))
        }
        Body::Binary(bytes) => {
            let upload_id =
                ctx.header(headers::UPLOAD_ID).ok_or_else(|| missing_header(headers::UPLOAD_ID))?.to_owned();
            let part_number = ctx
                .header(headers::PART_NUMBER)
                .and_then(|n| n.trim().parse().ok())
                .ok_or_else(|| missing_header(headers::PART_NUMBER))?;
            (upload_id, part_number, bytes)
        }
    };
    received(data.len());
    let who = caller(&ctx)?;
    let state = &ctx.state;
    let session = session_of(state, &upload_id, &who).await?;
    // Each part keeps the session alive for another TTL (atomic against the sweeper).
    if !state.store.extend_upload(&upload_id, Timestamp::now(), ttl_from_now(state)).await? {
        return Err(MediaError::UploadNotFound);
    }
    if !(1..=MAX_PART_NUMBER).contains(&part_number) {
        return Err(MediaError::Invalid(format!("partNumber must be 1 to {MAX_PART_NUMBER}")));
    }
    let size = data.len() as u64;
    if size == 0 || size > session.part_size {
        return Err(MediaError::Invalid(format!("a part holds 1 to {} bytes", session.part_size)));
    }
    let offset = u64::from(part_number - 1) * session.part_size;
    let end = offset + size;
    if session.declared_size.is_some_and(|declared| end > declared) || end > state.rules.max_any() {
        return Err(MediaError::Invalid("part goes past the end of the file".into()));
    }
    // With its offset, the local store writes the part straight into place (no copy at complete).
    let receipt =
        state.blobs.put_part_at(&session.storage_key, &session.backend_upload_id, part_number, offset, data).await?;
    let part = UploadPart { part_number, size: receipt.size, etag: receipt.etag };
    state.store.record_part(&upload_id, &part).await?;
    Ok(PartAccepted { part_number, size: part.size })
}

fn missing_header(name: &str) -> MediaError {
    MediaError::Invalid(format!("a binary upload.part needs the {name} header"))
}

/// How long `upload.complete` may run (instead of the service's `request_timeout`): enough to
/// assemble and hash the largest accepted file (4 GiB) on a slow store.
pub const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `upload.complete`: checks that parts 1..n are all there (every part but the last full-size,
/// the total equal to the declared size), assembles the file, types it by its bytes and creates
/// the document; link fields given here replace those of `upload.create`. An incomplete or
/// refused upload is discarded whole (no document, no parts).
pub async fn complete(ctx: Ctx<AppState>, input: UploadComplete) -> Result<Media> {
    let who = caller(&ctx)?;
    check_entity(input.entity_id.as_deref(), input.entity_type.as_deref())?;
    ctx.state.rules.check_metadata(input.metadata.as_ref())?;
    let state = ctx.state.clone();
    let headers = ctx.forwarded_headers();
    // The session is looked up inside: a retry after success finds it gone, and must still get
    // the first result from its idempotency key rather than a 404.
    let caller_id = who.clone().acting_for(None).map(|me| me.user_id).unwrap_or_default();
    idempotent(&ctx, subjects::UPLOAD_COMPLETE, &caller_id, |id| async move {
        let mut session = session_of(&state, &input.upload_id, &who).await?;
        // Moves the expiry a whole TTL away, atomically against the sweeper: a session being
        // completed is never swept (one the sweeper took first is gone: 404).
        if !state.store.extend_upload(&session.upload_id, Timestamp::now(), ttl_from_now(&state)).await? {
            return Err(MediaError::UploadNotFound);
        }
        session.entity_id = input.entity_id.or(session.entity_id.take());
        session.entity_type = input.entity_type.or(session.entity_type.take());
        session.is_public = input.is_public.unwrap_or(session.is_public);
        session.metadata = input.metadata.or(session.metadata.take());
        // `idempotent` runs this on a task of its own: it ends whole even if the request is
        // dropped (its caller or the subject's timeout gave up).
        let result = match assemble(&state, &session, id).await {
            Ok(media) => Ok(state.jobs.after_upload(media, headers.get("traceparent").map(|v| v.as_str())).await),
            Err(e) => Err(e),
        };
        match &result {
            Ok(media) => {
                if let Err(e) = state.store.delete_upload(&session.upload_id).await {
                    tracing::warn!(upload_id = %session.upload_id, error = %e, "could not delete a finished session");
                }
                state.events.emit(subjects::MEDIA_CREATED, media, headers).await;
            }
            // An outage leaves the session for a retry (or the sweeper); a refusal ends it.
            Err(MediaError::Store(_) | MediaError::Storage(_)) => {}
            Err(_) => discard(&state, &session).await,
        }
        result
    })
    .await
}

async fn assemble(state: &AppState, session: &UploadSession, id: String) -> Result<Media> {
    let parts = state.store.list_parts(&session.upload_id).await?;
    check_parts(&parts, session)?;
    // The real size, before the parts become a stored file (a refusal discards the upload).
    let total = parts.iter().map(|p| p.size).sum();
    usage::check(state, &session.user_id, usage::Adding { bytes: total, count: 1, open_uploads: 0 }).await?;
    let receipts: Vec<PartReceipt> =
        parts.iter().map(|p| PartReceipt { part_number: p.part_number, etag: p.etag.clone(), size: p.size }).collect();
    let stored = state.blobs.complete_multipart(&session.storage_key, &session.backend_upload_id, &receipts).await?;
    let key = session.storage_key.clone();
    let head = match read_head(state, &key).await {
        Ok(head) => head,
        Err(e) => {
            remove_bytes(state, &key).await;
            return Err(e);
        }
    };
    let sniffed = sniff(&head);
    if let Err(e) = state.rules.check(&sniffed, stored.size) {
        remove_bytes(state, &key).await;
        return Err(e);
    }
    let file = NewFile {
        id,
        owner: session.user_id.clone(),
        original_name: session.original_name.clone(),
        sniffed,
        size: stored.size,
        sha256_hex: stored.sha256_hex,
        entity_id: session.entity_id.clone(),
        entity_type: session.entity_type.clone(),
        is_public: session.is_public,
        metadata: session.metadata.clone(),
    };
    insert_or_remove_bytes(state, file, key).await
}

/// Parts must be 1..=n without gaps, all but the last exactly `part_size`, and add up to the
/// declared size (if one was given).
fn check_parts(parts: &[UploadPart], session: &UploadSession) -> Result<()> {
    if parts.is_empty() {
        return Err(MediaError::EmptyFile);
    }
    for (i, part) in parts.iter().enumerate() {
        let expected = i as u32 + 1;
        if part.part_number != expected {
            return Err(MediaError::IncompleteUpload(format!("part {expected} is missing")));
        }
        if i + 1 < parts.len() && part.size != session.part_size {
            return Err(MediaError::IncompleteUpload(format!("part {expected} is not {} bytes", session.part_size)));
        }
    }
    let total: u64 = parts.iter().map(|p| p.size).sum();
    if let Some(declared) = session.declared_size.filter(|d| *d != total) {
        return Err(MediaError::IncompleteUpload(format!("received {total} of {declared} bytes")));
    }
    Ok(())
}

/// The first bytes of a stored object, for sniffing.
async fn read_head(state: &AppState, key: &str) -> Result<Vec<u8>> {
    let range = ByteRange::new(0, SNIFF_BYTES as u64 - 1).expect("valid range");
    let (_, mut stream) = state.blobs.get(key, Some(range)).await?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    while let Some(chunk) = stream.next().await {
        head.extend_from_slice(&chunk.map_err(mediabus_storage::StorageError::from)?);
    }
    Ok(head)
}

/// `upload.abort`: removes the parts and the session. Reply: `{}`.
pub async fn abort(ctx: Ctx<AppState>, input: UploadRef) -> Result<Value> {
    let who = caller(&ctx)?;
    let session = session_of(&ctx.state, &input.upload_id, &who).await?;
    ctx.state.blobs.abort_multipart(&session.storage_key, &session.backend_upload_id).await?;
    ctx.state.store.delete_upload(&session.upload_id).await?;
    Ok(json!({}))
}

/// The signed-in caller of a request about an existing session (401 if anonymous).
fn caller(ctx: &Ctx<AppState>) -> Result<Caller> {
    let caller = Caller::from_ctx(ctx, &ctx.state.verifier)?;
    caller.require()?;
    Ok(caller)
}

/// The live session `upload_id` if `who` may use it; otherwise, or when expired, 404. The caller
/// is judged as the identity it acts as for the session's owner (`Caller::acting_for`, the rule
/// of `userId` in payloads): a service that created the session for a user (`upload.create`
/// with `userId`) may then send its parts and complete or abort it; an admin keeps admin rights;
/// anyone else must be the owner.
async fn session_of(state: &AppState, upload_id: &str, who: &Caller) -> Result<UploadSession> {
    let session = state.store.get_upload(upload_id).await?.ok_or(MediaError::UploadNotFound)?;
    let acting: Option<Identity> = who.clone().acting_for(Some(&session.user_id));
    let allowed = acting.is_some_and(|me| me.is_admin() || me.user_id == session.user_id);
    if session.expires_at <= Timestamp::now() || !allowed {
        return Err(MediaError::UploadNotFound);
    }
    Ok(session)
}

/// Removes a session's parts and the session itself; failures are logged (the sweeper retries).
async fn discard(state: &AppState, session: &UploadSession) {
    if let Err(e) = state.blobs.abort_multipart(&session.storage_key, &session.backend_upload_id).await {
        tracing::warn!(upload_id = %session.upload_id, error = %e, "could not remove parts");
        return;
    }
    if let Err(e) = state.store.delete_upload(&session.upload_id).await {
        tracing::warn!(upload_id = %session.upload_id, error = %e, "could not delete session");
    }
}

/// Every `every`, discards expired sessions (any worker may do it; discarding is idempotent).
pub async fn sweep_expired(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %e, "expired-upload sweep failed");
        }
    }
}

/// One sweep: discards up to 100 expired sessions. Returns how many it discarded. Each is first
/// claimed by deleting its session only if it is still expired (`delete_expired_upload`), so a
/// session whose completion began, or that got a part since the listing, is left alone; then
/// its parts are removed (parts left by a failure here are the orphan sweeper's).
pub async fn sweep_once(state: &AppState) -> Result<usize> {
    let now = Timestamp::now();
    let expired = state.store.expired_uploads(now, 100).await?;
    let mut discarded = 0;
    for session in &expired {
        if !state.store.delete_expired_upload(&session.upload_id, now).await? {
            continue;
        }
        tracing::info!(upload_id = %session.upload_id, "discarding expired upload");
        if let Err(e) = state.blobs.abort_multipart(&session.storage_key, &session.backend_upload_id).await {
            tracing::warn!(upload_id = %session.upload_id, error = %e, "could not remove parts");
        }
        discarded += 1;
    }
    Ok(discarded)
}

/// The expiry of a session that is active now: `upload_ttl_secs` from now.
fn ttl_from_now(state: &AppState) -> Timestamp {
    let ttl_ms = i64::try_from(state.settings.upload_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    Timestamp::from_unix_millis(Timestamp::now().unix_millis().saturating_add(ttl_ms))
}
