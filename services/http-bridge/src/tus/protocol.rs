//! The header grammar of tus 1.0.0 (https://tus.io/protocols/resumable-upload): `Upload-Metadata`,
//! `Upload-Checksum`, `Upload-Offset`/`Upload-Length`, and `Upload-Expires` dates (RFC 9110
//! IMF-fixdate).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use headers::HeaderMapExt;
use mediabus_rpc::RpcError;
use serde_json::{Map, Value};
use sha1::Digest;

/// The protocol version this endpoint speaks (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";
/// `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The only `Content-Type` of a PATCH (and of a creation-with-upload body).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Longest `Upload-Metadata` header accepted, bytes (it is kept and echoed by HEAD).
pub const METADATA_MAX_BYTES: usize = 64 * 1024;
/// Status of a checksum mismatch (tus checksum extension; not an IANA status).
pub const CHECKSUM_MISMATCH: u16 = 460;

/// A header as text, if present and visible ASCII.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A non-negative decimal header (`Upload-Offset`, `Upload-Length`): `None` if absent, 400 if not
/// a plain number.
pub fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, RpcError> {
    let Some(raw) = headers.get(name) else { return Ok(None) };
    let raw = raw.to_str().unwrap_or_default().trim();
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RpcError::invalid_payload(format!("{name} must be a non-negative integer")));
    }
    raw.parse().map(Some).map_err(|_| RpcError::invalid_payload(format!("{name} is out of range")))
}

/// What `Upload-Metadata` says about the file, as the `upload.create` fields.
#[derive(Debug, Default, PartialEq)]
pub struct FileFields {
    /// `filename` (or `name`, as Uppy also sends); `upload` when absent.
    pub original_name: String,
    /// `filetype` (or `type`): the client's claim, only logged by the media service.
    pub claimed_type: Option<String>,
    /// `entityType`, `entityId`, `isPublic` (boolean), `metadata` (JSON object), camelCase like
    /// the subjects take them.
    pub link: Map<String, Value>,
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (value optional), keys
/// unique. Known keys: `filename`, `entityType`, `entityId`, `isPublic` (`true`/`false`),
/// `metadata` (a JSON object); `name`, `filetype`, `type` as tus clients send them; others
/// are ignored (tus-js-client and Uppy add their own).
///
/// Errors: 400 for a malformed pair, bad base64 or UTF-8, a duplicate key, or a bad known value.
pub fn parse_metadata(header: &str) -> Result<FileFields, RpcError> {
    let bad = |why: String| RpcError::invalid_payload(format!("Upload-Metadata: {why}"));
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = pair.split(' ').filter(|w| !w.is_empty());
        let key = words.next().unwrap_or_default();
        let value = match words.next() {
            None => String::new(),
            Some(encoded) => {
                let bytes = STANDARD.decode(encoded).map_err(|_| bad(format!("the value of {key:?} is not base64")))?;
                String::from_utf8(bytes).map_err(|_| bad(format!("the value of {key:?} is not UTF-8")))?
            }
        };
        if words.next().is_some() {
            return Err(bad(format!("{pair:?} is not `key base64value`")));
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("key {key:?} appears twice")));
        }
        pairs.push((key, value));
    }
    let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let mut fields = FileFields {
        original_name: get("filename").or_else(|| get("name")).filter(|n| !n.is_empty()).unwrap_or("upload".into()),
        claimed_type: get("filetype").or_else(|| get("type")).filter(|t| !t.is_empty()),
        link: Map::new(),
    };
    for key in ["entityType", "entityId"] {
        if let Some(value) = get(key) {
            fields.link.insert(key.into(), value.into());
        }
    }
    if let Some(public) = get("isPublic") {
        let public = match public.as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad("isPublic must be true or false".into())),
        };
        fields.link.insert("isPublic".into(), public.into());
    }
    if let Some(metadata) = get("metadata") {
        match serde_json::from_str::<Value>(&metadata) {
            Ok(object @ Value::Object(_)) => {
                fields.link.insert("metadata".into(), object);
            }
            _ => return Err(bad("metadata must be a JSON object".into())),
        }
    }
    Ok(fields)
}

/// `Upload-Checksum: <algorithm> <base64 digest>` of one PATCH body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    /// The digest the client computed.
    pub expected: Vec<u8>,
}

/// The checksum algorithms of [`CHECKSUM_ALGORITHMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

/// Parses `Upload-Checksum`. Errors: 400 for an unsupported algorithm (as the tus checksum
/// extension asks) or a digest that is not base64 of the algorithm's length.
pub fn parse_checksum(header: &str) -> Result<Checksum, RpcError> {
    let (name, digest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let (algorithm, len) = match name {
        "sha1" => (Algorithm::Sha1, 20),
        "sha256" => (Algorithm::Sha256, 32),
        other => {
            return Err(RpcError::new(
                400,
                "UNSUPPORTED_CHECKSUM",
                format!("Upload-Checksum algorithm {other:?} is not supported; use one of {CHECKSUM_ALGORITHMS}"),
            ));
        }
    };
    match STANDARD.decode(digest.trim()) {
        Ok(expected) if expected.len() == len => Ok(Checksum { algorithm, expected }),
        _ => {
            Err(RpcError::invalid_payload(format!("Upload-Checksum: the {name} digest must be {len} bytes in base64")))
        }
    }
}

/// A running digest of a PATCH body.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Self::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Sha1(h) => h.finalize().to_vec(),
            Self::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An `Upload-Expires` value: the RFC 9110 HTTP date (IMF-fixdate) of `unix_ms`.
pub fn http_date(unix_ms: u64) -> HeaderValue {
    let mut map = HeaderMap::new();
    map.typed_insert(headers::Expires::from(UNIX_EPOCH + Duration::from_millis(unix_ms)));
    map.remove(axum::http::header::EXPIRES).unwrap_or(HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_maps_known_keys_and_ignores_others() {
        let b64 = |s: &str| STANDARD.encode(s);
        let header = format!(
            "filename {},entityType {},entityId {},isPublic {},metadata {},relativePath {},empty",
            b64("a b.mp4"),
            b64("course"),
            b64("c1"),
            b64("true"),
            b64(r#"{"k":1}"#),
            b64("x/y")
        );
        let fields = parse_metadata(&header).unwrap();
        assert_eq!(fields.original_name, "a b.mp4");
        assert_eq!(
            Value::Object(fields.link),
            serde_json::json!({"entityType":"course","entityId":"c1","isPublic":true,"metadata":{"k":1}})
        );
        assert_eq!(parse_metadata("").unwrap().original_name, "upload");
        assert!(parse_metadata(&format!("isPublic {}", b64("yes"))).is_err());
        assert!(parse_metadata(&format!("metadata {}", b64("[1]"))).is_err());
        assert!(parse_metadata("filename !!!").is_err());
        assert!(parse_metadata(&format!("filename {0},filename {0}", b64("a"))).is_err());
    }

    #[test]
    fn checksums_parse_and_hash() {
        let sha1_abc = STANDARD.encode(hex_bytes("a9993e364706816aba3e25717850c26c9cd0d89d"));
        let parsed = parse_checksum(&format!("sha1 {sha1_abc}")).unwrap();
        let mut hasher = Hasher::new(parsed.algorithm);
        hasher.update(b"abc");
        assert_eq!(hasher.finish(), parsed.expected);
        assert_eq!(parse_checksum("md5 AAAA").unwrap_err().status, 400);
        assert_eq!(parse_checksum("sha256 AAAA").unwrap_err().status, 400);
    }

    #[test]
    fn expiry_dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }
}
