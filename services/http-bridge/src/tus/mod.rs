//! `/api/uploads`: a tus 1.0.0 endpoint (https://tus.io/protocols/resumable-upload, DESIGN §11)
//! over the media service's chunked-upload subjects.
//!
//! - Core protocol: `OPTIONS` (capabilities), `HEAD /api/uploads/{id}` (offset), `PATCH` (bytes at
//!   `Upload-Offset`, `Content-Type: application/offset+octet-stream`). `Tus-Resumable: 1.0.0` on
//!   every response; a request without it (or with another version) gets 412 and `Tus-Version`.
//! - Extensions: creation (`POST` with `Upload-Length`, `Upload-Metadata` → 201 and `Location`),
//!   creation-with-upload (the same POST with a body), termination (`DELETE` → 204), expiration
//!   (`Upload-Expires`; afterwards 410 once, then 404), checksum (`Upload-Checksum: sha1|sha256
//!   <base64>` of one request's body; 460 on a mismatch, with nothing of that request kept).
//! - `Upload-Metadata` keys: `filename`, `entityType`, `entityId`, `isPublic`, `metadata` (JSON);
//!   see [`protocol::parse_metadata`].
//!
//! The upload is `upload.create` at creation, `upload.part`s of the media service's part size as
//! the bytes arrive, `upload.complete` when the offset reaches `Upload-Length` (that response,
//! and every later HEAD, carries `Media-Id` and `Media-Url`), `upload.abort` on termination or
//! expiry. The per-upload state lives in the shared file store ([`state`]), so any bridge and any
//! media worker can continue any upload.
//!
//! Same rules as `POST /api/media/upload`: a Bearer token, verified by the bridge before any body
//! is read (401); only the owner sees or changes an upload (404 for everyone else);
//! `Upload-Length` over `upload.max_body_bytes` is 413; the media service checks the declared size
//! at creation and sniffs the type and applies the per-type caps at completion; a body that
//! pauses for `http.body_idle_timeout_ms` ends the request (408), keeping what arrived.
//!
//! Not serialized across bridges: two PATCHes of one upload racing from the same offset both
//! write their parts; the one that commits second gets 409 (the state is re-read before commit).

pub mod protocol;
pub mod state;
pub mod sweep;
mod writer;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mediabus_auth::Identity;
use mediabus_contracts::requests::UploadCreated;
use mediabus_contracts::{new_media_id, subjects};
use mediabus_rpc::RpcError;
use mediabus_storage::body_from_bytes;
use serde_json::{Value, json};

use self::protocol::{Checksum, Hasher, VERSION};
use self::state::TusInfo;
use self::writer::PartWriter;
use crate::config::TusSettings;
use crate::{AppState, nats_headers};

/// What the tus routes need beyond the bridge's state (tokens are verified by `AppState`'s
/// verifier of `[auth]`).
#[derive(Debug, Clone)]
pub struct Tus {
    expiry_ms: u64,
    sweep_every: Duration,
}

impl Tus {
    /// From `[tus]`.
    pub fn new(settings: &TusSettings) -> Self {
        Self {
            expiry_ms: settings.expiry_secs.saturating_mul(1000),
            sweep_every: Duration::from_secs(settings.sweep_interval_secs),
        }
    }
}

/// Starts the periodic sweep of expired tus state ([`sweep`]) on the current runtime, unless
/// `tus.sweep_interval_secs` is 0.
pub fn spawn_sweeper(state: &AppState) {
    if state.tus.sweep_every.is_zero() {
        return;
    }
    let expiry = Duration::from_millis(state.tus.expiry_ms);
    tokio::spawn(sweep::run(state.blobs.clone(), state.tus.sweep_every, expiry));
}

/// Base path of the endpoint; an upload's URL is `{BASE}/{id}`.
pub const BASE: &str = "/api/uploads";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: &str = "upload-offset";
const UPLOAD_LENGTH: &str = "upload-length";
const UPLOAD_METADATA: &str = "upload-metadata";
const UPLOAD_EXPIRES: &str = "upload-expires";
const UPLOAD_CHECKSUM: &str = "upload-checksum";
/// The media id of a finished upload, and its document's path.
const MEDIA_ID: &str = "media-id";
const MEDIA_URL: &str = "media-url";

/// `OPTIONS /api/uploads` (and on an upload): 204 with the server's capabilities. No auth.
pub async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(protocol::EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(state.upload.max_body_bytes));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static(protocol::CHECKSUM_ALGORITHMS));
    tus_response(Ok(response))
}

/// `POST /api/uploads`: creation, and creation-with-upload when a body comes along.
pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    tus_response(create_upload(&state, &headers, body).await)
}

/// `HEAD /api/uploads/{id}`: the offset (and, once finished, the media).
pub async fn head(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    tus_response(head_upload(&state, &id, &headers).await)
}

/// `PATCH /api/uploads/{id}`: the bytes at `Upload-Offset`.
pub async fn patch(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    tus_response(patch_upload(&state, &id, &headers, body).await)
}

/// `DELETE /api/uploads/{id}`: termination.
pub async fn terminate(State(state): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    tus_response(terminate_upload(&state, &id, &headers).await)
}

/// Adds `Tus-Resumable` to every response; errors become the contract's error object (412 also
/// says which version is spoken).
fn tus_response(result: Result<Response, RpcError>) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(err) => {
            let version_mismatch = err.status == 412;
            let mut response = crate::error_response(err);
            if version_mismatch {
                response.headers_mut().insert("tus-version", HeaderValue::from_static(VERSION));
            }
            response
        }
    };
    response.headers_mut().insert(TUS_RESUMABLE, HeaderValue::from_static(VERSION));
    response
}

async fn create_upload(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, RpcError> {
    check_version(headers)?;
    let who = identify(state, headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(RpcError::invalid_payload("Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length = protocol::number(headers, UPLOAD_LENGTH)?
        .ok_or_else(|| RpcError::invalid_payload("a new upload needs Upload-Length"))?;
    if length > state.upload.max_body_bytes {
        return Err(too_large(state.upload.max_body_bytes));
    }
    let metadata = protocol::text(headers, UPLOAD_METADATA).unwrap_or_default().to_owned();
    if metadata.len() > protocol::METADATA_MAX_BYTES {
        return Err(RpcError::invalid_payload("Upload-Metadata is too long"));
    }
    let fields = protocol::parse_metadata(&metadata)?;
    let with_body = has_body(headers);
    let checksum = if with_body { body_checks(headers)? } else { None };
    if with_body && protocol::number(headers, header::CONTENT_LENGTH.as_str())?.is_some_and(|n| n > length) {
        return Err(too_large(length));
    }

    let nats = nats_headers(headers);
    let mut data = fields.link;
    data.insert("originalName".into(), fields.original_name.into());
    data.insert("size".into(), length.into());
    if let Some(claimed) = fields.claimed_type {
        data.insert("mimeType".into(), claimed.into());
    }
    let created: UploadCreated = state.rpc.call_with_headers(subjects::UPLOAD_CREATE, &data, nats.clone()).await?;
    let now = protocol::now_ms();
    let info = TusInfo {
        id: new_media_id(),
        user_id: who.user_id,
        upload_id: created.upload_id,
        part_size: created.part_size.max(1),
        length,
        offset: 0,
        metadata,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(state.tus.expiry_ms),
        media_id: None,
    };
    if let Err(e) = state::save(state.blobs.as_ref(), &info).await {
        abort_media_upload(state, &info, &nats).await;
        return Err(e);
    }
    let location = HeaderValue::try_from(format!("{BASE}/{}", info.id)).expect("ids are ASCII");
    if !with_body {
        let mut response = StatusCode::CREATED.into_response();
        response.headers_mut().insert(header::LOCATION, location);
        add_state_headers(response.headers_mut(), &info);
        return Ok(response);
    }
    match receive(state, info, nats, body, checksum).await {
        Ok(info) => {
            let mut response = StatusCode::CREATED.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            add_state_headers(response.headers_mut(), &info);
            Ok(response)
        }
        // The upload exists even when its first bytes were refused: say where it is.
        Err(err) => {
            let mut response = tus_response(Err(err));
            response.headers_mut().insert(header::LOCATION, location);
            Ok(response)
        }
    }
}

async fn head_upload(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, RpcError> {
    check_version(headers)?;
    let who = identify(state, headers)?;
    let nats = nats_headers(headers);
    let mut info = owned(state, id, &who, &nats).await?;
    if info.offset == info.length && info.media_id.is_none() {
        // Every byte is in but `upload.complete` failed for want of a service: try again (it is
        // idempotent, so a completion that did happen returns the same media).
        info = complete(state, info, &nats).await?;
    }
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    add_state_headers(out, &info);
    out.insert(UPLOAD_LENGTH, HeaderValue::from(info.length));
    if let Ok(metadata) = HeaderValue::try_from(info.metadata.as_str())
        && !info.metadata.is_empty()
    {
        out.insert(UPLOAD_METADATA, metadata);
    }
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn patch_upload(state: &AppState, id: &str, headers: &HeaderMap, body: Body) -> Result<Response, RpcError> {
    check_version(headers)?;
    let who = identify(state, headers)?;
    let checksum = body_checks(headers)?;
    let offset = protocol::number(headers, UPLOAD_OFFSET)?
        .ok_or_else(|| RpcError::invalid_payload("a PATCH needs Upload-Offset"))?;
    let nats = nats_headers(headers);
    let info = owned(state, id, &who, &nats).await?;
    if offset != info.offset {
        return Err(RpcError::new(
            409,
            "OFFSET_CONFLICT",
            format!("Upload-Offset is {offset} but the upload is at {}", info.offset),
        ));
    }
    let declared = protocol::number(headers, header::CONTENT_LENGTH.as_str())?;
    if declared.is_some_and(|n| n > info.length - info.offset) {
        return Err(too_large(info.length - info.offset));
    }
    let info = if info.media_id.is_some() { info } else { receive(state, info, nats, body, checksum).await? };
    let mut response = StatusCode::NO_CONTENT.into_response();
    add_state_headers(response.headers_mut(), &info);
    Ok(response)
}

async fn terminate_upload(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, RpcError> {
    check_version(headers)?;
    let who = identify(state, headers)?;
    let nats = nats_headers(headers);
    let info = owned(state, id, &who, &nats).await?;
    if info.media_id.is_none() {
        let data = json!({ "uploadId": info.upload_id });
        match state.rpc.call_with_headers::<_, Value>(subjects::UPLOAD_ABORT, &data, nats).await {
            // Already gone at the media service (expired there, or refused at completion).
            Ok(_) | Err(RpcError { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    state::remove(state.blobs.as_ref(), &info).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// 412 unless the request speaks tus 1.0.0.
fn check_version(headers: &HeaderMap) -> Result<(), RpcError> {
    match protocol::text(headers, TUS_RESUMABLE.as_str()) {
        Some(VERSION) => Ok(()),
        other => Err(RpcError::new(
            412,
            "TUS_VERSION_UNSUPPORTED",
            format!("Tus-Resumable must be {VERSION} (got {:?})", other.unwrap_or("nothing")),
        )),
    }
}

/// The caller, from `Authorization: Bearer` (verified here, before any body is read): 401 without
/// a valid token.
fn identify(state: &AppState, headers: &HeaderMap) -> Result<Identity, RpcError> {
    let unauthenticated = |why: String| RpcError::new(401, "UNAUTHENTICATED", why);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("uploads need an Authorization: Bearer token".into()))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated("expected Authorization: Bearer <token>".into()))?;
    state.verifier.verify(token).map_err(|e| unauthenticated(e.to_string()))
}

/// The upload `id` if `who` owns it (404 otherwise, as for a missing one). An expired upload is
/// removed (its parts aborted at the media service) and answered 410.
async fn owned(state: &AppState, id: &str, who: &Identity, nats: &async_nats::HeaderMap) -> Result<TusInfo, RpcError> {
    let not_found = || RpcError::new(404, "UPLOAD_NOT_FOUND", "no such upload");
    if !state::valid_id(id) {
        return Err(not_found());
    }
    let info = state::load(state.blobs.as_ref(), id).await?.ok_or_else(not_found)?;
    if info.user_id != who.user_id {
        return Err(not_found());
    }
    if info.expires_at_ms <= protocol::now_ms() {
        if info.media_id.is_none() {
            abort_media_upload(state, &info, nats).await;
        }
        state::remove(state.blobs.as_ref(), &info).await;
        return Err(RpcError::new(410, "UPLOAD_EXPIRED", "the upload expired"));
    }
    Ok(info)
}

/// `Content-Type` of a body (415 unless `application/offset+octet-stream`) and its
/// `Upload-Checksum`, if any (400 when malformed or of an unsupported algorithm).
fn body_checks(headers: &HeaderMap) -> Result<Option<Checksum>, RpcError> {
    let content_type = protocol::text(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    if content_type.split(';').next().unwrap_or_default().trim() != protocol::OFFSET_OCTET_STREAM {
        return Err(RpcError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("send the bytes as {}", protocol::OFFSET_OCTET_STREAM),
        ));
    }
    protocol::text(headers, UPLOAD_CHECKSUM).map(protocol::parse_checksum).transpose()
}

/// Whether a request announces a body (creation-with-upload).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || protocol::text(headers, header::CONTENT_LENGTH.as_str()).is_some_and(|n| n.trim() != "0")
}

fn too_large(limit: u64) -> RpcError {
    RpcError::new(
        413,
        mediabus_rpc::codes::PAYLOAD_TOO_LARGE,
        format!("the upload may hold at most {limit} more bytes"),
    )
}

/// `Upload-Offset`, and `Upload-Expires` while unfinished or `Media-Id`/`Media-Url` once done.
fn add_state_headers(out: &mut HeaderMap, info: &TusInfo) {
    out.insert(UPLOAD_OFFSET, HeaderValue::from(info.offset));
    match &info.media_id {
        Some(media_id) => {
            if let (Ok(id), Ok(url)) =
                (HeaderValue::try_from(media_id.as_str()), HeaderValue::try_from(format!("/api/media/{media_id}")))
            {
                out.insert(MEDIA_ID, id);
                out.insert(MEDIA_URL, url);
            }
        }
        None => {
            out.insert(UPLOAD_EXPIRES, protocol::http_date(info.expires_at_ms));
        }
    }
}

/// Streams a request body into the upload at `info.offset` and commits the new offset; completes
/// the upload when it reaches the length. Runs as a task of its own, so a client that goes away
/// mid-request still has what arrived committed (the handler's future is dropped with the
/// connection; this task is not).
async fn receive(
    state: &AppState,
    info: TusInfo,
    nats: async_nats::HeaderMap,
    body: Body,
    checksum: Option<Checksum>,
) -> Result<TusInfo, RpcError> {
    let state = state.clone();
    tokio::spawn(async move { write_body(&state, info, nats, body, checksum).await }).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "tus upload task failed");
        Err(RpcError::internal())
    })
}

async fn write_body(
    state: &AppState,
    info: TusInfo,
    nats: async_nats::HeaderMap,
    body: Body,
    checksum: Option<Checksum>,
) -> Result<TusInfo, RpcError> {
    let blobs = state.blobs.as_ref();
    let pending = state::read_pending(blobs, &info).await?;
    let part_size = usize::try_from(info.part_size).unwrap_or(usize::MAX);
    let mut writer = PartWriter::new(
        state.rpc.clone(),
        nats.clone(),
        info.upload_id.clone(),
        part_size,
        info.next_part(),
        &pending,
        state.upload.parts_in_flight,
    );
    drop(pending);
    let mut hasher = checksum.as_ref().map(|c| Hasher::new(c.algorithm));
    let room = info.length - info.offset;
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    // Why the body ended early, if it did: what arrived is still kept (unless checksummed).
    let mut cut: Option<RpcError> = None;
    loop {
        match tokio::time::timeout(state.body_idle_timeout, stream.next()).await {
            Ok(Some(Ok(chunk))) => {
                if received + chunk.len() as u64 > room {
                    return Err(too_large(room));
                }
                if let Some(hasher) = &mut hasher {
                    hasher.update(&chunk);
                }
                writer.push(&chunk).await?;
                received += chunk.len() as u64;
                metrics::counter!("mediabus_upload_bytes_total", "service" => "http-bridge")
                    .increment(chunk.len() as u64);
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                cut = Some(RpcError::new(400, "BODY_INTERRUPTED", format!("the request body was cut off: {e}")));
                break;
            }
            Err(_) => {
                cut = Some(RpcError::new(408, "REQUEST_TIMEOUT", "the request body stalled"));
                break;
            }
        }
    }
    if let (Some(checksum), Some(hasher)) = (checksum, hasher) {
        // A checksum covers the whole request: a cut-off or mismatching body keeps nothing. Parts
        // it already sent lie past the committed offset and are replaced when resent.
        if let Some(cut) = cut {
            return Err(cut);
        }
        if hasher.finish() != checksum.expected {
            return Err(RpcError::new(
                protocol::CHECKSUM_MISMATCH,
                "CHECKSUM_MISMATCH",
                "Upload-Checksum does not match the body; nothing of this request was kept",
            ));
        }
    }
    let new_offset = info.offset + received;
    let done = new_offset == info.length;
    if done {
        writer.send_rest().await?;
    }
    writer.flush().await?;
    if received == 0 && !done {
        return cut.map_or(Ok(info), Err);
    }
    let rest = writer.take_rest();
    let new_pending = state::pending_key(&info.id, new_offset);
    if !rest.is_empty() {
        blobs.put(&new_pending, body_from_bytes(rest)).await.map_err(state::storage_error)?;
    }
    // Commit, unless another request moved the upload meanwhile.
    let current = state::load(blobs, &info.id).await?;
    if current.as_ref().is_none_or(|c| c.offset != info.offset || c.media_id.is_some()) {
        if current.is_none_or(|c| c.offset != new_offset) {
            state::delete_logged(blobs, &new_pending).await;
        }
        return Err(RpcError::new(409, "OFFSET_CONFLICT", "another request changed the upload meanwhile"));
    }
    let old_pending = info.pending_key();
    let info = TusInfo { offset: new_offset, ..info };
    if done {
        // One state write instead of two: `complete` records the offset with the media id (or
        // alone, for a retry, if the media service is unavailable).
        let result = complete(state, info, &nats).await;
        if let Some(old) = old_pending {
            state::delete_logged(blobs, &old).await;
        }
        return result;
    }
    state::save(blobs, &info).await?;
    if let Some(old) = old_pending {
        state::delete_logged(blobs, &old).await;
    }
    cut.map_or(Ok(info), Err)
}

/// `upload.complete` of a fully received upload; records the media id. The call carries the
/// idempotency key `tus-<id>`, so a retry (HEAD after an outage, another bridge) gets the first
/// result. A refusal (type not allowed, over a cap) ends the upload: the media service has
/// discarded it, and the state goes too.
async fn complete(state: &AppState, mut info: TusInfo, nats: &async_nats::HeaderMap) -> Result<TusInfo, RpcError> {
    let mut headers = nats.clone();
    headers.insert("idempotency-key", format!("tus-{}", info.id).as_str());
    let data = json!({ "uploadId": info.upload_id });
    match state.rpc.call_with_headers::<_, Value>(subjects::UPLOAD_COMPLETE, &data, headers).await {
        Ok(media) => {
            let media_id = media["id"].as_str().unwrap_or_default().to_owned();
            info.media_id = Some(media_id);
            // If this write fails, the media exists and this response names it; the state keeps
            // its previous offset until it expires.
            if let Err(e) = state::save(state.blobs.as_ref(), &info).await {
                tracing::warn!(tus_id = %info.id, error = %e.message, "could not record the finished upload");
            }
            Ok(info)
        }
        Err(e) if e.status >= 500 || matches!(e.status, 408 | 409 | 429) => {
            // Every byte is in: a HEAD (or an empty PATCH) completes it later.
            if let Err(e) = state::save(state.blobs.as_ref(), &info).await {
                tracing::warn!(tus_id = %info.id, error = %e.message, "could not record the received upload");
            }
            Err(e)
        }
        Err(e) => {
            state::remove(state.blobs.as_ref(), &info).await;
            Err(e)
        }
    }
}

/// Best-effort `upload.abort` (the media service's TTL sweep removes what this misses).
async fn abort_media_upload(state: &AppState, info: &TusInfo, nats: &async_nats::HeaderMap) {
    let data = json!({ "uploadId": info.upload_id });
    if let Err(e) = state.rpc.call_with_headers::<_, Value>(subjects::UPLOAD_ABORT, &data, nats.clone()).await
        && e.status != 404
    {
        tracing::warn!(tus_id = %info.id, error = %e, "could not abort the media upload");
    }
}
