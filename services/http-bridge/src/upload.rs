//! `POST /api/media/upload` (DESIGN §7): `multipart/form-data` with one `file` part and optional
//! text fields `entityId`, `entityType`, `isPublic` (`true`/`false`), `metadata` (a JSON object)
//! and `userId` (admin and service callers only), onto the media subjects as the body arrives.
//!
//! - A file of at most `upload.single_message_max_bytes` goes as one `upload_file` message.
//! - A larger one goes as `upload.create`, then `upload.part` messages of the service's part size
//!   (raw bytes, metadata in NATS headers; `upload.parts_in_flight` at a time) while the body is
//!   still arriving, then `upload.complete`. The bridge holds at most a few parts per upload.
//! - Fields may come before or after the file; those after a large file are passed to
//!   `upload.complete` (`userId` must come first: the owner is fixed when the upload starts).
//! - If the client goes away, the body stalls for `http.body_idle_timeout_ms`, or anything fails,
//!   the chunked upload is aborted (`upload.abort`): no document and no parts are left.
//!
//! - Before any of the body is read, the Bearer token is verified locally (`[auth]`); the form is
//!   bounded besides its total size: [`PART_HEADER_MAX_BYTES`] for a part's headers (multer alone
//!   would buffer them without limit), [`MAX_PARTS`] parts, 64 KiB per text field,
//!   [`FILE_NAME_MAX_BYTES`] for the file name.
//!
//! Replies: 201 with the Media; 400 malformed form, missing file, bad field, too many parts or too
//! long a file name; 401 without a valid token; 408 stalled body; 413 body over
//! `upload.max_body_bytes` (or the file over its type's cap, or part headers over their limit);
//! 415 not multipart (or a disallowed sniffed type); errors of the media subjects as they come.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use mediabus_contracts::requests::{PartAccepted, UploadCreated, headers as part_headers};
use mediabus_contracts::subjects;
use mediabus_rpc::{RpcClient, RpcError};
use serde_json::{Map, Value, json};

use crate::{AppState, error_response, nats_headers};

/// Largest text field of the form, bytes (`metadata` is also capped by the media service).
const FIELD_MAX_BYTES: u64 = 64 * 1024;
/// Largest part the bridge buffers, bytes: a guard against a service announcing a huge part size
/// (NATS messages are at most a few MiB anyway).
const MAX_PART_BYTES: usize = 64 << 20;
/// Most bytes between two parts' data: the boundary line and a part's headers (or the preamble
/// before the first part). Beyond it: 413.
const PART_HEADER_MAX_BYTES: u64 = 8 * 1024;
/// Most parts in a form: one file and the text fields, some repeated.
const MAX_PARTS: usize = 16;
/// Longest file name of the file part, bytes.
const FILE_NAME_MAX_BYTES: usize = 1024;
/// The text fields the form may carry.
const FIELDS: [&str; 5] = ["entityId", "entityType", "isPublic", "metadata", "userId"];

/// The handler of `POST /api/media/upload`.
pub async fn upload(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match receive(&state, &headers, body).await {
        Ok(media) => (StatusCode::CREATED, Json(media)).into_response(),
        Err(err) => error_response(err),
    }
}

/// Reads the form and drives the subjects; returns the created Media.
async fn receive(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Value, RpcError> {
    // Uploads need a signed-in caller: checked here, locally, before a byte of the body is read
    // (the media service checks the token again, with the access rules).
    authenticate(state, headers)?;
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
        .ok_or_else(|| RpcError::new(415, "UNSUPPORTED_MEDIA_TYPE", "send multipart/form-data with a `file` part"))?;
    let limits = FIELDS.iter().fold(
        multer::SizeLimit::new().whole_stream(state.upload.max_body_bytes).per_field(state.upload.max_body_bytes),
        |limit, name| limit.for_field(*name, FIELD_MAX_BYTES),
    );
    let constraints = multer::Constraints::new().size_limit(limits);
    let gate = Arc::new(AtomicU64::new(DATA));
    let mut form = multer::Multipart::with_constraints(gated(body, gate.clone()), boundary, constraints);

    let nats = nats_headers(headers);
    let mut fields = Map::new();
    let mut file: Option<Received> = None;
    let mut parts = 0usize;
    loop {
        // Between parts (boundary, part headers, or the preamble) at most PART_HEADER_MAX_BYTES.
        gate.store(PART_HEADER_MAX_BYTES, Ordering::Relaxed);
        let Some(mut field) = form.next_field().await.map_err(form_error)? else {
            break;
        };
        gate.store(DATA, Ordering::Relaxed);
        parts += 1;
        if parts > MAX_PARTS {
            return Err(RpcError::invalid_payload(format!("the form has more than {MAX_PARTS} parts")));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if file.is_some() {
                return Err(RpcError::invalid_payload("send one `file` part per upload"));
            }
            let original_name = field.file_name().unwrap_or("upload").to_owned();
            if original_name.len() > FILE_NAME_MAX_BYTES {
                return Err(RpcError::invalid_payload(format!(
                    "the file name is longer than {FILE_NAME_MAX_BYTES} bytes"
                )));
            }
            let claimed_type = field.content_type().map(ToString::to_string);
            let meta = FileMeta { original_name, claimed_type };
            file = Some(receive_file(state, &nats, &fields, meta, &mut field).await?);
            continue;
        }
        if !FIELDS.contains(&name.as_str()) {
            return Err(RpcError::invalid_payload(format!(
                "unknown form field {name:?}; expected `file` and optionally {}",
                FIELDS.join(", ")
            )));
        }
        if name == "userId" && matches!(file, Some(Received::Chunked(_))) {
            return Err(RpcError::invalid_payload("send `userId` before the file"));
        }
        let text = field.text().await.map_err(form_error)?;
        fields.insert(name.clone(), field_value(&name, text)?);
    }
    match file {
        None => Err(RpcError::invalid_payload("the form has no `file` part")),
        Some(Received::Whole { bytes, meta }) => {
            let mut data = fields;
            data.insert(
                "file".into(),
                json!({
                    "buffer": base64::engine::general_purpose::STANDARD.encode(&bytes),
                    "originalname": meta.original_name,
                    "mimetype": meta.claimed_type,
                }),
            );
            state.rpc.call_with_headers(subjects::UPLOAD_FILE, &data, nats).await
        }
        Some(Received::Chunked(mut upload)) => {
            let mut data = fields;
            data.remove("userId");
            data.insert("uploadId".into(), upload.id.clone().into());
            let media = state.rpc.call_with_headers(subjects::UPLOAD_COMPLETE, &data, nats).await;
            if media.is_ok() {
                upload.finished = true;
            }
            media
        }
    }
}

/// The file part as the client described it (both only advisory: the service sanitises the name
/// and sniffs the type).
struct FileMeta {
    original_name: String,
    claimed_type: Option<String>,
}

/// A file part read to its end.
enum Received {
    /// Small enough for one `upload_file` message; sent once the trailing fields are known.
    Whole { bytes: Bytes, meta: FileMeta },
    /// Every part sent; `upload.complete` is what remains.
    Chunked(Box<ChunkedUpload>),
}

/// Reads the file part: buffers it while it fits one message, then switches to a chunked upload
/// and sends parts as they fill.
async fn receive_file(
    state: &AppState,
    nats: &async_nats::HeaderMap,
    fields: &Map<String, Value>,
    meta: FileMeta,
    field: &mut multer::Field<'static>,
) -> Result<Received, RpcError> {
    let mut whole = BytesMut::new();
    let mut chunked: Option<Box<ChunkedUpload>> = None;
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        metrics::counter!("mediabus_upload_bytes_total", "service" => "http-bridge").increment(chunk.len() as u64);
        match chunked.as_mut() {
            Some(upload) => upload.push(&chunk).await?,
            None => {
                whole.extend_from_slice(&chunk);
                if whole.len() > state.upload.single_message_max_bytes {
                    let mut upload = Box::new(ChunkedUpload::create(state, nats, fields, &meta).await?);
                    upload.push(&std::mem::take(&mut whole)).await?;
                    chunked = Some(upload);
                }
            }
        }
    }
    match chunked {
        None => Ok(Received::Whole { bytes: whole.freeze(), meta }),
        Some(mut upload) => {
            upload.finish().await?;
            Ok(Received::Chunked(upload))
        }
    }
}

/// A chunked upload in progress. Dropped unfinished (an error, or the client went away and the
/// request was cancelled), it aborts itself in the background.
struct ChunkedUpload {
    rpc: RpcClient,
    nats: async_nats::HeaderMap,
    id: String,
    part_size: usize,
    /// The part being filled: allocated at exactly `part_size`, so memory is parts, not growth.
    filling: BytesMut,
    next_part: u32,
    max_in_flight: usize,
    in_flight: FuturesUnordered<futures_util::future::BoxFuture<'static, Result<PartAccepted, RpcError>>>,
    finished: bool,
}

impl ChunkedUpload {
    /// `upload.create` with the fields known so far.
    async fn create(
        state: &AppState,
        nats: &async_nats::HeaderMap,
        fields: &Map<String, Value>,
        meta: &FileMeta,
    ) -> Result<Self, RpcError> {
        let mut data = fields.clone();
        data.insert("originalName".into(), meta.original_name.clone().into());
        if let Some(claimed) = &meta.claimed_type {
            data.insert("mimeType".into(), claimed.clone().into());
        }
        let created: UploadCreated = state.rpc.call_with_headers(subjects::UPLOAD_CREATE, &data, nats.clone()).await?;
        let part_size = usize::try_from(created.part_size).unwrap_or(usize::MAX).clamp(1, MAX_PART_BYTES);
        Ok(Self {
            rpc: state.rpc.clone(),
            nats: nats.clone(),
            id: created.upload_id,
            part_size,
            filling: BytesMut::with_capacity(part_size),
            next_part: 1,
            max_in_flight: state.upload.parts_in_flight.max(1),
            in_flight: FuturesUnordered::new(),
            finished: false,
        })
    }

    /// Appends `data` to the upload, sending each part as it fills.
    async fn push(&mut self, mut data: &[u8]) -> Result<(), RpcError> {
        while !data.is_empty() {
            let take = (self.part_size - self.filling.len()).min(data.len());
            self.filling.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.filling.len() == self.part_size {
                let part = std::mem::replace(&mut self.filling, BytesMut::with_capacity(self.part_size));
                self.send(part.freeze()).await?;
            }
        }
        Ok(())
    }

    /// Sends the last, partial part and waits until every part is acknowledged.
    async fn finish(&mut self) -> Result<(), RpcError> {
        if !self.filling.is_empty() {
            let last = std::mem::take(&mut self.filling);
            self.send(last.freeze()).await?;
        }
        self.flush().await
    }

    /// Sends the next part; waits first while `max_in_flight` parts are unanswered.
    async fn send(&mut self, bytes: Bytes) -> Result<(), RpcError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.next_reply().await?;
        }
        let mut headers = self.nats.clone();
        headers.insert(part_headers::UPLOAD_ID, self.id.as_str());
        headers.insert(part_headers::PART_NUMBER, self.next_part.to_string().as_str());
        self.next_part += 1;
        let rpc = self.rpc.clone();
        self.in_flight.push(Box::pin(async move { rpc.call_raw(subjects::UPLOAD_PART, bytes, headers).await }));
        Ok(())
    }

    /// Waits until every sent part is acknowledged.
    async fn flush(&mut self) -> Result<(), RpcError> {
        while !self.in_flight.is_empty() {
            self.next_reply().await?;
        }
        Ok(())
    }

    async fn next_reply(&mut self) -> Result<(), RpcError> {
        match self.in_flight.next().await {
            Some(reply) => reply.map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for ChunkedUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (rpc, headers, id) = (self.rpc.clone(), self.nats.clone(), self.id.clone());
        // Also runs when the request future is dropped (client gone), hence a task of its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let data = json!({ "uploadId": id });
                if let Err(e) = rpc.call_with_headers::<_, Value>(subjects::UPLOAD_ABORT, &data, headers).await {
                    tracing::warn!(upload_id = %id, error = %e, "could not abort an unfinished upload");
                }
            });
        }
    }
}

/// A form field's value as the subjects take it: `isPublic` a boolean, `metadata` a JSON object,
/// the rest strings.
fn field_value(name: &str, text: String) -> Result<Value, RpcError> {
    match name {
        "isPublic" => match text.trim() {
            "true" => Ok(true.into()),
            "false" => Ok(false.into()),
            _ => Err(RpcError::invalid_payload("isPublic must be true or false")),
        },
        "metadata" => match serde_json::from_str::<Value>(&text) {
            Ok(object @ Value::Object(_)) => Ok(object),
            _ => Err(RpcError::invalid_payload("metadata must be a JSON object")),
        },
        _ => Ok(text.into()),
    }
}

/// The caller's `Authorization: Bearer` token, verified locally (signature, expiry, issuer,
/// audience): 401 `UNAUTHENTICATED` without a valid one.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<mediabus_auth::Identity, RpcError> {
    let unauthenticated = |why: &str| RpcError::new(401, "UNAUTHENTICATED", why);
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("uploads need an Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| unauthenticated("expected Authorization: Bearer <token>"))?;
    state.verifier.verify(token).map_err(|e| match e {
        mediabus_auth::AuthError::Expired => unauthenticated("the access token has expired"),
        _ => unauthenticated("the access token is not valid"),
    })
}

/// `gate` value while a part's data is read: no limit.
const DATA: u64 = u64::MAX;
/// Bytes handed to multer at a time while it looks for part headers, so the gate counts what
/// multer buffers, not what the client happened to send in one packet.
const HEADER_SLICE_BYTES: usize = 1024;

/// Why multer's input stream failed: a part's headers (or the preamble, or the space between two
/// parts) ran over [`PART_HEADER_MAX_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("a part's headers exceed {PART_HEADER_MAX_BYTES} bytes")]
struct PartHeadersTooLarge;

/// The request body as multer's input. While `gate` is not [`DATA`] (multer looks for the next
/// part's headers), it hands over [`HEADER_SLICE_BYTES`] at a time and fails with
/// [`PartHeadersTooLarge`] once more than `gate` bytes were needed: multer buffers part headers
/// without limit and rescans them on every poll. A body pause past the idle timeout (tower-http's
/// `TimeoutError`) becomes `TimedOut`.
fn gated(body: Body, gate: Arc<AtomicU64>) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send {
    let start = Some((body.into_data_stream(), Bytes::new()));
    futures_util::stream::unfold(start, move |state| {
        let gate = gate.clone();
        async move {
            let (mut stream, mut leftover) = state?;
            if leftover.is_empty() {
                leftover = match stream.next().await? {
                    Ok(bytes) => bytes,
                    Err(e) if crate::body_timed_out(&e) => {
                        return Some((Err(io::Error::new(io::ErrorKind::TimedOut, "request body stalled")), None));
                    }
                    Err(e) => return Some((Err(io::Error::other(e)), None)),
                };
            }
            let budget = gate.load(Ordering::Relaxed);
            if budget == DATA {
                return Some((Ok(leftover), Some((stream, Bytes::new()))));
            }
            let slice = leftover.split_to(leftover.len().min(HEADER_SLICE_BYTES));
            if slice.len() as u64 > budget {
                return Some((Err(io::Error::new(io::ErrorKind::InvalidData, PartHeadersTooLarge)), None));
            }
            gate.store(budget - slice.len() as u64, Ordering::Relaxed);
            Some((Ok(slice), Some((stream, leftover))))
        }
    })
}

/// A multipart failure as the contract's error: 413 over a size limit, 408 for a stalled body,
/// 400 for the rest (malformed form, body cut off).
fn form_error(err: multer::Error) -> RpcError {
    match &err {
        multer::Error::StreamSizeExceeded { limit } | multer::Error::FieldSizeExceeded { limit, .. } => {
            RpcError::new(413, mediabus_rpc::codes::PAYLOAD_TOO_LARGE, format!("the form exceeds {limit} bytes"))
        }
        multer::Error::StreamReadFailed(source)
            if source.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) =>
        {
            RpcError::new(408, "REQUEST_TIMEOUT", "the request body stalled")
        }
        multer::Error::StreamReadFailed(source)
            if source
                .downcast_ref::<io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<PartHeadersTooLarge>()) =>
        {
            RpcError::new(413, mediabus_rpc::codes::PAYLOAD_TOO_LARGE, PartHeadersTooLarge.to_string())
        }
        _ => RpcError::new(400, "MALFORMED_MULTIPART", format!("unreadable multipart/form-data: {err}")),
    }
}
