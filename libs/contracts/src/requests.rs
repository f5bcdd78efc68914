//! Request and response payloads of the media subjects (DESIGN §5), as callers send them.
//!
//! Unknown fields are ignored (NestJS clients often send extra ones). Where a caller may act for
//! another user, `userId` is read here but honoured by the service only for admin and service
//! callers (DESIGN §6).

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::media::{MediaStatus, MediaType};

/// A field of a partial update: absent = keep, `null` = clear, value = set.
pub type Patch<T> = Option<Option<T>>;

fn patch<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Patch<T>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `media.create`: register media that lives at an external URL (no bytes are stored).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateMedia {
    /// Display name (sanitised); must keep at least one usable character.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub original_name: String,
    /// `type/subtype`, at most 255 characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[^/]+/.+$", max_length = 255))]
    pub mime_type: String,
    /// Bytes.
    pub size: u64,
    /// An `http(s)://` URL or an absolute path (`/...`), at most 2048 characters.
    #[cfg_attr(feature = "openapi", schema(pattern = "^(https?://|/)", max_length = 2048))]
    pub url: String,
    #[serde(default, rename = "type")]
    pub media_type: Option<MediaType>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Caller-supplied JSON, stored as given (size-limited).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub is_public: Option<bool>,
    /// Default `READY`; `DELETED` is refused (400).
    #[serde(default)]
    pub status: Option<MediaStatus>,
}

/// Filters shared by the listing subjects (`media.findAll` and, flattened, the others).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// 1..=100, default 20.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default, rename = "type")]
    pub media_type: Option<MediaType>,
    /// Default: everything but DELETED; `DELETED` is for admins.
    #[serde(default)]
    pub status: Option<MediaStatus>,
    #[serde(default)]
    pub is_public: Option<bool>,
    /// Case-insensitive substring of `originalName`.
    #[serde(default)]
    pub q: Option<String>,
    /// `createdAt:desc` (default, also `-createdAt`) or `createdAt:asc` (also `createdAt`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(schema_with = sort_schema))]
    pub sort: Option<String>,
}

/// OpenAPI: the values `sort` accepts.
#[cfg(feature = "openapi")]
fn sort_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["createdAt:desc", "-createdAt", "createdAt:asc", "createdAt"]))
        .default(Some("createdAt:desc".into()))
        .build()
}

/// `media.findAll`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindAll {
    #[serde(flatten)]
    pub query: ListQuery,
    /// For service callers: the user to act for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `media.findByUser`: media owned by `userId`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindByUser {
    pub user_id: String,
    #[serde(flatten)]
    pub query: ListQuery,
}

/// `media.findByEntity`: media linked to an entity.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FindByEntity {
    pub entity_id: String,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(flatten)]
    pub query: ListQuery,
    /// For service callers: the user to act for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `media.findOne` and `media.remove`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaRef {
    pub id: String,
    /// For service callers: the user to act for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `media.update`: only the fields present change.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateMedia {
    pub id: String,
    #[serde(default)]
    pub original_name: Option<String>,
    #[serde(default, deserialize_with = "patch")]
    pub metadata: Patch<Value>,
    #[serde(default)]
    pub is_public: Option<bool>,
    #[serde(default, deserialize_with = "patch")]
    pub entity_id: Patch<String>,
    #[serde(default, deserialize_with = "patch")]
    pub entity_type: Patch<String>,
    /// For service callers: the user to act for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// File bytes inside JSON: a base64 string (RFC 4648, standard alphabet, padding optional) or the
/// NestJS/Node `Buffer` form `{"type":"Buffer","data":[137,80,...]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for FileBytes {
    /// Decoded straight from the input by a visitor: no intermediate `serde` `Content` tree
    /// (an untagged enum would buffer the `Buffer` form's array at ~32 bytes per file byte).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FileBytesVisitor)
    }
}

/// The two wire forms of [`FileBytes`], read without buffering.
struct FileBytesVisitor;

impl<'de> serde::de::Visitor<'de> for FileBytesVisitor {
    type Value = FileBytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string or {\"type\":\"Buffer\",\"data\":[...]}")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileBytes, E> {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .map(FileBytes)
            .map_err(|e| E::custom(format!("invalid base64: {e}")))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileBytes, A::Error> {
        let (mut kind, mut data) = (None::<String>, None::<Vec<u8>>);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "type" => kind = Some(map.next_value()?),
                // Each number straight into the byte vector.
                "data" => data = Some(map.next_value()?),
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        match (kind.as_deref(), data) {
            (Some("Buffer"), Some(data)) => Ok(FileBytes(data)),
            (Some("Buffer"), None) => Err(serde::de::Error::missing_field("data")),
            _ => Err(serde::de::Error::custom("expected \"type\":\"Buffer\"")),
        }
    }
}

/// The `file` of `upload_file`, shaped like a NestJS/multer file.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadedFile {
    pub buffer: FileBytes,
    pub originalname: String,
    /// What the client claims; only logged, the type is sniffed from the bytes.
    #[serde(default)]
    pub mimetype: Option<String>,
}

/// `upload_file`: a whole file in one message.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadFile {
    pub file: UploadedFile,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub is_public: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// For admin and service callers: the owner to upload for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `upload.create`: start a chunked upload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCreate {
    pub original_name: String,
    /// Total bytes, if known; checked at `upload.complete`.
    #[serde(default)]
    pub size: Option<u64>,
    /// What the client claims; only logged.
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub is_public: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    /// For admin and service callers: the owner to upload for.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// Reply of `upload.create`: send parts of exactly `partSize` bytes (the last may be shorter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadCreated {
    pub upload_id: String,
    /// Bytes.
    pub part_size: u64,
}

/// `upload.part` in JSON form. The binary form sends the bytes as the body with NATS headers
/// `Upload-Id` and `Part-Number`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadPart {
    pub upload_id: String,
    /// 1..=10000.
    pub part_number: u32,
    pub data: FileBytes,
}

/// Reply of `upload.part`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartAccepted {
    pub part_number: u32,
    /// Bytes.
    pub size: u64,
}

/// `upload.abort`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRef {
    pub upload_id: String,
}

/// `upload.complete`. The optional fields, when present, replace those given to `upload.create`:
/// an HTTP multipart form may carry its fields after the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadComplete {
    pub upload_id: String,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub entity_type: Option<String>,
    #[serde(default)]
    pub is_public: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Reply of `media.content` (extension): a short-lived signed grant to read the media's bytes.
/// `url` (`{base}/api/media/{id}/content?token=...`) works without an `Authorization` header
/// until `expiresAt`, so it fits `<img src>` and `<video src>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContentTicket {
    pub url: String,
    pub token: String,
    pub expires_at: crate::Timestamp,
}

/// NATS header names of the binary `upload.part` form.
pub mod headers {
    pub const UPLOAD_ID: &str = "Upload-Id";
    pub const PART_NUMBER: &str = "Part-Number";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_bytes_accept_base64_and_the_node_buffer_form() {
        let b64: FileBytes = serde_json::from_str(r#""iVBORw==""#).unwrap();
        let buffer: FileBytes = serde_json::from_str(r#"{"type":"Buffer","data":[137,80,78,71]}"#).unwrap();
        assert_eq!(b64, FileBytes(vec![137, 80, 78, 71]));
        assert_eq!(buffer, b64);
        assert!(serde_json::from_str::<FileBytes>(r#""not base64!""#).is_err());
        assert!(serde_json::from_str::<FileBytes>(r#"{"type":"Blob","data":[1]}"#).is_err());
        // Keys in any order, others ignored; bytes are 0..=255; `data` is required.
        let reordered: FileBytes = serde_json::from_str(r#"{"data":[1,2],"x":{"y":[]},"type":"Buffer"}"#).unwrap();
        assert_eq!(reordered, FileBytes(vec![1, 2]));
        assert!(serde_json::from_str::<FileBytes>(r#"{"type":"Buffer","data":[256]}"#).is_err());
        assert!(serde_json::from_str::<FileBytes>(r#"{"type":"Buffer"}"#).is_err());
        assert!(serde_json::from_str::<FileBytes>("[1,2]").is_err());
    }

    #[test]
    fn patches_tell_absent_from_null() {
        let u: UpdateMedia = serde_json::from_str(r#"{"id":"m","entityId":null,"metadata":{"a":1}}"#).unwrap();
        assert_eq!(u.entity_id, Some(None));
        assert_eq!(u.entity_type, None);
        assert_eq!(u.metadata, Some(Some(serde_json::json!({"a":1}))));
    }
}
