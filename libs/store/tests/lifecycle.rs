//! The `LifecycleStore` contract (DESIGN §14), run against SQLite in a temp file and MongoDB (a
//! real server when `MONGODB_URI` is set, else the nx-27017 stand-in), reached through
//! `&dyn MediaStore` as the services hold it.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use mediabus_contracts::lifecycle::MediaStats;
use mediabus_contracts::{Media, MediaRecord, MediaStatus, MediaType, Timestamp, Variant};
use mediabus_store::{LifecycleStore, MediaStore, RemovalScope, SqliteStore, UploadSession};

mod backends;
use backends::contract;

/// 2026-11-21T00:00:00Z: times are fixed, not read from the clock.
const BASE_MS: i64 = 1_795_219_200_000;

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms)
}

/// A READY stored image of `user`, optionally linked to `(entity_type, entity_id)`.
fn record(id: &str, user: &str, entity: Option<(&str, &str)>) -> MediaRecord {
    MediaRecord {
        media: Media {
            id: id.to_owned(),
            media_type: MediaType::Image,
            original_name: format!("{id}.png"),
            mime_type: "image/png".into(),
            size: 10,
            url: format!("/api/media/{id}/content"),
            user_id: user.to_owned(),
            entity_type: entity.map(|e| e.0.to_owned()),
            entity_id: entity.map(|e| e.1.to_owned()),
            metadata: None,
            is_public: false,
            status: MediaStatus::Ready,
            created_at: at(0),
            updated_at: at(0),
            checksum: None,
            details: None,
            variants: vec![Variant {
                name: "thumb".into(),
                url: format!("/api/media/{id}/variants/thumb"),
                mime_type: "image/webp".into(),
                width: Some(1),
                height: Some(1),
                size: 1,
            }],
            failure_reason: None,
        },
        storage_key: Some(format!("k/{id}")),
    }
}

/// Every batch of `scope` until one comes back empty: the ids removed.
async fn remove_all(store: &dyn MediaStore, scope: &RemovalScope, batch: u32) -> Vec<String> {
    let mut removed = Vec::new();
    loop {
        let got = store.remove_batch(scope, at(1000), batch).await.unwrap();
        let n = got.len();
        assert!(n <= batch as usize);
        for r in got {
            assert_eq!(r.media.status, MediaStatus::Deleted);
            assert_eq!(r.media.updated_at, at(1000));
            removed.push(r.media.id);
        }
        // Only an empty batch means done: racing calls may each get part of one.
        if n == 0 {
            return removed;
        }
    }
}

async fn status(store: &dyn MediaStore, id: &str) -> MediaStatus {
    store.get(id).await.unwrap().unwrap().media.status
}

// ---------------------------------------------------------------------------------------------
// The contract

async fn cascades_remove_by_user_and_by_entity_once(store: &dyn MediaStore) {
    for i in 0..25 {
        let entity = (i % 5 == 0).then_some(("course", "c1"));
        store.insert(&record(&format!("u1-{i:02}"), "u1", entity)).await.unwrap();
    }
    let mut gone = record("u1-gone", "u1", None);
    gone.media.status = MediaStatus::Deleted;
    store.insert(&gone).await.unwrap();
    for i in 0..3 {
        store.insert(&record(&format!("u2-{i}"), "u2", Some(("course", "c1")))).await.unwrap();
    }
    store.insert(&record("u2-lesson", "u2", Some(("lesson", "c1")))).await.unwrap();
    store.insert(&record("u2-other", "u2", Some(("course", "c2")))).await.unwrap();

    let entity = RemovalScope::Entity { entity_type: "course".into(), entity_id: "c1".into() };
    let mut removed = remove_all(store, &entity, 2).await;
    removed.sort();
    let want: Vec<String> =
        ["u1-00", "u1-05", "u1-10", "u1-15", "u1-20", "u2-0", "u2-1", "u2-2"].map(String::from).to_vec();
    assert_eq!(removed, want, "both fields must match");
    assert_eq!(status(store, "u2-lesson").await, MediaStatus::Ready);
    assert_eq!(status(store, "u2-other").await, MediaStatus::Ready);
    assert_eq!(remove_all(store, &entity, 2).await, Vec::<String>::new(), "twice changes nothing");

    let user = RemovalScope::User { user_id: "u1".into() };
    let removed = remove_all(store, &user, 7).await;
    assert_eq!(removed.len(), 20, "u1's media not removed yet, without the ones already gone");
    assert_eq!(removed.iter().collect::<HashSet<_>>().len(), 20, "each once");
    for i in 0..25 {
        assert_eq!(status(store, &format!("u1-{i:02}")).await, MediaStatus::Deleted);
    }
    assert_eq!(store.get("u1-gone").await.unwrap().unwrap().media.updated_at, at(0), "already deleted: untouched");
    assert_eq!(status(store, "u2-other").await, MediaStatus::Ready);
    assert_eq!(remove_all(store, &user, 7).await, Vec::<String>::new());
}

/// Workers racing on one cascade (an event received twice) change each media exactly once.
async fn racing_cascades_split_the_media(store: &dyn MediaStore) {
    for i in 0..60 {
        store.insert(&record(&format!("m{i:02}"), "racer", None)).await.unwrap();
    }
    let scope = RemovalScope::User { user_id: "racer".into() };
    let runs = join_all((0..3).map(|_| remove_all(store, &scope, 5))).await;
    let all: Vec<&String> = runs.iter().flatten().collect();
    assert_eq!(all.len(), 60, "every media removed once in total: {runs:?}");
    assert_eq!(all.into_iter().collect::<HashSet<_>>().len(), 60);
}

/// A `user.deleted` and an `entity.deleted` cascade racing over overlapping media, in small
/// batches: the media both scopes cover sort first, so one cascade's read can be taken whole by
/// the other. Neither may stop early: every media of either scope ends DELETED, each removed by
/// exactly one of them. Several rounds, as the interleaving varies.
async fn racing_user_and_entity_cascades_finish_both_scopes(store: &dyn MediaStore) {
    for round in 0..5 {
        let (user, entity_id) = (format!("ru{round}"), format!("re{round}"));
        let mut ids = Vec::new();
        // `1-…`: both scopes; `2-u-…`: the user's only; `2-e-…`: the entity's only (another user).
        for i in 0..30 {
            ids.push((format!("r{round}-1-{i:02}"), user.as_str(), Some(("course", entity_id.as_str()))));
        }
        for i in 0..10 {
            ids.push((format!("r{round}-2-u-{i:02}"), user.as_str(), None));
            ids.push((format!("r{round}-2-e-{i:02}"), "someone-else", Some(("course", entity_id.as_str()))));
        }
        for (id, owner, entity) in &ids {
            store.insert(&record(id, owner, *entity)).await.unwrap();
        }
        let by_user = RemovalScope::User { user_id: user.clone() };
        let by_entity = RemovalScope::Entity { entity_type: "course".into(), entity_id: entity_id.clone() };
        let (a, b) = tokio::join!(remove_all(store, &by_user, 3), remove_all(store, &by_entity, 3));
        let all: Vec<&String> = a.iter().chain(&b).collect();
        assert_eq!(all.len(), ids.len(), "round {round}: each media removed once in total: user {a:?}, entity {b:?}");
        assert_eq!(all.into_iter().collect::<HashSet<_>>().len(), ids.len(), "round {round}: no media twice");
        assert!(a.iter().all(|id| id.contains("-1-") || id.contains("-2-u-")), "user scope only: {a:?}");
        assert!(b.iter().all(|id| id.contains("-1-") || id.contains("-2-e-")), "entity scope only: {b:?}");
        for (id, _, _) in &ids {
            assert_eq!(status(store, id).await, MediaStatus::Deleted, "round {round}: {id}");
        }
    }
}

async fn purges_are_due_after_retention_and_claimed_once(store: &dyn MediaStore) {
    let scope = RemovalScope::User { user_id: "p".into() };
    for id in ["p1", "p2", "p3"] {
        store.insert(&record(id, "p", None)).await.unwrap();
    }
    let mut url_only = record("p-url", "p", None);
    url_only.storage_key = None;
    url_only.media.variants.clear();
    store.insert(&url_only).await.unwrap();
    assert!(store.due_for_purge(at(5000), 100).await.unwrap().is_empty(), "nothing removed yet");
    assert_eq!(store.claim_purge("p1", at(5000)).await.unwrap(), None, "not removed: not purged");

    assert_eq!(remove_all(store, &scope, 10).await.len(), 4); // removed at(1000)
    assert!(store.due_for_purge(at(999), 100).await.unwrap().is_empty(), "retention not over");
    let due: Vec<String> = store.due_for_purge(at(1000), 100).await.unwrap().into_iter().map(|r| r.media.id).collect();
    assert_eq!(due.len(), 3, "the three with bytes; a URL-only media has nothing to purge: {due:?}");
    assert_eq!(store.due_for_purge(at(1000), 2).await.unwrap().len(), 2, "limit");

    let before = store.claim_purge("p1", at(2000)).await.unwrap().expect("claimed");
    assert_eq!(before.storage_key.as_deref(), Some("k/p1"));
    assert_eq!(before.media.variants.len(), 1);
    assert_eq!(store.claim_purge("p1", at(2001)).await.unwrap(), None, "purged once");
    let after = store.get("p1").await.unwrap().unwrap();
    assert_eq!((after.media.status, after.storage_key, after.media.variants.len()), (MediaStatus::Deleted, None, 0));
    assert_eq!(after.media.updated_at, at(2000));
    let due: Vec<String> = store.due_for_purge(at(9000), 100).await.unwrap().into_iter().map(|r| r.media.id).collect();
    assert!(!due.contains(&"p1".to_owned()), "{due:?}");

    let claims = join_all((0..6).map(|_| store.claim_purge("p2", at(3000)))).await;
    let won = claims.into_iter().map(Result::unwrap).filter(Option::is_some).count();
    assert_eq!(won, 1, "racing claims: one wins");
    assert_eq!(store.claim_purge("missing", at(3000)).await.unwrap(), None);
}

async fn orphan_lookups_know_documents_and_uploads(store: &dyn MediaStore) {
    store.insert(&record("o1", "u", None)).await.unwrap();
    let mut removed = record("o2", "u", None);
    removed.media.status = MediaStatus::Deleted;
    store.insert(&removed).await.unwrap();
    let session = |id: &str, expires: i64| UploadSession {
        upload_id: id.to_owned(),
        user_id: "u".into(),
        storage_key: format!("k/{id}"),
        backend_upload_id: format!("backend-{id}"),
        original_name: "f.bin".into(),
        declared_size: None,
        entity_id: None,
        entity_type: None,
        is_public: false,
        metadata: None,
        part_size: 5,
        created_at: at(0),
        expires_at: at(expires),
    };
    store.create_upload(&session("up-live", 10_000)).await.unwrap();
    store.create_upload(&session("up-old", 100)).await.unwrap();

    let keys: Vec<String> = ["k/o1", "k/o2", "k/up-live", "k/nobody", "k/o3"].map(String::from).to_vec();
    let found = store.referenced_keys(&keys).await.unwrap();
    let want: HashSet<String> = ["k/o1", "k/o2", "k/up-live"].map(String::from).into();
    // An expired session still names its key until the upload janitor deletes it.
    assert!(found.is_superset(&want) && !found.contains("k/nobody") && !found.contains("k/o3"), "{found:?}");
    assert!(store.referenced_keys(&[]).await.unwrap().is_empty());

    let live = store.live_backend_uploads(at(5000)).await.unwrap();
    assert_eq!(live, HashSet::from(["backend-up-live".to_owned()]));
}

/// Quotas (DESIGN §14): a user's live media (sizes summed, DELETED ones left out) and its upload
/// sessions not expired; other users' are not counted.
async fn usage_counts_a_users_live_media_and_open_uploads(store: &dyn MediaStore) {
    let empty = store.usage("q", at(0)).await.unwrap();
    assert_eq!((empty.bytes, empty.count, empty.open_uploads), (0, 0, 0));
    for (id, user, size, status) in [
        ("q1", "q", 100, MediaStatus::Ready),
        ("q2", "q", 2_000_000_000_000, MediaStatus::Processing),
        ("q3", "q", 7, MediaStatus::Deleted),
        ("q4", "other", 50, MediaStatus::Ready),
    ] {
        let mut r = record(id, user, None);
        (r.media.size, r.media.status) = (size, status);
        store.insert(&r).await.unwrap();
    }
    let session = |id: &str, user: &str, expires: i64| UploadSession {
        upload_id: id.to_owned(),
        user_id: user.into(),
        storage_key: format!("k/{id}"),
        backend_upload_id: format!("backend-{id}"),
        original_name: "f.bin".into(),
        declared_size: Some(10),
        entity_id: None,
        entity_type: None,
        is_public: false,
        metadata: None,
        part_size: 5,
        created_at: at(0),
        expires_at: at(expires),
    };
    store.create_upload(&session("qu-live", "q", 10_000)).await.unwrap();
    store.create_upload(&session("qu-old", "q", 100)).await.unwrap();
    store.create_upload(&session("qu-other", "other", 10_000)).await.unwrap();
    let usage = store.usage("q", at(5000)).await.unwrap();
    assert_eq!((usage.bytes, usage.count, usage.open_uploads), (2_000_000_000_100, 2, 1), "{usage:?}");
}

async fn a_lease_has_one_holder_at_a_time(store: &dyn MediaStore) {
    let ttl = Duration::from_secs(60);
    assert!(store.try_lease("sweeper", "a", at(0), ttl).await.unwrap());
    assert!(!store.try_lease("sweeper", "b", at(1000), ttl).await.unwrap(), "held by a");
    assert!(store.try_lease("sweeper", "a", at(30_000), ttl).await.unwrap(), "a renews");
    assert!(!store.try_lease("sweeper", "b", at(61_000), ttl).await.unwrap(), "renewed until 90 s");
    assert!(store.try_lease("other", "b", at(61_000), ttl).await.unwrap(), "leases are by name");
    assert!(store.try_lease("sweeper", "b", at(90_000), ttl).await.unwrap(), "expired: b takes over");
    store.release_lease("sweeper", "a").await.unwrap();
    assert!(!store.try_lease("sweeper", "a", at(91_000), ttl).await.unwrap(), "a cannot release b's lease");
    store.release_lease("sweeper", "b").await.unwrap();
    assert!(store.try_lease("sweeper", "a", at(91_000), ttl).await.unwrap(), "released");

    let racers = join_all((0..5).map(|i| store.try_lease("race", ["r0", "r1", "r2", "r3", "r4"][i], at(0), ttl))).await;
    assert_eq!(racers.into_iter().map(Result::unwrap).filter(|won| *won).count(), 1, "one racer wins");
}

async fn counters_add_up(store: &dyn MediaStore) {
    let stats = |id: &str, views, downloads| MediaStats { id: id.to_owned(), views, downloads };
    assert_eq!(store.stats("c1").await.unwrap(), stats("c1", 0, 0));
    store.add_counts(&[stats("c1", 3, 1), stats("c2", 0, 2), stats("c3", 0, 0)]).await.unwrap();
    store.add_counts(&[stats("c1", 97, 9)]).await.unwrap();
    store.add_counts(&[]).await.unwrap();
    assert_eq!(store.stats("c1").await.unwrap(), stats("c1", 100, 10));
    assert_eq!(store.stats("c2").await.unwrap(), stats("c2", 0, 2));
    assert_eq!(store.stats("c3").await.unwrap(), stats("c3", 0, 0));
    let adds = join_all((0..10).map(|_| async move { store.add_counts(&[stats("c4", 1, 1)]).await })).await;
    adds.into_iter().for_each(Result::unwrap);
    assert_eq!(store.stats("c4").await.unwrap(), stats("c4", 10, 10), "concurrent first counts all land");
}

// ---------------------------------------------------------------------------------------------
// Running the contract on each backend

contract!(
    cascades_remove_by_user_and_by_entity_once,
    racing_cascades_split_the_media,
    racing_user_and_entity_cascades_finish_both_scopes,
    purges_are_due_after_retention_and_claimed_once,
    orphan_lookups_know_documents_and_uploads,
    a_lease_has_one_holder_at_a_time,
    counters_add_up,
    usage_counts_a_users_live_media_and_open_uploads,
);

/// Two handles on one file, as two worker processes: a lease taken by one is refused to the other.
#[tokio::test]
async fn sqlite_leases_hold_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let (one, two) = (SqliteStore::open(&path).await.unwrap(), SqliteStore::open(&path).await.unwrap());
    assert!(one.try_lease("sweeper", "one", at(0), Duration::from_secs(30)).await.unwrap());
    assert!(!two.try_lease("sweeper", "two", at(1), Duration::from_secs(30)).await.unwrap());
}
