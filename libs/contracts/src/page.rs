//! Listing: filters, visibility and cursor pages (DESIGN §5 "Page").

use serde::{Deserialize, Serialize};

use crate::media::{Media, MediaStatus, MediaType};

/// One page of a listing: newest first, ties broken by id (descending), so the order is stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub items: Vec<Media>,
    /// How many documents match the filter in all (not just this page): exact up to 1,000; with
    /// more matches it is 1,001, meaning "more than 1,000" (stores stop counting there).
    pub total: u64,
    pub limit: u32,
    /// Opaque; pass as `cursor` to get the next page. `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Sort order of a listing by `createdAt` (then id). Default: newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Which documents the caller may see, decided by the service from the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Admin or service caller: everything (still filtered by `status`).
    All,
    /// A signed-in user: public media and their own.
    PublicOr { user_id: String },
    /// Anonymous: public media only.
    PublicOnly,
}

/// A listing query as the store executes it. All set fields must match (AND).
#[derive(Debug, Clone, PartialEq)]
pub struct ListFilter {
    pub visibility: Visibility,
    pub user_id: Option<String>,
    pub entity_id: Option<String>,
    pub entity_type: Option<String>,
    pub media_type: Option<MediaType>,
    /// `None` means "anything but DELETED".
    pub status: Option<MediaStatus>,
    pub is_public: Option<bool>,
    /// Case-insensitive substring of `originalName`.
    pub q: Option<String>,
    pub sort: SortOrder,
    /// 1..=100.
    pub limit: u32,
    /// From a previous page's `nextCursor`.
    pub cursor: Option<String>,
}

impl ListFilter {
    /// Everything visible under `visibility`, default order, 20 per page.
    pub fn new(visibility: Visibility) -> Self {
        Self {
            visibility,
            user_id: None,
            entity_id: None,
            entity_type: None,
            media_type: None,
            status: None,
            is_public: None,
            q: None,
            sort: SortOrder::NewestFirst,
            limit: 20,
            cursor: None,
        }
    }
}
