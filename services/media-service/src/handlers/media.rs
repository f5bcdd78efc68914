//! `media.create`, `media.findAll`, `media.findByUser`, `media.findByEntity`, `media.findOne`,
//! `media.update`, `media.remove` (DESIGN §5; access rules §6 in `crate::access`), and the
//! extension `media.content`.

use mediabus_auth::ContentGrant;
use mediabus_contracts::requests::{
    ContentTicket, CreateMedia, FindAll, FindByEntity, FindByUser, ListQuery, MediaRef, UpdateMedia,
};
use mediabus_contracts::{ListFilter, Media, MediaRecord, MediaStatus, Page, SortOrder, Timestamp, subjects};
use mediabus_rpc::Ctx;
use serde_json::value::RawValue;

use super::{check_entity, idempotent, signed_in, type_of};
use crate::AppState;
use crate::access::{Caller, can_read, can_write, visibility};
use crate::content::{check_id, sanitize_name};
use crate::error::{MediaError, Result};

/// `media.create`: registers media at an external URL (`http(s)://` or a path starting with `/`).
/// Signed-in callers only; 400 on invalid fields; honours `Idempotency-Key`.
pub async fn create(ctx: Ctx<AppState>, input: CreateMedia) -> Result<Media> {
    let owner = signed_in(&ctx, input.user_id.as_deref())?;
    let original_name = sanitize_name(&input.original_name)?;
    let url = input.url.trim().to_owned();
    let url_ok =
        (url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/')) && url.len() <= 2048;
    if !url_ok || url.chars().any(char::is_control) {
        return Err(MediaError::Invalid(
            "url must be an http(s) URL or an absolute path, at most 2048 characters".into(),
        ));
    }
    let mime_type = input.mime_type.trim().to_owned();
    if mime_type.is_empty() || mime_type.len() > 255 || !mime_type.contains('/') {
        return Err(MediaError::Invalid("mimeType must look like type/subtype".into()));
    }
    if input.status == Some(MediaStatus::Deleted) {
        return Err(MediaError::Invalid("status DELETED is set by media.remove".into()));
    }
    check_entity(input.entity_id.as_deref(), input.entity_type.as_deref())?;
    ctx.state.rules.check_metadata(input.metadata.as_ref())?;
    let state = ctx.state.clone();
    let headers = ctx.forwarded_headers();
    let owner_id = owner.user_id.clone();
    idempotent(&ctx, subjects::MEDIA_CREATE, &owner_id, |id| async move {
        let now = Timestamp::now();
        let media = Media {
            id,
            media_type: type_of(&mime_type, input.media_type),
            original_name,
            mime_type,
            size: input.size,
            url,
            user_id: owner.user_id.clone(),
            entity_id: input.entity_id,
            entity_type: input.entity_type,
            metadata: input.metadata.filter(|m| !m.is_null()),
            is_public: input.is_public.unwrap_or(false),
            status: input.status.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            checksum: None,
            details: None,
            variants: Vec::new(),
            failure_reason: None,
        };
        state.store.insert(&MediaRecord { media: media.clone(), storage_key: None }).await?;
        state.events.emit(subjects::MEDIA_CREATED, &media, headers).await;
        Ok(media)
    })
    .await
}

/// `media.findOne`: the Media document; 404 when missing, deleted, or private to someone else.
/// Replies with the JSON the store kept, so the hot read decodes and encodes no document.
pub async fn find_one(ctx: Ctx<AppState>, input: MediaRef) -> Result<Box<RawValue>> {
    let who = Caller::from_ctx(&ctx, &ctx.state.verifier)?.acting_for(input.user_id.as_deref());
    let doc = ctx.state.store.get_json(&input.id).await?.ok_or(MediaError::NotFound)?;
    if !can_read(who.as_ref(), &doc) {
        return Err(MediaError::NotFound);
    }
    Ok(doc.json)
}

/// `media.content` (extension): a signed URL to the media's bytes, valid for
/// `content.token_ttl_secs`, for a media the caller may read (the rules of `media.findOne`). The
/// HTTP bridge verifies the token and streams the bytes straight from the file store.
///
/// Errors: 404 as `media.findOne`, and for media registered by URL (`media.create`), which have
/// no stored bytes.
pub async fn content(ctx: Ctx<AppState>, input: MediaRef) -> Result<ContentTicket> {
    let record = readable(&ctx, &input).await?;
    let media = record.media;
    let (Some(key), Some(checksum)) = (record.storage_key, media.checksum) else {
        return Err(MediaError::NotFound);
    };
    let grant = ContentGrant {
        key,
        size: media.size,
        mime: media.mime_type,
        name: media.original_name,
        sha256: checksum.trim_start_matches("sha256:").to_owned(),
        modified: u64::try_from(media.created_at.unix_millis() / 1000).unwrap_or_default(),
        public: media.is_public,
        exp: 0,
        iat_ms: 0,
        sub: media.id,
    };
    let state = &ctx.state;
    let (token, exp) = state.content_signer.sign(grant.clone(), state.content_ttl)?;
    let base = state.settings.public_base_url.trim_end_matches('/');
    Ok(ContentTicket {
        url: format!("{base}/api/media/{}/content?token={token}", grant.sub),
        token,
        expires_at: Timestamp::from_unix_millis(i64::try_from(exp).unwrap_or(i64::MAX / 1000) * 1000),
    })
}

/// The record of `input.id` if the caller (or the user an admin/service acts for) may read it;
/// 404 otherwise.
async fn readable(ctx: &Ctx<AppState>, input: &MediaRef) -> Result<MediaRecord> {
    let who = Caller::from_ctx(ctx, &ctx.state.verifier)?.acting_for(input.user_id.as_deref());
    let record = ctx.state.store.get(&input.id).await?.ok_or(MediaError::NotFound)?;
    if !can_read(who.as_ref(), &record.media) {
        return Err(MediaError::NotFound);
    }
    Ok(record)
}

/// `media.findAll`: everything the caller may see, filtered.
pub async fn find_all(ctx: Ctx<AppState>, input: FindAll) -> Result<Page> {
    list(&ctx, input.query, input.user_id.as_deref(), |_| Ok(())).await
}

/// `media.findByUser`: media owned by `userId` that the caller may see.
pub async fn find_by_user(ctx: Ctx<AppState>, input: FindByUser) -> Result<Page> {
    check_id("userId", &input.user_id)?;
    let user = input.user_id.clone();
    list(&ctx, input.query, Some(&input.user_id), |f| {
        f.user_id = Some(user);
        Ok(())
    })
    .await
}

/// `media.findByEntity`: media linked to `entityId` (and `entityType`, if given).
pub async fn find_by_entity(ctx: Ctx<AppState>, input: FindByEntity) -> Result<Page> {
    check_entity(Some(&input.entity_id), input.entity_type.as_deref())?;
    let (entity_id, entity_type) = (input.entity_id, input.entity_type);
    list(&ctx, input.query, input.user_id.as_deref(), |f| {
        f.entity_id = Some(entity_id);
        f.entity_type = entity_type;
        Ok(())
    })
    .await
}

/// Runs a listing as the caller (or the user an admin/service acts for).
async fn list(
    ctx: &Ctx<AppState>,
    query: ListQuery,
    acting_for: Option<&str>,
    scope: impl FnOnce(&mut ListFilter) -> Result<()>,
) -> Result<Page> {
    let who = Caller::from_ctx(ctx, &ctx.state.verifier)?.acting_for(acting_for);
    let mut filter = ListFilter::new(visibility(who.as_ref()));
    filter.limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&filter.limit) {
        return Err(MediaError::Invalid("limit must be 1 to 100".into()));
    }
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(MediaError::Invalid("q must be at most 200 characters".into()));
    }
    filter.sort = match query.sort.as_deref() {
        None | Some("createdAt:desc") | Some("-createdAt") => SortOrder::NewestFirst,
        Some("createdAt:asc") | Some("createdAt") => SortOrder::OldestFirst,
        Some(other) => {
            return Err(MediaError::Invalid(format!("unknown sort {other:?}; use createdAt:desc or createdAt:asc")));
        }
    };
    if query.status == Some(MediaStatus::Deleted) && !who.as_ref().is_some_and(|w| w.is_admin()) {
        // Deleted media are invisible to everyone but admins.
        return Ok(Page { items: Vec::new(), total: 0, limit: filter.limit, next_cursor: None });
    }
    // `cursor=` (empty) is the first page, as is no cursor.
    filter.cursor = query.cursor.filter(|c| !c.is_empty());
    filter.media_type = query.media_type;
    filter.status = query.status;
    filter.is_public = query.is_public;
    filter.q = query.q.filter(|q| !q.is_empty());
    scope(&mut filter)?;
    Ok(ctx.state.store.list(&filter).await?)
}

/// How many times `media.update` / `media.remove` read and try their conditional write before
/// answering 409: each retry means another write to the same media landed in between, so more
/// than a few means a hot document, and the caller should retry later.
const WRITE_ATTEMPTS: usize = 5;

/// `media.update`: owner or admin; fields absent stay, `null` clears. The write is conditional on
/// the version read (`MediaStore::replace_if_unchanged`), retried on a concurrent change: a
/// racing `media.remove` wins (then 404) and concurrent updates of different fields all survive.
/// 409 `CONFLICT` if the media kept changing for [`WRITE_ATTEMPTS`] tries.
pub async fn update(ctx: Ctx<AppState>, input: UpdateMedia) -> Result<Media> {
    let who = signed_in(&ctx, input.user_id.as_deref())?;
    // Validated once, before any read.
    let original_name = input.original_name.as_deref().map(sanitize_name).transpose()?;
    if let Some(metadata) = &input.metadata {
        ctx.state.rules.check_metadata(metadata.as_ref())?;
    }
    if let Some(entity_id) = &input.entity_id {
        check_entity(entity_id.as_deref(), None)?;
    }
    if let Some(entity_type) = &input.entity_type {
        check_entity(None, entity_type.as_deref())?;
    }
    let record = write_conditionally(&ctx, &input.id, &who, |media| {
        if let Some(name) = &original_name {
            media.original_name = name.clone();
        }
        if let Some(metadata) = &input.metadata {
            media.metadata = metadata.clone().filter(|m| !m.is_null());
        }
        if let Some(is_public) = input.is_public {
            media.is_public = is_public;
        }
        if let Some(entity_id) = &input.entity_id {
            media.entity_id = entity_id.clone();
        }
        if let Some(entity_type) = &input.entity_type {
            media.entity_type = entity_type.clone();
        }
    })
    .await?;
    ctx.state.events.emit(subjects::MEDIA_UPDATED, &record.media, ctx.forwarded_headers()).await;
    Ok(record.media)
}

/// `media.remove`: soft delete (status `DELETED`); owner or admin. The bytes stay for recovery.
/// Conditional as `media.update`, so an update racing it can never write the old status back.
pub async fn remove(ctx: Ctx<AppState>, input: MediaRef) -> Result<Media> {
    let who = signed_in(&ctx, input.user_id.as_deref())?;
    let record = write_conditionally(&ctx, &input.id, &who, |media| media.status = MediaStatus::Deleted).await?;
    ctx.state.events.emit(subjects::MEDIA_REMOVED, &record.media, ctx.forwarded_headers()).await;
    Ok(record.media)
}

/// Reads media `id` as [`writable`], applies `change`, and writes it if no other write landed
/// since the read; otherwise reads again, up to [`WRITE_ATTEMPTS`] times. The record as written.
async fn write_conditionally(
    ctx: &Ctx<AppState>,
    id: &str,
    who: &mediabus_auth::Identity,
    change: impl Fn(&mut Media),
) -> Result<MediaRecord> {
    for _ in 0..WRITE_ATTEMPTS {
        let read = writable(ctx, id, who).await?;
        let mut record = read.clone();
        change(&mut record.media);
        record.media.updated_at = mediabus_store::next_updated_at(read.media.updated_at);
        match ctx.state.store.replace_if_unchanged(&read, &record).await {
            Ok(true) => return Ok(record),
            Ok(false) => continue,
            // Removed for good between the read and the write.
            Err(mediabus_store::StoreError::NotFound) => return Err(MediaError::NotFound),
            Err(e) => return Err(e.into()),
        }
    }
    Err(MediaError::Store(mediabus_store::StoreError::Conflict(format!(
        "media {id} changed concurrently {WRITE_ATTEMPTS} times; retry"
    ))))
}

/// The record `who` wants to change: 404 if they cannot see it, 403 if they see but don't own it.
async fn writable(ctx: &Ctx<AppState>, id: &str, who: &mediabus_auth::Identity) -> Result<MediaRecord> {
    let record = ctx.state.store.get(id).await?.ok_or(MediaError::NotFound)?;
    if !can_read(Some(who), &record.media) {
        return Err(MediaError::NotFound);
    }
    if !can_write(Some(who), &record.media) {
        return Err(MediaError::Forbidden("only the owner or an admin may change this media"));
    }
    Ok(record)
}
