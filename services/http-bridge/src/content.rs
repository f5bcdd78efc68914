//! `GET /api/media/{id}/content` (DESIGN §7): a media's bytes, streamed from the file store.
//!
//! Access is decided by the media service, once: the bridge asks `media.content` (forwarding the
//! caller's `Authorization`) for a short-lived signed grant, or takes one the client already holds
//! (`?token=`, the URL `media.content` returns, which works in `<img src>`). It verifies the grant
//! (signature, expiry, media id) and serves the object the grant names straight from the file
//! store, so bytes never travel over NATS.
//!
//! HTTP semantics (RFC 9110): a single `Range` (206 with `Content-Range`; 416 with
//! `Content-Range: bytes */size` when unsatisfiable; several ranges or a malformed header get the
//! whole file, as §14.2 allows), `If-Range`, a strong `ETag` (the SHA-256 of the bytes) with
//! `If-None-Match` → 304, `Last-Modified` with `If-Modified-Since` → 304, `Content-Disposition`
//! with an RFC 8187 `filename*`, and `Cache-Control` public for public media, private otherwise.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, IfRange, LastModified};
use mediabus_auth::{AuthError, ContentGrant};
use mediabus_contracts::requests::ContentTicket;
use mediabus_contracts::subjects;
use mediabus_rpc::RpcError;
use mediabus_storage::{ByteRange, StorageError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, error_response, nats_headers};

/// `Cache-Control` of public media: shared caches may keep it briefly (visibility can change).
const CACHE_PUBLIC: &str = "public, max-age=300";
/// `Cache-Control` of private media: only the browser, and only after revalidating (cheap: 304).
const CACHE_PRIVATE: &str = "private, no-cache";
/// `Content-Security-Policy` of every content, variant and HLS response: a stored file opened
/// in the browser runs as an opaque origin, without scripts, forms or plugins of this origin,
/// even if it manages to be rendered as a document (CSP Level 3 §6.3.2, `sandbox`).
pub(crate) const SANDBOX: &str = "sandbox";

/// The query string of the content route.
#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    /// A content token from `media.content` (`GET /api/media/{id}/content-url`).
    token: Option<String>,
    /// A generated rendition instead of the original: `thumb` or `preview` ([`crate::variants`]).
    variant: Option<String>,
}

/// The handler of `GET /api/media/{id}/content` (and `HEAD`).
pub async fn content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<ContentQuery>, QueryRejection>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    // A repeated or undecodable parameter: 400 in the contract's shape, not axum's plain text.
    let Ok(Query(query)) = query else {
        return error_response(RpcError::invalid_payload("invalid query string: token and variant at most once each"));
    };
    if let Some(variant) = query.variant {
        return crate::variants::variant(&state, &id, &variant, query.token, &method, &headers).await;
    }
    match grant(&state, &id, query.token, &headers).await {
        Ok(grant) => serve(&state, &grant, &method, &headers).await.unwrap_or_else(error_response),
        Err(err) => error_response(err),
    }
}

/// The verified grant: from `?token=`, or asked of the media service for the caller.
pub(crate) async fn grant(
    state: &AppState,
    id: &str,
    token: Option<String>,
    headers: &HeaderMap,
) -> Result<ContentGrant, RpcError> {
    let token = match token {
        Some(token) => token,
        None => {
            let data = json!({ "id": id });
            let ticket: ContentTicket =
                state.rpc.call_with_headers(subjects::MEDIA_CONTENT, &data, nats_headers(headers)).await?;
            ticket.token
        }
    };
    let grant = state.content_signer.verify(&token, id).map_err(|e| {
        let message = match e {
            AuthError::Expired => "the content URL has expired",
            _ => "the content token is not valid for this media",
        };
        RpcError::new(401, "UNAUTHENTICATED", message)
    })?;
    // Removed, or made private, since the grant was issued: as if the media were gone.
    if !state.revocations.allows(&grant) {
        return Err(RpcError::new(404, "NOT_FOUND", "media not found"));
    }
    Ok(grant)
}

/// The response for `grant`: 304, 206, 416 or 200 with the bytes streaming from the file store.
/// Also serves variants and HLS files, described by a grant built for them ([`crate::variants`]).
/// A `HEAD` gets the same headers without reading the store, and is not counted as a view or a
/// download.
pub(crate) async fn serve(
    state: &AppState,
    grant: &ContentGrant,
    method: &Method,
    request: &HeaderMap,
) -> Result<Response, RpcError> {
    let etag: ETag = format!("\"{}\"", grant.sha256)
        .parse()
        .map_err(|_| RpcError::new(500, "INTERNAL", "stored checksum is not a valid entity tag"))?;
    let modified = UNIX_EPOCH + Duration::from_secs(grant.modified);
    let mut response = Response::builder()
        .header(header::CACHE_CONTROL, if grant.public { CACHE_PUBLIC } else { CACHE_PRIVATE })
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, SANDBOX)
        .body(Body::empty())
        .expect("static headers are valid");
    let out = response.headers_mut();
    out.typed_insert(etag.clone());
    out.typed_insert(LastModified::from(modified));

    if not_modified(request, &etag, modified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(response);
    }

    let range_applies = request
        .typed_get::<IfRange>()
        .is_none_or(|if_range| !if_range.is_modified(Some(&etag), Some(&LastModified::from(modified))));
    let wanted = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(range) if range_applies => parse_range(range, grant.size),
        _ => Wanted::Whole,
    };
    let range = match wanted {
        Wanted::Unsatisfiable => {
            let mut refused = error_response(RpcError::new(
                416,
                "RANGE_NOT_SATISFIABLE",
                format!("the range is outside the {} bytes of this media", grant.size),
            ));
            let headers = refused.headers_mut();
            headers.insert(header::CONTENT_RANGE, header_value(format!("bytes */{}", grant.size)));
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            return Ok(refused);
        }
        Wanted::Whole => None,
        Wanted::Part(start, end) => Some((start, end)),
    };

    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let byte_range = range.and_then(|(start, end)| ByteRange::new(start, end));
        let (_, stream) = state.blobs.get(&grant.key, byte_range).await.map_err(|e| match e {
            StorageError::NotFound => RpcError::new(404, "NOT_FOUND", "media not found"),
            other => {
                tracing::error!(key = %grant.key, error = %other, "file store read failed");
                RpcError::unavailable("the file store is unavailable, retry later")
            }
        })?;
        state.analytics.record(&grant.sub, &grant.key, range.map_or(0, |(start, _)| start));
        Body::from_stream(stream)
    };
    let out = response.headers_mut();
    out.insert(header::CONTENT_TYPE, header_value(grant.mime.clone()));
    out.insert(header::CONTENT_DISPOSITION, header_value(content_disposition(&grant.name, inline(&grant.mime))));
    let length = match range {
        Some((start, end)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let range = format!("bytes {start}-{end}/{}", grant.size);
            response.headers_mut().insert(header::CONTENT_RANGE, header_value(range));
            end - start + 1
        }
        None => grant.size,
    };
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    *response.body_mut() = body;
    Ok(response)
}

/// Whether the client's copy is current (RFC 9110 §13.2.2: `If-None-Match` wins over
/// `If-Modified-Since`).
fn not_modified(request: &HeaderMap, etag: &ETag, modified: SystemTime) -> bool {
    match request.typed_get::<IfNoneMatch>() {
        Some(if_none_match) => !if_none_match.precondition_passes(etag),
        None => request.typed_get::<IfModifiedSince>().is_some_and(|since| !since.is_modified(modified)),
    }
}

/// What a `Range` header asks of a representation.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// No usable single byte range: send everything (200).
    Whole,
    /// Bytes `start..=end`, already clamped to the representation (206).
    Part(u64, u64),
    /// A valid range that selects nothing (416).
    Unsatisfiable,
}

/// Reads a `Range` value for a representation of `size` bytes (RFC 9110 §14.1.2): `bytes=a-b`,
/// `bytes=a-`, `bytes=-n` (the last n bytes). Other units, malformed values and multiple ranges
/// are ignored (the whole representation is sent, §14.2).
fn parse_range(value: &str, size: u64) -> Wanted {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Wanted::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last `n` bytes, or all of them when the file is shorter.
        return match last.parse::<u64>() {
            Ok(0) => Wanted::Unsatisfiable,
            Ok(_) if size == 0 => Wanted::Unsatisfiable,
            Ok(n) => Wanted::Part(size.saturating_sub(n), size - 1),
            Err(_) => Wanted::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Wanted::Whole;
    };
    let end = match last {
        "" => u64::MAX,
        last => match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(start, end.min(size - 1))
}

/// RFC 8187 `attr-char`s stay as they are in `filename*`; everything else is percent-encoded.
const ATTR_CHAR_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `inline` (or `attachment`); filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`
/// (RFC 6266 §4.3): old clients read the quoted ASCII name, current ones the exact UTF-8 name.
fn content_disposition(name: &str, inline: bool) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let kind = if inline { "inline" } else { "attachment" };
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{}", utf8_percent_encode(name, ATTR_CHAR_ENCODE))
}

/// Whether a type is displayed in the browser (`inline`) rather than downloaded (`attachment`):
/// images, audio, video and PDF only. SVG is an image that runs scripts, so it is downloaded,
/// as is everything else (HTML, XML, unknown types), whatever the grant says.
pub(crate) fn inline(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        "image" => !subtype.starts_with("svg"),
        "audio" | "video" => true,
        "application" => subtype == "pdf",
        _ => false,
    }
}

/// A header value from text we built from validated parts; control characters become `_` so a
/// value never fails (names are sanitised by the media service already).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text.replace(|c: char| c.is_ascii_control(), "_")).unwrap_or(HeaderValue::from_static("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-9", 100), Wanted::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Wanted::Part(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), Wanted::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Wanted::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), Wanted::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Wanted::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Wanted::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Wanted::Whole);
        assert_eq!(parse_range("items=0-1", 100), Wanted::Whole);
        assert_eq!(parse_range("bytes=x-1", 100), Wanted::Whole);
    }

    #[test]
    fn dispositions_carry_an_ascii_fallback_and_the_exact_name() {
        assert_eq!(
            content_disposition("résumé \"v2\".pdf", true),
            "inline; filename=\"r_sum_ _v2_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22v2%22.pdf"
        );
        assert_eq!(content_disposition("a.png", true), "inline; filename=\"a.png\"; filename*=UTF-8''a.png");
        assert_eq!(content_disposition("a.html", false), "attachment; filename=\"a.html\"; filename*=UTF-8''a.html");
    }

    #[test]
    fn only_passive_types_are_shown_inline() {
        for shown in ["image/png", "image/webp", "video/mp4", "video/iso.segment", "audio/mpeg", "application/pdf"] {
            assert!(inline(shown), "{shown}");
        }
        assert!(inline("Image/PNG; charset=x"));
        for downloaded in
            ["text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/javascript", "", "x"]
        {
            assert!(!inline(downloaded), "{downloaded}");
        }
    }
}
