//! Generated renditions over HTTP (DESIGN §9): `GET /api/media/{id}/content?variant=thumb|preview`
//! and the HLS tree of a video, `GET /api/media/{id}/hls/master.m3u8` and the files it references
//! (`hls/<height>p/index.m3u8`, `init.mp4`, `seg_<n>.m4s`; RFC 8216 with fMP4 segments).
//!
//! Access is the original's: the same grant (`?token=` or `media.content` for the caller, see
//! [`crate::content`]) decides, and the file's key follows from the media id the grant names
//! (`mediabus_contracts::variants::key`), never from the client. Sizes, validators and dates come
//! from the file store (`head`); types from the variant (WebP, JPEG, playlist, MP4). Images,
//! init sections and segments are served like the original (Range, ETag, 304, Cache-Control).
//!
//! Playlists are read whole (they are small; at most [`MAX_PLAYLIST_BYTES`]). When the request
//! carries `?token=`, every relative URI in them (URI lines, and `URI="..."` attributes such as
//! `EXT-X-MAP`) gets the same `token`, so a player given only a signed content URL of the master
//! playlist can fetch every rendition, init section and segment. Such a playlist is private to
//! its holder (`Cache-Control: private, no-store`).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::TryStreamExt;
use mediabus_auth::ContentGrant;
use mediabus_contracts::variants;
use mediabus_rpc::RpcError;
use mediabus_storage::{ObjectMeta, StorageError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::content::{grant, serve};
use crate::{AppState, error_response, parse_query};

/// Largest playlist the bridge reads, bytes (a 4 s segment ladder of a 10-hour video is ~1 MiB).
pub const MAX_PLAYLIST_BYTES: u64 = 4 << 20;

/// `Content-Type` of HLS playlists (RFC 8216 §4).
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// The single-file variants served through `?variant=`: name and `Content-Type` (their files:
/// `mediabus_contracts::variants::file_name`).
const IMAGE_VARIANTS: [(&str, &str); 2] = [(variants::THUMB, "image/webp"), (variants::PREVIEW, "image/jpeg")];

/// `GET /api/media/{id}/content?variant=<name>`: 400 for a name other than `thumb` or
/// `preview` (before any access check), then the original's access rules, then 404 when the
/// variant does not exist (yet), else the file as [`serve`] sends it.
pub(crate) async fn variant(
    state: &AppState,
    id: &str,
    name: &str,
    token: Option<String>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let Some((file, mime)) = IMAGE_VARIANTS
        .iter()
        .find(|(known, _)| *known == name)
        .and_then(|(known, mime)| Some((variants::file_name(known)?, *mime)))
    else {
        return error_response(RpcError::invalid_payload(format!(
            "unknown variant {name:?}: expected thumb or preview (video: /api/media/{{id}}/hls/master.m3u8)"
        )));
    };
    let result = async {
        let original = grant(state, id, token, headers).await?;
        let served = described(state, &original, file, mime, "this variant does not exist (yet)").await?;
        serve(state, &served, method, headers).await
    };
    result.await.unwrap_or_else(error_response)
}

/// `GET /api/media/{id}/hls/{*path}`: 400 for a path outside the HLS layout, then the original's
/// access rules, then the playlist (URIs carrying the request's `token`) or the init section or
/// segment (Range, ETag), 404 when absent.
pub async fn hls(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(kind) = hls_kind(&path) else {
        return error_response(RpcError::invalid_payload(
            "invalid HLS path: segments of [a-z0-9_.-] (not starting with '.') ending in .m3u8, .mp4 or .m4s",
        ));
    };
    let token = query.as_deref().map(parse_query).unwrap_or_default().into_iter().find(|(k, _)| k == "token");
    let token = token.map(|(_, value)| value);
    let result = async {
        let original = grant(&state, &id, token.clone(), &headers).await?;
        let file = format!("hls/{path}");
        match kind {
            HlsKind::Playlist => playlist(&state, &original, &file, token.as_deref()).await,
            HlsKind::Init | HlsKind::Segment => {
                let mime = if kind == HlsKind::Init { "video/mp4" } else { "video/iso.segment" };
                let served = described(&state, &original, &file, mime, "no such HLS file").await?;
                serve(&state, &served, &method, &headers).await
            }
        }
    };
    result.await.unwrap_or_else(error_response)
}

/// What an HLS path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HlsKind {
    /// `.m3u8`: master or media playlist.
    Playlist,
    /// `.mp4`: an fMP4 initialization section (`EXT-X-MAP`).
    Init,
    /// `.m4s`: an fMP4 media segment.
    Segment,
}

/// The kind of file a path under `hls/` names, or `None` unless the path is one or two segments
/// of `[a-z0-9_.-]` (none empty, none starting with `.`, so no `..`), each at most 64 bytes,
/// ending in `.m3u8`, `.mp4` or `.m4s`.
fn hls_kind(path: &str) -> Option<HlsKind> {
    let segments: Vec<&str> = path.split('/').collect();
    let valid = |segment: &&str| {
        !segment.is_empty()
            && segment.len() <= 64
            && !segment.starts_with('.')
            && segment.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
    };
    if segments.len() > 2 || !segments.iter().all(valid) {
        return None;
    }
    let file = segments.last()?;
    if file.ends_with(".m3u8") {
        Some(HlsKind::Playlist)
    } else if file.ends_with(".mp4") {
        Some(HlsKind::Init)
    } else if file.ends_with(".m4s") {
        Some(HlsKind::Segment)
    } else {
        None
    }
}

/// A grant describing the generated file `file` of the media `original` names: the file store's
/// size, date and version, the type `mime`; access as the original's. 404 with `missing` when the
/// file is not there.
async fn described(
    state: &AppState,
    original: &ContentGrant,
    file: &str,
    mime: &str,
    missing: &str,
) -> Result<ContentGrant, RpcError> {
    let key = variants::key(&original.sub, file);
    let meta = head(state, &key, missing).await?;
    let modified = meta.last_modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(ContentGrant {
        sub: original.sub.clone(),
        size: meta.size,
        mime: mime.to_owned(),
        name: display_name(&original.name, file),
        sha256: entity_tag(file, &meta),
        modified,
        public: original.public,
        exp: original.exp,
        iat_ms: original.iat_ms,
        key,
    })
}

/// The file store's metadata of `key`; 404 with `missing`, 503 when the store fails.
async fn head(state: &AppState, key: &str, missing: &str) -> Result<ObjectMeta, RpcError> {
    state.blobs.head(key).await.map_err(|e| store_error(e, key, missing))
}

fn store_error(e: StorageError, key: &str, missing: &str) -> RpcError {
    match e {
        StorageError::NotFound | StorageError::InvalidKey(_) => RpcError::new(404, "NOT_FOUND", missing),
        other => {
            tracing::error!(%key, error = %other, "file store read failed");
            RpcError::unavailable("the file store is unavailable, retry later")
        }
    }
}

/// The strong `ETag` text (without quotes) of a generated file: its path and the store's version
/// tag, which changes whenever the file is rewritten (only `[A-Za-z0-9.-]` kept, so it is always a
/// valid entity tag).
fn entity_tag(file: &str, meta: &ObjectMeta) -> String {
    let version: String = meta.etag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    format!("{}-{version}", file.replace('/', "."))
}

/// The download name of a generated file: the original's name without its extension, then the
/// file's name (`cat.png` + `thumb.webp` → `cat.thumb.webp`).
fn display_name(original: &str, file: &str) -> String {
    let stem = original.rsplit_once('.').map_or(original, |(stem, _)| stem);
    let file = file.rsplit('/').next().unwrap_or(file);
    format!("{stem}.{file}")
}

/// A playlist, read whole, with `token` carried into its URIs when given.
async fn playlist(
    state: &AppState,
    original: &ContentGrant,
    file: &str,
    token: Option<&str>,
) -> Result<Response, RpcError> {
    let key = variants::key(&original.sub, file);
    let meta = head(state, &key, "no such HLS playlist").await?;
    if meta.size > MAX_PLAYLIST_BYTES {
        tracing::error!(%key, size = meta.size, "HLS playlist over the size limit");
        return Err(RpcError::new(500, "INTERNAL", "the playlist is too large to serve"));
    }
    let (_, stream) = state.blobs.get(&key, None).await.map_err(|e| store_error(e, &key, "no such HLS playlist"))?;
    let bytes: Vec<u8> = stream
        .try_fold(Vec::with_capacity(meta.size as usize), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .map_err(|e| store_error(StorageError::Io(e), &key, "no such HLS playlist"))?;
    if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
        return Err(RpcError::new(500, "INTERNAL", "the playlist is too large to serve"));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        tracing::error!(%key, "HLS playlist is not UTF-8");
        RpcError::new(500, "INTERNAL", "the playlist is damaged")
    })?;
    // Opening the master playlist counts as a view of the media (DESIGN §14); the analytics
    // decide by key, so rendition playlists do not count.
    state.analytics.record(&original.sub, &key, 0);
    let (body, cache) = match token {
        Some(token) => (with_token(&text, token), "private, no-store"),
        None if original.public => (text, "public, max-age=60"),
        None => (text, "private, no-cache"),
    };
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, PLAYLIST_TYPE)
        .header(header::CACHE_CONTROL, cache)
        .header(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"))
        .header(header::CONTENT_SECURITY_POLICY, crate::content::SANDBOX)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .map_err(|_| RpcError::internal())?;
    Ok(response)
}

/// Everything but RFC 3986 unreserved characters is percent-encoded in the carried token.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `playlist` with `token=<token>` added to the query of every relative URI: URI lines and
/// `URI="..."` attributes of tags (RFC 8216 §4.1, §4.3.2.5). Absolute URIs (with a scheme or
/// `//authority`) are left alone, so a token never leaves this host.
fn with_token(playlist: &str, token: &str) -> String {
    let token = utf8_percent_encode(token, QUERY_VALUE).to_string();
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if trimmed.starts_with('#') {
            out.push_str(&with_token_in_attributes(line, &token));
        } else {
            out.push_str(&carrying(trimmed, &token));
        }
        out.push('\n');
    }
    out
}

/// A tag line with `token` added to each `URI="..."` attribute.
fn with_token_in_attributes(line: &str, token: &str) -> String {
    const ATTRIBUTE: &str = "URI=\"";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(ATTRIBUTE) {
        let (head, tail) = rest.split_at(at + ATTRIBUTE.len());
        out.push_str(head);
        // An attribute name starts after ':' (the first) or ',' (the others): not `XURI="`.
        let own_attribute = matches!(head[..at].chars().last(), Some(':' | ','));
        match tail.find('"') {
            Some(end) if own_attribute => {
                out.push_str(&carrying(&tail[..end], token));
                rest = &tail[end..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `uri` with `token=<token>` in its query, if it is relative (no scheme, no authority).
fn carrying(uri: &str, token: &str) -> String {
    let before_path = uri.split(['/', '?', '#']).next().unwrap_or_default();
    if uri.starts_with("//") || before_path.contains(':') {
        return uri.to_owned();
    }
    let (target, fragment) = uri.split_once('#').map_or((uri, None), |(t, f)| (t, Some(f)));
    let separator = if target.contains('?') { '&' } else { '?' };
    match fragment {
        Some(fragment) => format!("{target}{separator}token={token}#{fragment}"),
        None => format!("{target}{separator}token={token}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hls_layout_is_accepted() {
        assert_eq!(hls_kind("master.m3u8"), Some(HlsKind::Playlist));
        assert_eq!(hls_kind("720p/index.m3u8"), Some(HlsKind::Playlist));
        assert_eq!(hls_kind("720p/init.mp4"), Some(HlsKind::Init));
        assert_eq!(hls_kind("720p/seg_00000.m4s"), Some(HlsKind::Segment));
        for bad in [
            "../master.m3u8",
            "720p/../../x.m3u8",
            "..",
            "720p/.hidden.m4s",
            "720p//seg.m4s",
            "/master.m3u8",
            "720P/index.m3u8",
            "a/b/c.m4s",
            "720p/seg.ts",
            "master.m3u8\0",
            "720p\\seg.m4s",
            "",
        ] {
            assert_eq!(hls_kind(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn relative_uris_carry_the_token() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8\n";
        assert_eq!(
            with_token(master, "a.b-c"),
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/index.m3u8?token=a.b-c\n"
        );
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg_00000.m4s\n\n#EXT-X-ENDLIST\n";
        assert_eq!(
            with_token(media, "t"),
            "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4?token=t\"\n#EXTINF:4.0,\nseg_00000.m4s?token=t\n\n#EXT-X-ENDLIST\n"
        );
        assert_eq!(carrying("a.m4s?x=1", "t"), "a.m4s?x=1&token=t");
        assert_eq!(carrying("https://cdn.example/a.m4s", "t"), "https://cdn.example/a.m4s");
        assert_eq!(carrying("//cdn.example/a.m4s", "t"), "//cdn.example/a.m4s");
        assert_eq!(
            with_token_in_attributes("#EXT-X-MEDIA:TYPE=AUDIO,URI=\"a/index.m3u8\",XURI=\"k\"", "t"),
            "#EXT-X-MEDIA:TYPE=AUDIO,URI=\"a/index.m3u8?token=t\",XURI=\"k\""
        );
        assert_eq!(with_token("x\r\n", "a b"), "x?token=a%20b\n");
    }

    #[test]
    fn generated_files_get_their_own_names_and_tags() {
        assert_eq!(display_name("cat.png", "thumb.webp"), "cat.thumb.webp");
        assert_eq!(display_name("clip", "hls/360p/seg_00001.m4s"), "clip.seg_00001.m4s");
        let meta = ObjectMeta { size: 1, last_modified: std::time::UNIX_EPOCH, etag: "\"ab-1f\"".into() };
        assert_eq!(entity_tag("hls/360p/init.mp4", &meta), "hls.360p.init.mp4-ab-1f");
    }
}
