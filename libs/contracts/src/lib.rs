//! Wire types of the mediabus subjects (DESIGN §4 and §5): what callers send and receive, with
//! the JSON names fixed by the contract. Storage crates persist these; services validate into them.

pub mod auth;
pub mod jobs;
pub mod lifecycle;
mod media;
mod page;
pub mod requests;
pub mod variants;

pub use media::{Media, MediaRecord, MediaStatus, MediaType, Timestamp, Variant, new_media_id};
pub use page::{ListFilter, Page, SortOrder, Visibility};

/// Subject names (NestJS message patterns) served by the media service.
pub mod subjects {
    pub const MEDIA_CREATE: &str = "media.create";
    pub const MEDIA_FIND_ALL: &str = "media.findAll";
    pub const MEDIA_FIND_BY_USER: &str = "media.findByUser";
    pub const MEDIA_FIND_BY_ENTITY: &str = "media.findByEntity";
    pub const MEDIA_FIND_ONE: &str = "media.findOne";
    pub const MEDIA_UPDATE: &str = "media.update";
    pub const MEDIA_REMOVE: &str = "media.remove";
    /// Extension: a signed, short-lived grant to read a media's bytes (the bridge serves them).
    pub const MEDIA_CONTENT: &str = "media.content";
    /// Queues the processing job of a stored media again (DESIGN §9): owner or admin.
    pub const MEDIA_REPROCESS: &str = "media.reprocess";
    pub const UPLOAD_FILE: &str = "upload_file";
    pub const UPLOAD_CREATE: &str = "upload.create";
    pub const UPLOAD_PART: &str = "upload.part";
    pub const UPLOAD_COMPLETE: &str = "upload.complete";
    pub const UPLOAD_ABORT: &str = "upload.abort";
    /// Events (NestJS event packets), also captured in JetStream.
    pub const MEDIA_CREATED: &str = "media.created";
    pub const MEDIA_UPDATED: &str = "media.updated";
    pub const MEDIA_REMOVED: &str = "media.removed";
    pub const MEDIA_PROCESSED: &str = "media.processed";
    /// Lifecycle (DESIGN §14, `crate::lifecycle`). Integration events other services emit (no
    /// reply; only NATS permissions decide who may publish them): a user / an entity was deleted.
    pub const USER_DELETED: &str = "user.deleted";
    pub const ENTITY_DELETED: &str = "entity.deleted";
    /// Admin: purges a removed media's bytes and variants now → Media.
    pub const MEDIA_PURGE: &str = "media.purge";
    /// Owner or admin: `{id}` → `{id, views, downloads}`.
    pub const MEDIA_STATS: &str = "media.stats";
    /// From the HTTP bridge only: a batch of view/download counts to add → `{}`.
    pub const MEDIA_ANALYTICS: &str = "media.analytics";
    /// Self or admin: `{userId}` → `{bytes, count, openUploads, quotaBytes, quotaCount,
    /// quotaOpenUploads}` ([`crate::lifecycle::Usage`], DESIGN §14 quotas).
    pub const MEDIA_USAGE: &str = "media.usage";
}
