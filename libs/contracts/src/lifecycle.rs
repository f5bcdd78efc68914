//! Wire types of the media lifecycle (DESIGN §14): the integration events other services emit
//! (`user.deleted`, `entity.deleted`), the admin purge, view/download statistics and the batches
//! of counts the HTTP bridge flushes to the media service. Subject names are in
//! [`crate::subjects`].

use serde::{Deserialize, Serialize};

/// `user.deleted` (event, no reply): every media owned by `userId` is removed (soft, `DELETED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDeleted {
    pub user_id: String,
}

/// `entity.deleted` (event, no reply): every media linked to `(entityType, entityId)` is removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityDeleted {
    pub entity_type: String,
    pub entity_id: String,
}

/// `media.stats` → `{id, views, downloads}`, and one entry of an [`AnalyticsBatch`] (counts to add).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MediaStats {
    /// The media id.
    pub id: String,
    /// Fetches of a variant (thumb, preview) or of the HLS master playlist.
    pub views: u64,
    /// Fetches of the original's bytes, whole or from byte 0.
    pub downloads: u64,
}

/// `media.analytics` (request, from the HTTP bridge only): counts gathered since the last flush,
/// at most one entry per media id, to add to the stored counters. Reply: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsBatch {
    pub counts: Vec<MediaStats>,
}

/// Largest number of entries the media service accepts in one [`AnalyticsBatch`] (the bridge
/// splits bigger flushes).
pub const MAX_ANALYTICS_BATCH: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_camel_case() {
        let event: EntityDeleted = serde_json::from_str(r#"{"entityType":"course","entityId":"c1"}"#).unwrap();
        assert_eq!(event, EntityDeleted { entity_type: "course".into(), entity_id: "c1".into() });
        let user: UserDeleted = serde_json::from_str(r#"{"userId":"u1"}"#).unwrap();
        assert_eq!(user.user_id, "u1");
        let batch = AnalyticsBatch { counts: vec![MediaStats { id: "m".into(), views: 2, downloads: 1 }] };
        assert_eq!(serde_json::to_string(&batch).unwrap(), r#"{"counts":[{"id":"m","views":2,"downloads":1}]}"#);
    }
}

/// `media.usage` request: whose usage (the caller's own, or anyone's for an admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRequest {
    /// The user whose media are counted.
    pub user_id: String,
}

/// `media.usage` reply (`GET /api/users/{userId}/usage`): what a user stores against the quotas
/// (DESIGN §14). Media with status `DELETED` do not count; a quota of 0 means none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Bytes of the originals of the user's media (variants not counted).
    pub bytes: u64,
    /// The user's media.
    pub count: u64,
    /// The user's chunked uploads not yet completed, aborted or expired.
    pub open_uploads: u64,
    /// Most bytes the user may store (0: no limit).
    pub quota_bytes: u64,
    /// Most media the user may have (0: no limit).
    pub quota_count: u64,
    /// Most chunked uploads the user may have open at once (0: no limit).
    pub quota_open_uploads: u64,
}
