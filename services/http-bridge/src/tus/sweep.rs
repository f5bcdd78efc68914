//! The sweep of expired tus state: every `tus.sweep_interval_secs`, each bridge lists `tus/` in
//! the file store and removes the state of uploads past `Upload-Expires` (deletes are idempotent,
//! so bridges sweeping at once do no harm). The parts at the media service need the owner's token
//! to abort; without one, its own upload TTL sweep (`upload.upload_ttl_secs`, longer than
//! `tus.expiry_secs`) removes them. An upload touched after expiry is removed on the spot instead,
//! parts included (see `owned` in the parent module).

use std::time::{Duration, SystemTime};

use mediabus_storage::{BlobStore, ListedObject, MAX_LIST_LIMIT, StorageError};

use super::protocol::now_ms;
use super::state;

/// A pending object not named by the current offset is a request that lost a race (or crashed
/// before cleaning up); one this old is not still being committed.
const STALE_PENDING: Duration = Duration::from_secs(600);

/// Runs [`sweep_once`] every `every`, for ever; failures are logged and retried next time.
pub async fn run(blobs: std::sync::Arc<dyn BlobStore>, every: Duration, expiry: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        match sweep_once(blobs.as_ref(), expiry).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "swept expired tus uploads"),
            Err(e) => tracing::warn!(error = %e, "tus sweep failed"),
        }
    }
}

/// One pass over `tus/`: removes the state of expired uploads, stale pending objects, and objects
/// without an `info.json` older than `expiry` (leftovers of a removal or creation that failed
/// midway). Returns how many objects were deleted.
pub async fn sweep_once(blobs: &dyn BlobStore, expiry: Duration) -> Result<usize, StorageError> {
    let mut removed = 0;
    let mut after: Option<String> = None;
    let mut group: Vec<ListedObject> = Vec::new();
    loop {
        let page = blobs.list("tus/", after.as_deref(), MAX_LIST_LIMIT).await?;
        let full = page.len() == MAX_LIST_LIMIT as usize;
        after = page.last().map(|o| o.key.clone());
        for object in page {
            // Keys of one upload (`tus/<id>/...`) are listed together.
            if group.first().is_some_and(|first| upload_id_of(&first.key) != upload_id_of(&object.key)) {
                removed += sweep_upload(blobs, std::mem::take(&mut group), expiry).await?;
            }
            group.push(object);
        }
        if !full {
            break;
        }
    }
    if !group.is_empty() {
        removed += sweep_upload(blobs, group, expiry).await?;
    }
    Ok(removed)
}

fn upload_id_of(key: &str) -> &str {
    key.split('/').nth(1).unwrap_or_default()
}

/// The objects of one upload.
async fn sweep_upload(
    blobs: &dyn BlobStore,
    objects: Vec<ListedObject>,
    expiry: Duration,
) -> Result<usize, StorageError> {
    let id = upload_id_of(&objects[0].key).to_owned();
    let older_than = |age: Duration| {
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        move |o: &&ListedObject| o.last_modified <= cutoff
    };
    let info_key = state::info_key(&id);
    let info = if objects.iter().any(|o| o.key == info_key) {
        match state::load(blobs, &id).await {
            Ok(Some(info)) => Some(info),
            // Unreadable (or the store failed): leave it, for the operator or the next pass.
            _ => return Ok(0),
        }
    } else {
        None
    };
    let doomed: Vec<&ListedObject> = match &info {
        Some(info) if info.expires_at_ms <= now_ms() => {
            // Pending bytes first, info.json last: a sweep cut short leaves a state that is still
            // expired, found again next time.
            let mut all: Vec<&ListedObject> = objects.iter().filter(|o| o.key != info_key).collect();
            all.extend(objects.iter().filter(|o| o.key == info_key));
            all
        }
        Some(info) => {
            let current = info.pending_key();
            objects
                .iter()
                .filter(|o| o.key != info_key && Some(&o.key) != current.as_ref())
                .filter(older_than(STALE_PENDING))
                .collect()
        }
        None => objects.iter().filter(older_than(expiry)).collect(),
    };
    for object in &doomed {
        blobs.delete(&object.key).await?;
    }
    Ok(doomed.len())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mediabus_storage::{LocalStore, body_from_bytes};

    use super::*;
    use crate::tus::state::{TusInfo, pending_key, save};

    fn info(id: &str, expires_at_ms: u64) -> TusInfo {
        TusInfo {
            id: id.into(),
            user_id: "alice".into(),
            upload_id: "u1".into(),
            part_size: 10,
            length: 100,
            offset: 13,
            metadata: String::new(),
            created_at_ms: 0,
            expires_at_ms,
            media_id: None,
        }
    }

    async fn keys(store: &LocalStore) -> Vec<String> {
        store.list("tus/", None, 100).await.unwrap().into_iter().map(|o| o.key).collect()
    }

    #[tokio::test]
    async fn expired_uploads_and_leftovers_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let pending = || body_from_bytes(Bytes::from_static(b"abc"));
        save(&store, &info("expired", 1)).await.unwrap();
        store.put(&pending_key("expired", 13), pending()).await.unwrap();
        save(&store, &info("live", now_ms() + 60_000)).await.unwrap();
        store.put(&pending_key("live", 13), pending()).await.unwrap();
        // A fresh pending object of another offset may be a request committing right now.
        store.put(&pending_key("live", 23), pending()).await.unwrap();
        // No info.json: a removal cut short.
        store.put(&pending_key("leftover", 7), pending()).await.unwrap();

        assert_eq!(sweep_once(&store, Duration::from_secs(3600)).await.unwrap(), 2);
        let mut expected = vec![
            "tus/leftover/pending-7".to_owned(),
            "tus/live/info.json".into(),
            "tus/live/pending-13".into(),
            "tus/live/pending-23".into(),
        ];
        assert_eq!(keys(&store).await, expected);
        // Leftovers go once older than the expiry.
        assert_eq!(sweep_once(&store, Duration::ZERO).await.unwrap(), 1);
        expected.remove(0);
        assert_eq!(keys(&store).await, expected);
    }
}
