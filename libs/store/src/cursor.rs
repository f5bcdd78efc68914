//! Keyset-pagination cursors shared by both backends, so a cursor means the same everywhere.
//!
//! A cursor is URL-safe base64 (no padding) of `1|<createdAt unix millis>|<id>`: the sort key of
//! the last item of a page. The leading version lets the format change without misreading old
//! cursors. Cursors are not signed: one only says where to resume, and the filter (visibility
//! included) is applied again on every page, so a forged cursor reveals nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use mediabus_contracts::{Media, Page};

use crate::StoreError;

/// Largest page size; larger requested limits are clamped to it.
pub const MAX_LIMIT: u32 = 100;

/// `Page::total` is exact up to this many matches; above it a listing reports `TOTAL_CAP + 1`,
/// meaning "more than `TOTAL_CAP`". Counting stops there, so a page costs the same at a thousand
/// matches as at millions (an unbounded `COUNT(*)` walks every match on every page). 1,000, not
/// 10,000 (issue 13): even read from an index alone, counting 10,001 entries took ~0.5 ms, several
/// times the rest of a page, so `media.findAll` grew 2.4x from 10 thousand to 1 million documents.
pub const TOTAL_CAP: u64 = 1_000;

/// Cursors longer than this are rejected before decoding (ids are ~24 characters).
const MAX_CURSOR_LEN: usize = 512;

/// A requested page size clamped to `1..=MAX_LIMIT` (0 becomes 1).
pub fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_LIMIT)
}

/// The sort key a page resumes after: (`createdAt` in unix millis, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CursorKey {
    pub created_at_millis: i64,
    pub id: String,
}

impl CursorKey {
    pub(crate) fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("1|{}|{}", self.created_at_millis, self.id))
    }

    /// [`StoreError::InvalidCursor`] for anything [`CursorKey::encode`] did not produce.
    pub(crate) fn decode(cursor: &str) -> Result<Self, StoreError> {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(StoreError::InvalidCursor);
        }
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| StoreError::InvalidCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
        let mut parts = text.splitn(3, '|');
        let (Some("1"), Some(millis), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(StoreError::InvalidCursor);
        };
        let created_at_millis = millis.parse().map_err(|_| StoreError::InvalidCursor)?;
        if id.is_empty() {
            return Err(StoreError::InvalidCursor);
        }
        Ok(Self { created_at_millis, id: id.to_owned() })
    }
}

/// The page of a listing that fetched `limit + 1` rows: the extra row, if any, only says that a
/// next page exists, and the last kept item becomes its cursor.
pub(crate) fn page_from_overfetch(mut items: Vec<Media>, total: u64, limit: u32) -> Page {
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|m| CursorKey { created_at_millis: m.created_at.unix_millis(), id: m.id.clone() }.encode())
    } else {
        None
    };
    Page { items, total, limit, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_is_url_safe() {
        let key = CursorKey { created_at_millis: 1_763_700_000_123, id: "ckz9|odd id/+".into() };
        let text = key.encode();
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{text}");
        assert_eq!(CursorKey::decode(&text).unwrap(), key);
    }

    #[test]
    fn foreign_cursors_are_rejected() {
        for bad in [
            "",
            "!!!",
            "bm9wZQ",
            &URL_SAFE_NO_PAD.encode("2|1|x"),
            &URL_SAFE_NO_PAD.encode("1|x|y"),
            &URL_SAFE_NO_PAD.encode("1|5|"),
            &"A".repeat(600),
        ] {
            assert_eq!(CursorKey::decode(bad), Err(StoreError::InvalidCursor), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(clamp_limit(0), 1);
        assert_eq!(clamp_limit(20), 20);
        assert_eq!(clamp_limit(1000), MAX_LIMIT);
    }
}
