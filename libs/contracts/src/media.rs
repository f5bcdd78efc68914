//! The Media document (DESIGN §4).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Kind of media, derived from the sniffed content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
    Other,
}

impl MediaType {
    /// The wire name (`IMAGE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "IMAGE",
            Self::Video => "VIDEO",
            Self::Audio => "AUDIO",
            Self::Document => "DOCUMENT",
            Self::Other => "OTHER",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Image, Self::Video, Self::Audio, Self::Document, Self::Other].into_iter().find(|t| t.as_str() == s)
    }

    /// The type of a MIME type: `image/*` → IMAGE, `video/*` → VIDEO, `audio/*` → AUDIO, PDF and
    /// office/text formats → DOCUMENT, anything else → OTHER.
    pub fn from_mime(mime: &str) -> Self {
        let (top, sub) = mime.split_once('/').unwrap_or((mime, ""));
        match top {
            "image" => Self::Image,
            "video" => Self::Video,
            "audio" => Self::Audio,
            "text" => Self::Document,
            "application"
                if sub == "pdf"
                    || sub == "rtf"
                    || sub == "msword"
                    || sub == "epub+zip"
                    || sub.starts_with("vnd.openxmlformats-officedocument")
                    || sub.starts_with("vnd.oasis.opendocument")
                    || sub.starts_with("vnd.ms-") =>
            {
                Self::Document
            }
            _ => Self::Other,
        }
    }
}

/// Lifecycle of a media document. `DELETED` is a soft delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum MediaStatus {
    Processing,
    #[default]
    Ready,
    Failed,
    Deleted,
}

impl MediaStatus {
    /// The wire name (`READY`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "PROCESSING",
            Self::Ready => "READY",
            Self::Failed => "FAILED",
            Self::Deleted => "DELETED",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Processing, Self::Ready, Self::Failed, Self::Deleted].into_iter().find(|t| t.as_str() == s)
    }
}

/// A UTC instant, on the wire as RFC 3339 with millisecond precision: `2026-11-21T14:03:07.123Z`.
/// That form has a fixed width, so its text order is its time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Now, truncated to milliseconds (what storage keeps).
    pub fn now() -> Self {
        Self::from_unix_millis(OffsetDateTime::now_utc().unix_timestamp_nanos().div_euclid(1_000_000) as i64)
    }

    /// From milliseconds since the Unix epoch (out-of-range values clamp to the epoch).
    pub fn from_unix_millis(millis: i64) -> Self {
        let nanos = i128::from(millis) * 1_000_000;
        Self(OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Parses RFC 3339 (any offset, any precision; kept to the millisecond).
    pub fn parse(s: &str) -> Option<Self> {
        let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        Some(Self::from_unix_millis((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    /// The canonical text: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub fn to_rfc3339(self) -> String {
        let t = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Every reply carries two timestamps: written into a stack buffer, not through `format!`
        // (measured: the formatting machinery was over half the cost of serializing a Media).
        let t = self.0;
        let Ok(year) = u16::try_from(t.year()) else { return s.serialize_str(&self.to_rfc3339()) };
        if year > 9999 {
            return s.serialize_str(&self.to_rfc3339());
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year.into());
        put(5, 2, u8::from(t.month()).into());
        put(8, 2, t.day().into());
        put(11, 2, t.hour().into());
        put(14, 2, t.minute().into());
        put(17, 2, t.second().into());
        put(20, 3, t.millisecond().into());
        // Only ASCII digits and separators were written.
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// OpenAPI: a `date-time` string (the schema `Timestamp`).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC instant, RFC 3339 with milliseconds: `2026-11-21T14:03:07.123Z`"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// A generated rendition of a media item (thumbnail, transcode, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Variant {
    pub name: String,
    pub url: String,
    #[serde(rename = "mimeType")]
    pub mime_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Bytes.
    pub size: u64,
}

/// The Media document as callers see it (JSON names fixed by DESIGN §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Media {
    /// cuid2, generated by the service ([`new_media_id`]).
    pub id: String,
    #[serde(rename = "type")]
    pub media_type: MediaType,
    /// As uploaded, sanitised for display; never used as a storage path.
    pub original_name: String,
    /// Sniffed from the bytes for uploads.
    pub mime_type: String,
    /// Bytes.
    pub size: u64,
    /// `/api/media/{id}/content` for stored files, or the URL given to `media.create`.
    pub url: String,
    /// Owner.
    pub user_id: String,
    pub entity_id: Option<String>,
    pub entity_type: Option<String>,
    /// Caller-supplied JSON, stored as given.
    pub metadata: Option<Value>,
    pub is_public: bool,
    pub status: MediaStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// `sha256:<hex>` of the stored bytes; `None` for media registered by URL.
    pub checksum: Option<String>,
    /// Extracted technical data (width, height, durationMs, frames, codecs, pageCount).
    pub details: Option<Value>,
    pub variants: Vec<Variant>,
    /// Why processing failed, readable by the owner, when `status` is `FAILED` (DESIGN §9);
    /// `null` otherwise. Absent in documents written before it existed: read as `None`.
    #[serde(default)]
    pub failure_reason: Option<String>,
}

/// A Media document plus what only the service sees: where its bytes are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRecord {
    pub media: Media,
    /// Blob-store key of the bytes; `None` for media registered by URL (`media.create`).
    pub storage_key: Option<String>,
}

/// A new cuid2 id (lowercase letter then 23 base-36 characters).
pub fn new_media_id() -> String {
    cuid2::create_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc_millis() {
        let t = Timestamp::parse("2026-01-02T03:04:05.6789+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T02:04:05.678Z");
        assert_eq!(Timestamp::from_unix_millis(t.unix_millis()), t);
    }

    #[test]
    fn serialized_timestamps_are_the_canonical_text() {
        for millis in [0, 1, 999, 1_763_733_787_123, 253_402_300_799_999, -1, -62_135_596_800_001] {
            let t = Timestamp::from_unix_millis(millis);
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::Value::String(t.to_rfc3339()), "{millis}");
        }
    }

    #[test]
    fn mime_types_map_to_media_types() {
        assert_eq!(MediaType::from_mime("image/png"), MediaType::Image);
        assert_eq!(MediaType::from_mime("video/mp4"), MediaType::Video);
        assert_eq!(MediaType::from_mime("audio/mpeg"), MediaType::Audio);
        assert_eq!(MediaType::from_mime("application/pdf"), MediaType::Document);
        assert_eq!(MediaType::from_mime("application/x-executable"), MediaType::Other);
    }

    #[test]
    fn media_serializes_with_contract_names() {
        let now = Timestamp::parse("2026-11-21T00:00:00Z").unwrap();
        let media = Media {
            id: new_media_id(),
            media_type: MediaType::Image,
            original_name: "a.png".into(),
            mime_type: "image/png".into(),
            size: 3,
            url: "/api/media/x/content".into(),
            user_id: "u1".into(),
            entity_id: None,
            entity_type: None,
            metadata: None,
            is_public: false,
            status: MediaStatus::Ready,
            created_at: now,
            updated_at: now,
            checksum: None,
            details: None,
            variants: vec![],
            failure_reason: None,
        };
        let json = serde_json::to_value(&media).unwrap();
        for key in [
            "id",
            "type",
            "originalName",
            "mimeType",
            "size",
            "url",
            "userId",
            "entityId",
            "entityType",
            "metadata",
            "isPublic",
            "status",
            "createdAt",
            "updatedAt",
            "checksum",
            "details",
            "variants",
            "failureReason",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["createdAt"], "2026-11-21T00:00:00.000Z");
        assert_eq!(serde_json::from_value::<Media>(json.clone()).unwrap(), media);
        let mut old = json;
        old.as_object_mut().unwrap().remove("failureReason");
        assert_eq!(serde_json::from_value::<Media>(old).unwrap(), media, "a document without failureReason reads");
    }
}
