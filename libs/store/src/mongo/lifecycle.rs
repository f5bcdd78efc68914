//! [`LifecycleStore`] on MongoDB.
//!
//! Collections:
//! - `media` (see `mongo.rs`), with indexes `media_storage_key` (`storageKey`) for the orphan
//!   sweeper's lookups and `media_purge_due` (`status, updatedAt`) for retention;
//! - `leases`: `{_id: lease name, holder, expiresAt: unix millis (Int64)}`;
//! - `media_stats`: `{_id: media id, views, downloads}` (Int64), changed with `$inc` only, so
//!   `MediaStore::update` (a whole-document replace of `media`) never touches the counters.
//!
//! No multi-document transactions: each media is changed by a replace conditional on its status
//! (and storage key), so racing workers claim disjoint media. Times the store compares itself are
//! written inside whole documents or as integers, never `$set` dates (nx-27017 stores those as
//! text, see `mongo/users.rs`).

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt as _;
use mediabus_contracts::lifecycle::MediaStats;
use mediabus_contracts::{MediaRecord, MediaStatus, Timestamp};
use mongodb::Collection;
use mongodb::bson::{Bson, Document, doc};

use super::{
    MongoStore, backend, date, get_opt_int, get_opt_str, index, is_duplicate_key, media_from_doc, media_to_doc, to_i64,
};
use crate::lifecycle::{clamp_batch, lease_end};
use crate::{LifecycleStore, RemovalScope, StoreError, StoredUsage};

const DELETED: &str = "DELETED";

impl MongoStore {
    fn leases(&self) -> Collection<Document> {
        self.db.collection("leases")
    }

    fn media_stats(&self) -> Collection<Document> {
        self.db.collection("media_stats")
    }

    /// The indexes of the lifecycle queries (a no-op when they exist).
    pub(super) async fn create_lifecycle_indexes(&self) -> Result<(), StoreError> {
        self.media
            .create_indexes([
                index("media_storage_key", doc! { "storageKey": 1 }, false),
                index("media_purge_due", doc! { "status": 1, "updatedAt": 1 }, false),
            ])
            .await
            .map_err(backend)?;
        self.uploads
            .create_index(index("uploads_storage_key", doc! { "storageKey": 1 }, false))
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The documents `filter` finds, as records, in `sort` order, at most `limit`.
    async fn find_records(&self, filter: Document, sort: Document, limit: u32) -> Result<Vec<MediaRecord>, StoreError> {
        let docs: Vec<Document> = self
            .media
            .find(filter)
            .sort(sort)
            .limit(i64::from(limit))
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        docs.iter().map(media_from_doc).collect()
    }

    /// The string values of `field` in the documents of `collection` matching `filter`.
    async fn strings(
        &self,
        collection: &Collection<Document>,
        filter: Document,
        field: &str,
    ) -> Result<HashSet<String>, StoreError> {
        let docs: Vec<Document> = collection
            .find(filter)
            .projection(doc! { field: 1 })
            .await
            .map_err(backend)?
            .try_collect()
            .await
            .map_err(backend)?;
        let mut out = HashSet::new();
        for d in &docs {
            if let Some(value) = get_opt_str(d, field)? {
                out.insert(value);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl LifecycleStore for MongoStore {
    async fn remove_batch(
        &self,
        scope: &RemovalScope,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<MediaRecord>, StoreError> {
        let mut filter = match scope {
            RemovalScope::User { user_id } => doc! { "userId": user_id },
            RemovalScope::Entity { entity_type, entity_id } => {
                doc! { "entityId": entity_id, "entityType": entity_type }
            }
        };
        filter.insert("status", doc! { "$ne": DELETED });
        // Racing cascades (the same event twice, or a user and an entity scope overlapping) can
        // take every candidate of a read; an empty answer would end the caller's loop while media
        // remain. So read again until something is changed here or nothing is left: each
        // fruitless round means another caller marked those candidates DELETED, so this ends.
        loop {
            let candidates = self.find_records(filter.clone(), doc! { "_id": 1 }, clamp_batch(limit)).await?;
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            let mut removed = Vec::with_capacity(candidates.len());
            for mut record in candidates {
                record.media.status = MediaStatus::Deleted;
                record.media.updated_at = crate::later_than(record.media.updated_at, now);
                // Conditional: a racing worker that removed it first keeps it.
                let replaced = self
                    .media
                    .replace_one(doc! { "_id": &record.media.id, "status": { "$ne": DELETED } }, media_to_doc(&record)?)
                    .await
                    .map_err(backend)?;
                if replaced.matched_count == 1 {
                    removed.push(record);
                }
            }
            if !removed.is_empty() {
                return Ok(removed);
            }
        }
    }

    async fn due_for_purge(&self, removed_before: Timestamp, limit: u32) -> Result<Vec<MediaRecord>, StoreError> {
        let filter = doc! {
            "status": DELETED,
            "storageKey": { "$ne": Bson::Null },
            "updatedAt": { "$lte": date(removed_before) },
        };
        self.find_records(filter, doc! { "updatedAt": 1, "_id": 1 }, clamp_batch(limit)).await
    }

    async fn claim_purge(&self, id: &str, now: Timestamp) -> Result<Option<MediaRecord>, StoreError> {
        let found = self
            .media
            .find_one(doc! { "_id": id, "status": DELETED, "storageKey": { "$ne": Bson::Null } })
            .await
            .map_err(backend)?;
        let Some(before) = found.as_ref().map(media_from_doc).transpose()? else {
            return Ok(None);
        };
        let Some(key) = before.storage_key.clone() else { return Ok(None) };
        let mut purged = before.clone();
        purged.storage_key = None;
        purged.media.variants.clear();
        purged.media.updated_at = crate::later_than(before.media.updated_at, now);
        // Conditional on the key we read: of racing claims only the first replace matches.
        let replaced = self
            .media
            .replace_one(doc! { "_id": id, "status": DELETED, "storageKey": key }, media_to_doc(&purged)?)
            .await
            .map_err(backend)?;
        Ok((replaced.matched_count == 1).then_some(before))
    }

    async fn referenced_keys(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let filter = doc! { "storageKey": { "$in": keys } };
        let mut found = self.strings(&self.media, filter.clone(), "storageKey").await?;
        found.extend(self.strings(&self.uploads, filter, "storageKey").await?);
        Ok(found)
    }

    async fn live_backend_uploads(&self, now: Timestamp) -> Result<HashSet<String>, StoreError> {
        self.strings(&self.uploads, doc! { "expiresAt": { "$gt": date(now) } }, "backendUploadId").await
    }

    async fn try_lease(&self, name: &str, holder: &str, now: Timestamp, ttl: Duration) -> Result<bool, StoreError> {
        let lease = doc! { "_id": name, "holder": holder, "expiresAt": lease_end(now, ttl).unix_millis() };
        match self.leases().insert_one(lease.clone()).await {
            Ok(_) => return Ok(true),
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(backend(e)),
        }
        // Taken: take it over only if it expired or is ours (one conditional replace).
        let filter = doc! {
            "_id": name,
            "$or": [ { "expiresAt": { "$lte": now.unix_millis() } }, { "holder": holder } ],
        };
        let replaced = self.leases().replace_one(filter, lease).await.map_err(backend)?;
        Ok(replaced.matched_count == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.leases().delete_one(doc! { "_id": name, "holder": holder }).await.map(drop).map_err(backend)
    }

    async fn add_counts(&self, counts: &[MediaStats]) -> Result<(), StoreError> {
        for c in counts.iter().filter(|c| c.views > 0 || c.downloads > 0) {
            let inc =
                doc! { "$inc": { "views": to_i64(c.views, "views")?, "downloads": to_i64(c.downloads, "downloads")? } };
            // Two first counts of one media can race to insert; the loser's upsert fails on `_id`
            // and one more try increments the winner's document.
            let mut tries = 0;
            loop {
                match self.media_stats().update_one(doc! { "_id": &c.id }, inc.clone()).upsert(true).await {
                    Ok(_) => break,
                    Err(e) if is_duplicate_key(&e) && tries == 0 => tries += 1,
                    Err(e) => return Err(backend(e)),
                }
            }
        }
        Ok(())
    }

    async fn stats(&self, id: &str) -> Result<MediaStats, StoreError> {
        let found = self.media_stats().find_one(doc! { "_id": id }).await.map_err(backend)?;
        let count = |field: &str| -> Result<u64, StoreError> {
            let n = match &found {
                Some(d) => get_opt_int(d, field)?.unwrap_or(0),
                None => 0,
            };
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(MediaStats { id: id.to_owned(), views: count("views")?, downloads: count("downloads")? })
    }

    async fn usage(&self, user_id: &str, now: Timestamp) -> Result<StoredUsage, StoreError> {
        // Summed here from a cursor of sizes only (bounded memory), not with `$group`, which the
        // test server (nx-27017) may not implement; index `media_user` selects the user's media.
        let mut sizes = self
            .media
            .find(doc! { "userId": user_id, "status": { "$ne": DELETED } })
            .projection(doc! { "size": 1 })
            .await
            .map_err(backend)?;
        let mut usage = StoredUsage::default();
        while let Some(d) = sizes.try_next().await.map_err(backend)? {
            usage.bytes += u64::try_from(get_opt_int(&d, "size")?.unwrap_or(0)).unwrap_or(0);
            usage.count += 1;
        }
        let open = doc! { "userId": user_id, "expiresAt": { "$gt": date(now) } };
        usage.open_uploads = self.uploads.count_documents(open).await.map_err(backend)?;
        Ok(usage)
    }
}
