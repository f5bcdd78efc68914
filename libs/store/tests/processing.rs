//! One contract for every `ProcessingStore` backend (the conditional writes of the media
//! processor and of `media.reprocess`), run by `contract!` against SQLite in a temp file and
//! against MongoDB (a real server when `MONGODB_URI` is set, else nx-27017), as in `contract.rs`.

use futures_util::future::join_all;
use mediabus_contracts::{
    ListFilter, Media, MediaRecord, MediaStatus, MediaType, Timestamp, Variant, Visibility, new_media_id,
};
use mediabus_store::{MediaStore, ProcessingStore};
use serde_json::json;

mod backends;
use backends::contract;

/// 2026-11-21T00:00:00Z: times are fixed, whole seconds apart (nx-27017 compares dates at
/// second precision).
const BASE_MS: i64 = 1_795_219_200_000;

fn at_secs(offset: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset * 1000)
}

const CHECKSUM: &str = "sha256:00112233";

/// A stored VIDEO being processed (what an upload creates).
fn processing(id: &str) -> MediaRecord {
    MediaRecord {
        media: Media {
            id: id.to_owned(),
            media_type: MediaType::Video,
            original_name: "clip.mp4".into(),
            mime_type: "video/mp4".into(),
            size: 1000,
            url: format!("/api/media/{id}/content"),
            user_id: "u1".into(),
            entity_id: None,
            entity_type: None,
            metadata: None,
            is_public: false,
            status: MediaStatus::Processing,
            created_at: at_secs(0),
            updated_at: at_secs(0),
            checksum: Some(CHECKSUM.into()),
            details: None,
            variants: vec![],
            failure_reason: None,
        },
        storage_key: Some(format!("ab/cd/{id}")),
    }
}

fn thumb(id: &str) -> Variant {
    Variant {
        name: "thumb".into(),
        url: format!("/api/media/{id}/content?variant=thumb"),
        mime_type: "image/webp".into(),
        width: Some(256),
        height: Some(144),
        size: 4242,
    }
}

/// The document as `get`, `get_json` and a listing return it: all three must agree.
async fn read_everywhere<S: MediaStore + ?Sized>(store: &S, id: &str) -> Media {
    let got = store.get(id).await.unwrap().expect("present").media;
    let json = store.get_json(id).await.unwrap().expect("present");
    assert_eq!(serde_json::from_str::<Media>(json.json.get()).unwrap(), got, "get_json agrees with get");
    let raw: serde_json::Value = serde_json::from_str(json.json.get()).unwrap();
    assert!(raw.get("failureReason").is_some(), "failureReason is always on the wire: {raw}");
    let page = store.list(&ListFilter::new(Visibility::All)).await.unwrap();
    let listed = page.items.into_iter().find(|m| m.id == id).expect("listed");
    assert_eq!(listed, got, "a listing agrees with get");
    got
}

async fn progress_then_finish_once<S: MediaStore + ProcessingStore>(store: &S) {
    let id = new_media_id();
    store.insert(&processing(&id)).await.unwrap();
    let details = json!({"width": 1280, "height": 720, "durationMs": 10_000});

    let saved = store.save_progress(&id, CHECKSUM, Some(details.clone()), vec![thumb(&id)], at_secs(1)).await.unwrap();
    let saved = saved.expect("a PROCESSING media takes progress");
    assert_eq!((saved.details.as_ref(), saved.variants.len()), (Some(&details), 1));
    assert_eq!(saved.status, MediaStatus::Processing);
    assert_eq!(read_everywhere(store, &id).await, saved);

    // A job for other bytes is stale: nothing changes.
    assert_eq!(store.save_progress(&id, "sha256:other", None, vec![], at_secs(2)).await.unwrap(), None);
    assert_eq!(store.finish_processing(&id, "sha256:other", MediaStatus::Ready, None, at_secs(2)).await.unwrap(), None);

    let done = store.finish_processing(&id, CHECKSUM, MediaStatus::Ready, None, at_secs(3)).await.unwrap();
    let done = done.expect("finishes");
    assert_eq!(done.status, MediaStatus::Ready);
    assert_eq!(done.updated_at, at_secs(3));
    assert_eq!(done.variants, vec![thumb(&id)], "progress is kept");
    assert_eq!(read_everywhere(store, &id).await, done);

    // Finished: a second finish (a redelivered job) and late progress change nothing.
    assert_eq!(store.finish_processing(&id, CHECKSUM, MediaStatus::Failed, None, at_secs(4)).await.unwrap(), None);
    assert_eq!(store.save_progress(&id, CHECKSUM, None, vec![], at_secs(4)).await.unwrap(), None);
    assert_eq!(read_everywhere(store, &id).await, done);
    assert!(store.finish_processing("absent", CHECKSUM, MediaStatus::Ready, None, at_secs(4)).await.unwrap().is_none());
}

async fn a_failure_keeps_its_reason<S: MediaStore + ProcessingStore>(store: &S) {
    let id = new_media_id();
    store.insert(&processing(&id)).await.unwrap();
    let reason = "the image is 100000×100000 pixels, more than the 50000000 allowed".to_owned();
    let failed = store.finish_processing(&id, CHECKSUM, MediaStatus::Failed, Some(reason.clone()), at_secs(1)).await;
    let failed = failed.unwrap().expect("finishes");
    assert_eq!((failed.status, failed.failure_reason.as_deref()), (MediaStatus::Failed, Some(reason.as_str())));
    assert_eq!(read_everywhere(store, &id).await, failed);
    // Only READY and FAILED end processing.
    let mut other = processing(&new_media_id());
    other.media.id = new_media_id();
    store.insert(&other).await.unwrap();
    let err = store.finish_processing(&other.media.id, CHECKSUM, MediaStatus::Deleted, None, at_secs(1)).await;
    assert!(err.is_err(), "DELETED is not an outcome of processing");
}

async fn concurrent_finishes_have_one_winner<S: MediaStore + ProcessingStore>(store: &S) {
    let id = new_media_id();
    store.insert(&processing(&id)).await.unwrap();
    let results = join_all((0..6).map(|i| {
        let status = if i % 2 == 0 { MediaStatus::Ready } else { MediaStatus::Failed };
        store.finish_processing(&id, CHECKSUM, status, None, at_secs(1))
    }))
    .await;
    let winners: Vec<Media> = results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(winners.len(), 1, "exactly one caller finishes a run");
    assert_eq!(read_everywhere(store, &id).await, winners[0]);
}

async fn restart_requeues_stored_media_only<S: MediaStore + ProcessingStore>(store: &S) {
    let id = new_media_id();
    store.insert(&processing(&id)).await.unwrap();
    store.save_progress(&id, CHECKSUM, Some(json!({"width": 1})), vec![thumb(&id)], at_secs(1)).await.unwrap();
    store.finish_processing(&id, CHECKSUM, MediaStatus::Failed, Some("bad".into()), at_secs(2)).await.unwrap();

    let again = store.restart_processing(&id, at_secs(3)).await.unwrap().expect("a FAILED media restarts");
    let m = &again.media;
    assert_eq!((m.status, m.failure_reason.as_ref(), m.details.as_ref()), (MediaStatus::Processing, None, None));
    assert!(m.variants.is_empty());
    assert_eq!(m.updated_at, at_secs(3));
    assert_eq!(again.storage_key, processing(&id).storage_key);
    assert_eq!(read_everywhere(store, &id).await, again.media);
    // It can be finished again by the new job.
    assert!(store.finish_processing(&id, CHECKSUM, MediaStatus::Ready, None, at_secs(4)).await.unwrap().is_some());

    // Removed media, media registered by URL and absent ids do not restart.
    let mut removed = processing(&new_media_id());
    removed.media.status = MediaStatus::Deleted;
    store.insert(&removed).await.unwrap();
    let mut by_url = processing(&new_media_id());
    by_url.media.status = MediaStatus::Ready;
    (by_url.storage_key, by_url.media.checksum) = (None, None);
    store.insert(&by_url).await.unwrap();
    for other in [&removed.media.id, &by_url.media.id, &"absent".to_owned()] {
        assert_eq!(store.restart_processing(other, at_secs(5)).await.unwrap(), None, "{other}");
    }
    assert_eq!(store.get(&removed.media.id).await.unwrap().unwrap(), removed, "unchanged");
}

contract!(
    progress_then_finish_once,
    a_failure_keeps_its_reason,
    concurrent_finishes_have_one_winner,
    restart_requeues_stored_media_only,
);
