//! Content rules: the real type comes from the bytes (magic numbers, via `infer`), never from the
//! client; an allow-list and a size cap per media type decide what is accepted.

use std::collections::HashSet;

use mediabus_contracts::MediaType;

use crate::config::MediaSettings;
use crate::error::{MediaError, Result};

/// How many leading bytes sniffing needs (the longest `infer` signature is well under this).
pub const SNIFF_BYTES: usize = 8192;

/// A content type read from the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub mime_type: String,
    pub media_type: MediaType,
}

/// Types the bytes as `infer` recognises them; unknown content is `application/octet-stream`.
pub fn sniff(head: &[u8]) -> Sniffed {
    let mime_type = infer::get(head).map_or("application/octet-stream", |t| t.mime_type()).to_owned();
    let media_type = MediaType::from_mime(&mime_type);
    Sniffed { mime_type, media_type }
}

/// The allow-list and the size caps, from configuration.
#[derive(Debug, Clone)]
pub struct ContentRules {
    allowed: HashSet<String>,
    settings: MediaSettings,
}

impl ContentRules {
    pub fn new(settings: &MediaSettings) -> Self {
        Self { allowed: settings.allowed_types.iter().cloned().collect(), settings: settings.clone() }
    }

    /// Largest file accepted for `media_type`, in bytes.
    pub fn max_bytes(&self, media_type: MediaType) -> u64 {
        let s = &self.settings;
        match media_type {
            MediaType::Image => s.max_image_bytes,
            MediaType::Video => s.max_video_bytes,
            MediaType::Audio => s.max_audio_bytes,
            MediaType::Document => s.max_document_bytes,
            MediaType::Other => s.max_other_bytes,
        }
    }

    /// Largest file of any accepted type (the bound for an upload whose type is not known yet).
    pub fn max_any(&self) -> u64 {
        [MediaType::Image, MediaType::Video, MediaType::Audio, MediaType::Document, MediaType::Other]
            .into_iter()
            .map(|t| self.max_bytes(t))
            .max()
            .unwrap_or(0)
    }

    /// Errors: 400 for an empty file, 415 for a type off the allow-list, 413 past the type's cap.
    pub fn check(&self, sniffed: &Sniffed, size: u64) -> Result<()> {
        if size == 0 {
            return Err(MediaError::EmptyFile);
        }
        if !self.allowed.contains(&sniffed.mime_type) {
            return Err(MediaError::UnsupportedType(sniffed.mime_type.clone()));
        }
        let limit = self.max_bytes(sniffed.media_type);
        if size > limit {
            return Err(MediaError::TooLarge { limit });
        }
        Ok(())
    }

    /// Errors: 400 when `metadata` is neither an object nor `null` (DESIGN §4), or serializes
    /// to more than `metadata_max_bytes`.
    pub fn check_metadata(&self, metadata: Option<&serde_json::Value>) -> Result<()> {
        if metadata.is_some_and(|m| !m.is_object() && !m.is_null()) {
            return Err(MediaError::Invalid("metadata must be an object or null".into()));
        }
        let len = metadata.map_or(0, |m| m.to_string().len());
        if len > self.settings.metadata_max_bytes {
            return Err(MediaError::Invalid(format!("metadata exceeds {} bytes", self.settings.metadata_max_bytes)));
        }
        Ok(())
    }
}

/// Makes a client file name safe to display: the last path component only, control and
/// bidi-override characters removed, white space collapsed, at most 255 characters.
/// Never used to build a storage path. Errors: 400 when nothing printable remains.
pub fn sanitize_name(name: &str) -> Result<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cleaned: String = cleaned.chars().take(255).collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Err(MediaError::Invalid("originalName has no usable characters".into()));
    }
    Ok(cleaned)
}

/// Checks a free-text id field (`entityId`, `entityType`, `userId`): 1..=128 characters, no
/// control characters. Errors: 400 naming the field.
pub fn check_id(field: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().count() > 128 || value.chars().any(char::is_control) {
        return Err(MediaError::Invalid(format!("{field} must be 1 to 128 printable characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_name("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(sanitize_name("C:\\Users\\me\\cat  pic\u{0007}.png").unwrap(), "cat pic.png");
        assert_eq!(sanitize_name("evil\u{202E}gnp.exe").unwrap(), "evilgnp.exe");
        assert!(sanitize_name("/").is_err());
    }

    #[test]
    fn bytes_decide_the_type() {
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D];
        assert_eq!(sniff(&png).mime_type, "image/png");
        let elf = [0x7F, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0];
        assert_eq!(sniff(&elf).media_type, MediaType::Other);
    }
}
