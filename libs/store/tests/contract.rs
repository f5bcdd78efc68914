//! One contract for every `MediaStore` backend (DESIGN §8: same behaviour, one suite).
//!
//! Each `async fn` below takes `&dyn MediaStore` and is run twice by `contract!`: against SQLite
//! in a temp file, and against MongoDB — a real server when `MONGODB_URI` is set (each test gets
//! its own database, dropped afterwards), else the nx-27017 stand-in started per test.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use futures_util::future::join_all;
use mediabus_contracts::{
    ListFilter, Media, MediaRecord, MediaStatus, MediaType, Page, SortOrder, Timestamp, Variant, Visibility,
    new_media_id,
};
use mediabus_store::{MediaStore, MongoStore, SqliteStore, StoreError, TOTAL_CAP, UploadPart, UploadSession};
use mediabus_testkit::MongoServer;
use serde_json::json;

/// Which backend a contract runs on, for messages and the few stand-in notes.
struct Backend {
    name: &'static str,
    /// nx-27017 rather than a real MongoDB.
    stand_in: bool,
}

const SQLITE: Backend = Backend { name: "sqlite", stand_in: false };

/// A fixed instant (2026-11-21T00:00:00Z) so orderings are by construction, not by clock.
const BASE_MS: i64 = 1_795_219_200_000;

fn at(offset_ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset_ms)
}

/// A READY, private IMAGE owned by `user`, created at `at(offset_ms)`; nothing optional set.
fn record(id: &str, user: &str, offset_ms: i64) -> MediaRecord {
    MediaRecord {
        media: Media {
            id: id.to_owned(),
            media_type: MediaType::Image,
            original_name: format!("{id}.png"),
            mime_type: "image/png".into(),
            size: 1234,
            url: format!("/api/media/{id}/content"),
            user_id: user.to_owned(),
            entity_id: None,
            entity_type: None,
            metadata: None,
            is_public: false,
            status: MediaStatus::Ready,
            created_at: at(offset_ms),
            updated_at: at(offset_ms),
            checksum: None,
            details: None,
            variants: vec![],
            failure_reason: None,
        },
        storage_key: None,
    }
}

/// A record with every field set, including nested JSON and variants.
fn full_record() -> MediaRecord {
    let mut r = record(&new_media_id(), "user-full", 42);
    let m = &mut r.media;
    m.media_type = MediaType::Video;
    m.original_name = "Vacances à Nice — été 2026.mp4".into();
    m.mime_type = "video/mp4".into();
    m.size = 5_000_000_000; // past 32 bits
    m.entity_id = Some("lesson-7".into());
    m.entity_type = Some("lesson".into());
    m.metadata = Some(json!({
        "title": "Intro", "tags": ["a", "b"], "n": 3, "ratio": 0.75, "flag": true,
        "nested": {"empty": {}, "list": [], "none": null, "deep": [{"x": -1}]},
        "$weird.key": "stored as given"
    }));
    m.is_public = true;
    m.status = MediaStatus::Processing;
    m.updated_at = at(99);
    m.checksum = Some(format!("sha256:{}", "ab".repeat(32)));
    m.details = Some(json!({"width": 1920, "height": 1080, "durationMs": 61_000, "codecs": ["avc1", "mp4a"]}));
    m.variants = vec![
        Variant {
            name: "thumb".into(),
            url: "/api/media/x/variants/thumb".into(),
            mime_type: "image/webp".into(),
            width: Some(320),
            height: Some(180),
            size: 9000,
        },
        Variant {
            name: "audio".into(),
            url: "/api/media/x/variants/audio".into(),
            mime_type: "audio/mpeg".into(),
            width: None,
            height: None,
            size: 70_000,
        },
    ];
    r.storage_key = Some("ab/cd/0123456789".into());
    r
}

fn ids(page: &Page) -> Vec<String> {
    page.items.iter().map(|m| m.id.clone()).collect()
}

fn all() -> ListFilter {
    ListFilter::new(Visibility::All)
}

async fn list_ids(store: &dyn MediaStore, filter: ListFilter) -> (BTreeSet<String>, u64) {
    let page = store.list(&filter).await.unwrap();
    assert_eq!(page.total, page.items.len() as u64, "fixture fits one page: total = items for {filter:?}");
    (page.items.iter().map(|m| m.id.clone()).collect(), page.total)
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The contract

async fn insert_then_get_returns_every_field(store: &dyn MediaStore, b: &Backend) {
    let full = full_record();
    store.insert(&full).await.unwrap();
    assert_eq!(store.get(&full.media.id).await.unwrap(), Some(full.clone()), "{}: full record", b.name);

    let bare = record("bare-1", "user-bare", 7);
    store.insert(&bare).await.unwrap();
    let got = store.get("bare-1").await.unwrap().expect("bare record stored");
    assert_eq!(got, bare, "{}: nulls and empty variants", b.name);
    assert_eq!(got.media.metadata, None);
    assert_eq!(got.storage_key, None);

    // JSON null metadata is the same state as no metadata.
    let mut null_meta = record("null-meta", "u", 8);
    null_meta.media.metadata = Some(serde_json::Value::Null);
    store.insert(&null_meta).await.unwrap();
    assert_eq!(store.get("null-meta").await.unwrap().unwrap().media.metadata, None);

    assert_eq!(store.get("no-such-id").await.unwrap(), None);

    // Case-insensitive search folds non-ASCII letters too.
    let page = store.list(&ListFilter { q: Some("À NICE — ÉTÉ".into()), ..all() }).await.unwrap();
    assert_eq!(ids(&page), vec![full.media.id.clone()], "{}: Unicode q", b.name);
}

/// `get_json` is `get`'s document, serialized; it follows updates.
async fn get_json_is_the_document_of_get(store: &dyn MediaStore, b: &Backend) {
    let mut full = full_record();
    store.insert(&full).await.unwrap();
    let bare = record("bare-json", "user-bare", 7);
    store.insert(&bare).await.unwrap();
    for r in [&full, &bare] {
        let doc = store.get_json(&r.media.id).await.unwrap().expect("stored");
        let media: Media = serde_json::from_str(doc.json.get()).unwrap();
        assert_eq!(media, r.media, "{}: {}", b.name, r.media.id);
        assert_eq!(
            (doc.user_id.as_str(), doc.is_public, doc.status),
            (r.media.user_id.as_str(), r.media.is_public, r.media.status)
        );
    }
    full.media.is_public = !full.media.is_public;
    full.media.status = MediaStatus::Deleted;
    full.media.original_name = "renamed.png".into();
    store.update(&full).await.unwrap();
    let doc = store.get_json(&full.media.id).await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<Media>(doc.json.get()).unwrap(), full.media, "{}: after update", b.name);
    assert_eq!((doc.is_public, doc.status), (full.media.is_public, MediaStatus::Deleted));
    assert!(store.get_json("no-such-id").await.unwrap().is_none());
}

async fn duplicate_id_is_a_conflict(store: &dyn MediaStore, b: &Backend) {
    let first = record("dup", "u1", 1);
    store.insert(&first).await.unwrap();
    let mut second = record("dup", "u2", 2);
    second.media.status = MediaStatus::Deleted;
    let err = store.insert(&second).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{}: {err:?}", b.name);
    assert_eq!(store.get("dup").await.unwrap(), Some(first), "the first record is untouched");
}

async fn update_replaces_the_whole_record(store: &dyn MediaStore, b: &Backend) {
    let mut r = full_record();
    store.insert(&r).await.unwrap();

    r.media.original_name = "renamed.mp4".into();
    r.media.metadata = None;
    r.media.entity_id = None;
    r.media.entity_type = None;
    r.media.is_public = false;
    r.media.status = MediaStatus::Deleted;
    r.media.details = Some(json!({"pageCount": 3}));
    r.media.variants.truncate(1);
    r.media.updated_at = at(5_000);
    r.storage_key = None;
    store.update(&r).await.unwrap();
    assert_eq!(store.get(&r.media.id).await.unwrap(), Some(r.clone()), "{}: DELETED is still readable by id", b.name);

    // The search text follows the new name, not the old one.
    let mut q = all();
    q.status = Some(MediaStatus::Deleted);
    q.q = Some("RENAMED".into());
    assert_eq!(ids(&store.list(&q).await.unwrap()), vec![r.media.id.clone()]);
    q.q = Some("vacances".into());
    assert_eq!(store.list(&q).await.unwrap().total, 0);

    let ghost = record("ghost", "u", 1);
    assert_eq!(store.update(&ghost).await, Err(StoreError::NotFound), "{}", b.name);
    assert_eq!(store.get("ghost").await.unwrap(), None, "update does not create");
}

/// `replace_if_unchanged` is a compare-and-set on the version read: the first of two writers
/// that read the same version wins, the second gets `false` and changes nothing; a write with
/// an `updatedAt` not later than the one read is refused; an absent id is `NotFound`.
async fn replace_if_unchanged_is_a_compare_and_set(store: &dyn MediaStore, b: &Backend) {
    let read = record("cas", "u", 0);
    store.insert(&read).await.unwrap();
    let mut removed = read.clone();
    removed.media.status = MediaStatus::Deleted;
    removed.media.updated_at = mediabus_store::next_updated_at(read.media.updated_at);
    let mut patched = read.clone();
    patched.media.is_public = !read.media.is_public;
    patched.media.updated_at = mediabus_store::next_updated_at(read.media.updated_at);
    assert_eq!(store.replace_if_unchanged(&read, &removed).await, Ok(true), "{}", b.name);
    assert_eq!(store.replace_if_unchanged(&read, &patched).await, Ok(false), "{}: stale read", b.name);
    assert_eq!(store.get("cas").await.unwrap(), Some(removed.clone()), "{}: the first write stays", b.name);

    // Same updatedAt as read: refused before anything is written.
    let mut same = removed.clone();
    same.media.original_name = "same.png".into();
    assert!(matches!(store.replace_if_unchanged(&removed, &same).await, Err(StoreError::Backend(_))), "{}", b.name);
    let ghost = record("ghost", "u", 0);
    let mut later = ghost.clone();
    later.media.updated_at = at(1);
    assert_eq!(store.replace_if_unchanged(&ghost, &later).await, Err(StoreError::NotFound), "{}", b.name);
}

/// The listing fixture: ids a..g, created a (oldest) .. g (newest).
async fn insert_fixture(store: &dyn MediaStore) {
    /// id, owner, (entityId, entityType), type, status, isPublic, originalName.
    type Row<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, MediaType, MediaStatus, bool, &'a str);
    let rows: [Row<'_>; 7] = [
        ("a", "u1", Some(("c1", "course")), MediaType::Image, MediaStatus::Ready, true, "Holiday Photo.PNG"),
        ("b", "u1", Some(("c1", "lesson")), MediaType::Video, MediaStatus::Processing, false, "lecture_01.mp4"),
        ("c", "u2", Some(("c1", "course")), MediaType::Document, MediaStatus::Ready, false, "100% done.pdf"),
        ("d", "u2", None, MediaType::Image, MediaStatus::Deleted, true, "gone photo.png"),
        ("e", "u3", Some(("c2", "course")), MediaType::Audio, MediaStatus::Failed, true, "a.b(c)*[x]+^$|?{1}\\.mp3"),
        ("f", "u1", None, MediaType::Image, MediaStatus::Ready, false, "photo_2024.jpg"),
        ("g", "u3", None, MediaType::Other, MediaStatus::Ready, false, "axb.txt"),
    ];
    for (i, (id, user, entity, media_type, status, public, name)) in rows.into_iter().enumerate() {
        let mut r = record(id, user, i as i64 * 1000);
        r.media.entity_id = entity.map(|e| e.0.to_owned());
        r.media.entity_type = entity.map(|e| e.1.to_owned());
        r.media.media_type = media_type;
        r.media.status = status;
        r.media.is_public = public;
        r.media.original_name = name.to_owned();
        store.insert(&r).await.unwrap();
    }
}

async fn list_filters_each_field(store: &dyn MediaStore, b: &Backend) {
    insert_fixture(store).await;
    let page = store.list(&all()).await.unwrap();
    assert_eq!(ids(&page), ["g", "f", "e", "c", "b", "a"], "{}: newest first, DELETED hidden by default", b.name);
    assert_eq!((page.total, page.limit, page.next_cursor), (6, 20, None));

    let mut oldest = all();
    oldest.sort = SortOrder::OldestFirst;
    assert_eq!(ids(&store.list(&oldest).await.unwrap()), ["a", "b", "c", "e", "f", "g"], "{}", b.name);

    let cases: Vec<(&str, ListFilter, BTreeSet<String>)> = vec![
        ("userId", ListFilter { user_id: Some("u1".into()), ..all() }, set(&["a", "b", "f"])),
        ("entityId", ListFilter { entity_id: Some("c1".into()), ..all() }, set(&["a", "b", "c"])),
        (
            "entityId+entityType",
            ListFilter { entity_id: Some("c1".into()), entity_type: Some("course".into()), ..all() },
            set(&["a", "c"]),
        ),
        ("entityType alone", ListFilter { entity_type: Some("course".into()), ..all() }, set(&["a", "c", "e"])),
        ("type", ListFilter { media_type: Some(MediaType::Image), ..all() }, set(&["a", "f"])),
        ("status READY", ListFilter { status: Some(MediaStatus::Ready), ..all() }, set(&["a", "c", "f", "g"])),
        ("status DELETED", ListFilter { status: Some(MediaStatus::Deleted), ..all() }, set(&["d"])),
        ("isPublic true", ListFilter { is_public: Some(true), ..all() }, set(&["a", "e"])),
        ("isPublic false", ListFilter { is_public: Some(false), ..all() }, set(&["b", "c", "f", "g"])),
        (
            "userId+isPublic",
            ListFilter { user_id: Some("u1".into()), is_public: Some(false), ..all() },
            set(&["b", "f"]),
        ),
        ("no match", ListFilter { user_id: Some("u1".into()), entity_id: Some("c2".into()), ..all() }, set(&[])),
    ];
    for (what, filter, expected) in cases {
        let (got, total) = list_ids(store, filter).await;
        assert_eq!(got, expected, "{}: filter {what}", b.name);
        assert_eq!(total, expected.len() as u64, "{}: total for {what}", b.name);
    }
}

async fn q_is_a_literal_case_insensitive_substring(store: &dyn MediaStore, b: &Backend) {
    insert_fixture(store).await;
    let cases: [(&str, &[&str]); 12] = [
        ("photo", &["a", "f"]), // d has "photo" too but is DELETED
        ("PHOTO", &["a", "f"]),
        ("hOlIdAy", &["a"]),
        ("%", &["c"]),        // a LIKE wildcard would match everything
        ("_0", &["b"]),       // as LIKE: any char then 0, also "100% done"
        ("a.b", &["e"]),      // as a regex: also "axb.txt"
        ("(c)*[x]", &["e"]),  // as a regex: any "x" (also "axb")
        ("+^$|?{1}", &["e"]), // invalid or anchoring as a regex
        ("\\.mp3", &["e"]),   // a backslash is a plain character too
        ("*", &["e"]),
        (".", &["a", "b", "c", "e", "f", "g"]),
        ("no such name", &[]),
    ];
    for (q, expected) in cases {
        let (got, _) = list_ids(store, ListFilter { q: Some(q.to_owned()), ..all() }).await;
        assert_eq!(got, set(expected), "{}: q = {q:?}", b.name);
    }
    let (got, _) =
        list_ids(store, ListFilter { q: Some("PHOTO".into()), status: Some(MediaStatus::Deleted), ..all() }).await;
    assert_eq!(got, set(&["d"]), "{}: q combines with status", b.name);
}

async fn visibility_limits_what_a_caller_sees(store: &dyn MediaStore, b: &Backend) {
    insert_fixture(store).await;
    let cases: Vec<(&str, ListFilter, BTreeSet<String>)> = vec![
        ("All", all(), set(&["a", "b", "c", "e", "f", "g"])),
        ("PublicOnly", ListFilter::new(Visibility::PublicOnly), set(&["a", "e"])),
        ("PublicOr u1", ListFilter::new(Visibility::PublicOr { user_id: "u1".into() }), set(&["a", "b", "e", "f"])),
        ("PublicOr u2", ListFilter::new(Visibility::PublicOr { user_id: "u2".into() }), set(&["a", "c", "e"])),
        ("PublicOr stranger", ListFilter::new(Visibility::PublicOr { user_id: "nobody".into() }), set(&["a", "e"])),
        (
            "PublicOr u1 + userId u2",
            ListFilter { user_id: Some("u2".into()), ..ListFilter::new(Visibility::PublicOr { user_id: "u1".into() }) },
            set(&[]),
        ),
        (
            "PublicOr u1 + userId u3",
            ListFilter { user_id: Some("u3".into()), ..ListFilter::new(Visibility::PublicOr { user_id: "u1".into() }) },
            set(&["e"]),
        ),
        (
            "PublicOnly + DELETED",
            ListFilter { status: Some(MediaStatus::Deleted), ..ListFilter::new(Visibility::PublicOnly) },
            set(&["d"]),
        ),
        (
            "PublicOr u1 + q",
            ListFilter { q: Some("photo".into()), ..ListFilter::new(Visibility::PublicOr { user_id: "u2".into() }) },
            set(&["a"]),
        ),
    ];
    for (what, filter, expected) in cases {
        let (got, total) = list_ids(store, filter).await;
        assert_eq!(got, expected, "{}: visibility {what}", b.name);
        assert_eq!(total, expected.len() as u64);
    }
}

/// Walks every page of `filter` (limit `limit`), checking page sizes, totals and cursors.
async fn walk(store: &dyn MediaStore, mut filter: ListFilter, limit: u32, total: usize) -> Vec<String> {
    filter.limit = limit;
    let mut seen = Vec::new();
    for page_no in 0.. {
        let page = store.list(&filter).await.unwrap();
        assert_eq!(page.total, total as u64, "page {page_no}: total ignores the cursor");
        assert_eq!(page.limit, limit);
        let remaining = total - seen.len();
        assert_eq!(page.items.len(), remaining.min(limit as usize), "page {page_no} size");
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => {
                assert!(seen.len() < total, "a cursor only while items remain");
                assert!(
                    cursor.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                    "URL-safe: {cursor}"
                );
                filter.cursor = Some(cursor);
            }
            None => break,
        }
        assert!(page_no < 100, "runaway pagination");
    }
    seen
}

/// The ids of every page of `filter`, following cursors (at most 20 pages), checking nothing.
async fn follow_cursors(store: &dyn MediaStore, mut filter: ListFilter) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let page = store.list(&filter).await.unwrap();
        seen.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    seen
}

async fn pages_are_stable_without_gaps_or_duplicates(store: &dyn MediaStore, b: &Backend) {
    // 25 items, createdAt shared by groups of three (same millisecond), inserted out of order:
    // only the id tie-break makes the order total. Groups are whole seconds apart; sub-second
    // keys are checked separately below.
    let mut records: Vec<MediaRecord> = (0..25).map(|i| record(&new_media_id(), "pager", (i / 3) * 1000)).collect();
    records.reverse();
    records.swap(0, 12);
    for r in &records {
        store.insert(r).await.unwrap();
    }
    // A DELETED item and someone else's item in the same time range must not show up.
    let mut deleted = record("zz-deleted", "pager", 5000);
    deleted.media.status = MediaStatus::Deleted;
    store.insert(&deleted).await.unwrap();
    store.insert(&record("zz-other", "other-user", 5000)).await.unwrap();

    let mut expected: Vec<(i64, String)> =
        records.iter().map(|r| (r.media.created_at.unix_millis(), r.media.id.clone())).collect();
    expected.sort();
    expected.reverse();
    let newest_first: Vec<String> = expected.into_iter().map(|(_, id)| id).collect();

    let by_user = ListFilter { user_id: Some("pager".into()), ..all() };
    let walked = walk(store, by_user.clone(), 10, 25).await;
    assert_eq!(walked, newest_first, "{}: 3 pages of 10/10/5 in (createdAt, id) DESC order", b.name);
    assert_eq!(walked.iter().collect::<BTreeSet<_>>().len(), 25, "no duplicates");

    let oldest = ListFilter { sort: SortOrder::OldestFirst, ..by_user.clone() };
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(walk(store, oldest.clone(), 10, 25).await, oldest_first, "{}: ascending walk", b.name);
    // An exact multiple of the page size ends with a full page and no cursor.
    assert_eq!(walk(store, by_user.clone(), 5, 25).await, newest_first, "{}: 5 pages of 5", b.name);
    assert_eq!(walk(store, by_user.clone(), 1, 25).await, newest_first, "{}: 25 pages of 1", b.name);

    // Items created after the first page was served (newer than everything) do not shift the
    // following pages.
    let first = store.list(&ListFilter { limit: 10, ..by_user.clone() }).await.unwrap();
    store.insert(&record("zz-late", "pager", 100_000)).await.unwrap();
    let second =
        store.list(&ListFilter { limit: 10, cursor: first.next_cursor.clone(), ..by_user.clone() }).await.unwrap();
    assert_eq!(ids(&second), newest_first[10..20], "{}: second page after a concurrent insert", b.name);
    assert_eq!(second.total, 26);

    // Keys a millisecond apart within one second, ids in the opposite order to time: only a
    // cursor that keeps millisecond precision walks these without repeats or gaps.
    let ms: Vec<MediaRecord> = (0..6).map(|i| record(&format!("ms-{}", 5 - i), "ms-pager", 200_000 + i)).collect();
    for r in &ms {
        store.insert(r).await.unwrap();
    }
    let by_ms_user = ListFilter { user_id: Some("ms-pager".into()), ..all() };
    let expected: Vec<String> = ms.iter().rev().map(|r| r.media.id.clone()).collect();
    if b.stand_in {
        // nx-27017 gap: `$lt`/`$gt`/`$lte`/equality on BSON dates compare at whole-second
        // precision (sorting is exact), so the cursor condition on createdAt repeats or skips
        // items of the same second. Correct on MongoDB, which compares milliseconds.
        let got = follow_cursors(store, ListFilter { limit: 2, ..by_ms_user }).await;
        eprintln!(
            "NOTE nx-27017: skipped sub-second cursor assertion (date comparisons truncate to seconds): expected {expected:?}, got {got:?}"
        );
    } else {
        assert_eq!(walk(store, by_ms_user, 2, 6).await, expected, "{}: millisecond keys", b.name);
    }
}

async fn limits_are_clamped(store: &dyn MediaStore, b: &Backend) {
    for i in 0..3 {
        store.insert(&record(&format!("l{i}"), "u", i)).await.unwrap();
    }
    let page = store.list(&ListFilter { limit: 0, ..all() }).await.unwrap();
    assert_eq!((page.limit, page.items.len(), page.total), (1, 1, 3), "{}: limit 0 → 1", b.name);
    assert!(page.next_cursor.is_some());
    let page = store.list(&ListFilter { limit: 5000, ..all() }).await.unwrap();
    assert_eq!((page.limit, page.items.len()), (100, 3), "{}: limit 5000 → 100", b.name);
}

async fn a_malformed_cursor_is_rejected(store: &dyn MediaStore, b: &Backend) {
    store.insert(&record("x", "u", 0)).await.unwrap();
    for bad in ["not a cursor!", "%%%", "AAAA", "MXx4fHk", "Mnw1fGlk", &"A".repeat(1000)] {
        let err = store.list(&ListFilter { cursor: Some(bad.to_owned()), ..all() }).await.unwrap_err();
        assert_eq!(err, StoreError::InvalidCursor, "{}: cursor {bad:?}", b.name);
    }
}

/// A regular caller's listing is two alternatives (public; own and not public): `total` adds
/// them up, each counted once, to `TOTAL_CAP` ("more than" past it); pages merge them in order
/// across cursors, both ways. Whole seconds: the stand-in compares dates to the second.
async fn a_callers_listing_merges_and_counts_both_branches(store: &dyn MediaStore, b: &Backend) {
    let listed = |id: String, user: &str, public: bool, second: i64| {
        let mut r = record(&id, user, second * 1000);
        r.media.is_public = public;
        r
    };
    let cap = TOTAL_CAP as i64;
    // u1: cap/2 private and 10 public; u2: cap/2 public; u3: 50 private; 20 DELETED public.
    let mut records = Vec::new();
    for i in 0..cap / 2 {
        records.push(listed(format!("own-{i:05}"), "u1", false, i * 2));
        records.push(listed(format!("pub-{i:05}"), "u2", true, i * 2 + (i % 3)));
    }
    for i in 0..10 {
        records.push(listed(format!("own-pub-{i:02}"), "u1", true, i * 7));
    }
    for i in 0..50 {
        records.push(listed(format!("other-{i:02}"), "u3", false, i));
    }
    for i in 0..20 {
        let mut deleted = listed(format!("deleted-{i:02}"), "u2", true, i);
        deleted.media.status = MediaStatus::Deleted;
        records.push(deleted);
    }
    futures_util::stream::iter(&records)
        .for_each_concurrent(16, |r| async move { store.insert(r).await.unwrap() })
        .await;

    let caller = |user: &str| ListFilter::new(Visibility::PublicOr { user_id: user.into() });
    let total = |filter: ListFilter| async move { store.list(&filter).await.unwrap().total };
    assert_eq!(total(caller("u1")).await, TOTAL_CAP + 1, "{}: more than the cap", b.name);
    assert_eq!(total(caller("u3")).await, TOTAL_CAP / 2 + 10 + 50, "{}: exact below it", b.name);
    assert_eq!(total(ListFilter { is_public: Some(false), ..caller("u1") }).await, TOTAL_CAP / 2, "{}", b.name);

    // u3's listing walked in pages of 97, both orders, against the order computed here.
    let mut visible: Vec<&MediaRecord> = records
        .iter()
        .filter(|r| r.media.status != MediaStatus::Deleted && (r.media.is_public || r.media.user_id == "u3"))
        .collect();
    visible.sort_by_key(|r| (r.media.created_at, r.media.id.clone()));
    let oldest_first: Vec<String> = visible.iter().map(|r| r.media.id.clone()).collect();
    for sort in [SortOrder::NewestFirst, SortOrder::OldestFirst] {
        let mut filter = ListFilter { limit: 97, sort, ..caller("u3") };
        let mut walked = Vec::new();
        loop {
            let page = store.list(&filter).await.unwrap();
            assert!(page.items.len() <= 97);
            walked.extend(page.items.into_iter().map(|m| m.id));
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => break,
            }
        }
        let mut expected = oldest_first.clone();
        if sort == SortOrder::NewestFirst {
            expected.reverse();
        }
        assert_eq!(walked, expected, "{}: {sort:?}", b.name);
    }
}

async fn idempotency_keys_are_first_writer_wins(store: &dyn MediaStore, b: &Backend) {
    assert_eq!(store.claim_idempotency("u1:key-1", "m1").await.unwrap(), None, "{}: first claim", b.name);
    assert_eq!(
        store.claim_idempotency("u1:key-1", "m2").await.unwrap(),
        Some("m1".into()),
        "{}: retry sees m1",
        b.name
    );
    assert_eq!(
        store.claim_idempotency("u2:key-1", "m3").await.unwrap(),
        None,
        "{}: another scope is another key",
        b.name
    );

    // Only the claimant can release.
    store.release_idempotency("u1:key-1", "m2").await.unwrap();
    assert_eq!(store.claim_idempotency("u1:key-1", "m9").await.unwrap(), Some("m1".into()));
    store.release_idempotency("u1:key-1", "m1").await.unwrap();
    store.release_idempotency("u1:key-1", "m1").await.unwrap(); // idempotent
    assert_eq!(store.claim_idempotency("u1:key-1", "m4").await.unwrap(), None, "{}: released key is free", b.name);

    // Concurrent claims: exactly one wins and everyone else learns its id.
    let claims =
        join_all((0..8).map(|i| store.claim_idempotency("u1:race", if i % 2 == 0 { "even" } else { "odd" }))).await;
    let results: Vec<Option<String>> = claims.into_iter().map(Result::unwrap).collect();
    let winners = results.iter().filter(|r| r.is_none()).count();
    assert_eq!(winners, 1, "{}: one winner among {results:?}", b.name);
    let owner = store.claim_idempotency("u1:race", "late").await.unwrap().expect("claimed");
    assert!(results.iter().flatten().all(|id| *id == owner), "{}: losers see the winner {owner}: {results:?}", b.name);

    // A stale claim (its create died) is taken over once, and only while it is older than asked.
    let past = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - 60_000);
    let soon = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 60_000);
    assert!(!store.take_over_idempotency("u1:key-1", "m4", "m5", past).await.unwrap(), "{}: claim too young", b.name);
    assert!(!store.take_over_idempotency("u1:key-1", "m1", "m5", soon).await.unwrap(), "{}: not m1's any more", b.name);
    let takers = join_all(["t1", "t2", "t3"].map(|id| store.take_over_idempotency("u1:key-1", "m4", id, soon))).await;
    let took: Vec<bool> = takers.into_iter().map(Result::unwrap).collect();
    assert_eq!(took.iter().filter(|t| **t).count(), 1, "{}: one taker among {took:?}", b.name);
    let now_owner = store.claim_idempotency("u1:key-1", "m6").await.unwrap().expect("claimed");
    assert!(["t1", "t2", "t3"].contains(&now_owner.as_str()), "{}: {now_owner}", b.name);

    // Keys expire: claims made before the cut-off go, younger ones stay.
    assert_eq!(store.expire_idempotency(past).await.unwrap(), 0, "{}: nothing that old", b.name);
    let expired = store.expire_idempotency(soon).await.unwrap();
    assert_eq!(expired, 3, "{}: u1:key-1, u2:key-1, u1:race", b.name);
    assert_eq!(store.claim_idempotency("u1:key-1", "m7").await.unwrap(), None, "{}: the key is free again", b.name);
}

fn session(upload_id: &str, expires_offset_ms: i64) -> UploadSession {
    UploadSession {
        upload_id: upload_id.to_owned(),
        user_id: "uploader".into(),
        storage_key: format!("uploads/{upload_id}"),
        backend_upload_id: format!("s3-{upload_id}"),
        original_name: "big file.mkv".into(),
        declared_size: Some(20_000_000_000),
        entity_id: Some("course-1".into()),
        entity_type: Some("course".into()),
        is_public: true,
        metadata: Some(json!({"source": "camera", "n": [1, 2]})),
        part_size: 8 * 1024 * 1024,
        created_at: at(0),
        expires_at: at(expires_offset_ms),
    }
}

/// Parts extend a live session; the sweeper's delete takes only expired ones; the two never
/// both succeed on one session.
async fn extending_and_sweeping_uploads_exclude_each_other(store: &dyn MediaStore, b: &Backend) {
    store.create_upload(&session("live", 1_000)).await.unwrap();
    store.create_upload(&session("old", 0)).await.unwrap();
    store.record_part("old", &UploadPart { part_number: 1, size: 5, etag: "e".into() }).await.unwrap();
    let now = at(500);
    // Live: extended (never shortened), not swept.
    assert_eq!(store.extend_upload("live", now, at(5_000)).await, Ok(true), "{}", b.name);
    assert_eq!(store.extend_upload("live", now, at(2_000)).await, Ok(true), "{}", b.name);
    assert_eq!(store.get_upload("live").await.unwrap().unwrap().expires_at, at(5_000), "{}", b.name);
    assert_eq!(store.delete_expired_upload("live", at(4_999)).await, Ok(false), "{}", b.name);
    // Expired: not extended, swept once, with its parts.
    assert_eq!(store.extend_upload("old", now, at(5_000)).await, Ok(false), "{}", b.name);
    assert_eq!(store.delete_expired_upload("old", now).await, Ok(true), "{}", b.name);
    assert_eq!(store.delete_expired_upload("old", now).await, Ok(false), "{}: only one sweeper", b.name);
    assert_eq!(store.get_upload("old").await.unwrap(), None);
    assert!(store.list_parts("old").await.unwrap().is_empty(), "{}", b.name);
    assert_eq!(store.extend_upload("missing", now, at(5_000)).await, Ok(false), "{}", b.name);
}

async fn upload_sessions_have_a_lifecycle(store: &dyn MediaStore, b: &Backend) {
    let live = session("up-live", 3_600_000);
    store.create_upload(&live).await.unwrap();
    assert_eq!(store.get_upload("up-live").await.unwrap(), Some(live.clone()), "{}: round trip", b.name);
    let bare = UploadSession {
        declared_size: None,
        entity_id: None,
        entity_type: None,
        metadata: None,
        is_public: false,
        ..session("up-bare", 3_600_000)
    };
    store.create_upload(&bare).await.unwrap();
    assert_eq!(store.get_upload("up-bare").await.unwrap(), Some(bare), "{}: nulls", b.name);
    assert!(
        matches!(store.create_upload(&live).await, Err(StoreError::Conflict(_))),
        "{}: duplicate upload id",
        b.name
    );
    assert_eq!(store.get_upload("up-none").await.unwrap(), None);

    // Parts arrive out of order; part 2 is retried with a new etag and size.
    let part = |n: u32, size: u64, etag: &str| UploadPart { part_number: n, size, etag: etag.to_owned() };
    store.record_part("up-live", &part(3, 100, "e3")).await.unwrap();
    store.record_part("up-live", &part(1, 8_388_608, "e1")).await.unwrap();
    store.record_part("up-live", &part(2, 5, "e2-broken")).await.unwrap();
    store.record_part("up-live", &part(2, 8_388_608, "e2")).await.unwrap();
    store.record_part("up-live", &part(10, 1, "e10")).await.unwrap(); // numeric, not text, order
    let parts = store.list_parts("up-live").await.unwrap();
    assert_eq!(
        parts,
        vec![part(1, 8_388_608, "e1"), part(2, 8_388_608, "e2"), part(3, 100, "e3"), part(10, 1, "e10")],
        "{}: ordered by part number, retry replaced",
        b.name
    );
    assert_eq!(store.list_parts("up-bare").await.unwrap(), vec![], "parts belong to their session");
    assert_eq!(
        store.record_part("up-none", &part(1, 1, "x")).await,
        Err(StoreError::NotFound),
        "{}: unknown session",
        b.name
    );
    assert_eq!(store.list_parts("up-none").await.unwrap(), vec![]);

    // Expiry: two sessions expired (one exactly now), listed soonest-expired first.
    let now = at(1_000_000);
    store.create_upload(&session("up-old", 10_000)).await.unwrap();
    store.create_upload(&session("up-now", 1_000_000)).await.unwrap();
    let expired: Vec<String> = store.expired_uploads(now, 10).await.unwrap().into_iter().map(|s| s.upload_id).collect();
    assert_eq!(expired, ["up-old", "up-now"], "{}: expires_at <= now", b.name);
    let expired = store.expired_uploads(now, 1).await.unwrap();
    assert_eq!(expired, vec![session("up-old", 10_000)], "{}: limit, full session", b.name);
    assert_eq!(store.expired_uploads(at(0), 10).await.unwrap(), vec![]);
    // One millisecond in the future is not expired yet.
    store.create_upload(&session("up-soon", 1_000_001)).await.unwrap();
    let expired: Vec<String> = store.expired_uploads(now, 10).await.unwrap().into_iter().map(|s| s.upload_id).collect();
    if b.stand_in {
        // nx-27017 gap: date comparisons truncate to whole seconds (see the pagination test).
        eprintln!("NOTE nx-27017: skipped sub-second expiry assertion; got {expired:?}");
    } else {
        assert_eq!(expired, ["up-old", "up-now"], "{}: 1 ms before expiry", b.name);
    }

    // Delete removes the session and its parts; again is fine; no parts afterwards.
    store.delete_upload("up-live").await.unwrap();
    assert_eq!(store.get_upload("up-live").await.unwrap(), None, "{}: session gone", b.name);
    assert_eq!(store.list_parts("up-live").await.unwrap(), vec![], "{}: parts gone", b.name);
    store.delete_upload("up-live").await.unwrap();
    store.delete_upload("never-existed").await.unwrap();
    assert_eq!(store.record_part("up-live", &part(4, 1, "late")).await, Err(StoreError::NotFound));
    assert_eq!(store.list_parts("up-live").await.unwrap(), vec![], "{}: no orphan part", b.name);
    assert!(store.get_upload("up-bare").await.unwrap().is_some(), "other sessions untouched");
}

async fn health_check_answers(store: &dyn MediaStore, b: &Backend) {
    store.health_check().await.unwrap_or_else(|e| panic!("{}: {e}", b.name));
}

// ---------------------------------------------------------------------------------------------
// Running the contract on each backend

async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("nested/dir/media.db")).await.unwrap();
    (store, dir)
}

async fn mongo_store() -> (MongoStore, MongoServer, Backend) {
    let server = MongoServer::start();
    let store = MongoStore::connect(server.uri(), server.database()).await.unwrap();
    if server.is_stand_in() {
        // nx-27017 gap: it accepts compound indexes that include `_id` (the store's listing
        // indexes end in `createdAt, _id` so MongoDB serves sort and keyset from the index), but
        // emits `json_extract(data, '_id')` for them, and from then on every insert fails with
        // "JSON path error near '_id'" (code 8). It also ignores index names, so drop them all;
        // the unique `_id` index stays. Real MongoDB keeps the indexes.
        eprintln!("NOTE nx-27017: dropping the media listing indexes (compound indexes with _id break its inserts)");
        store.database().collection::<mongodb::bson::Document>("media").drop_indexes().await.unwrap();
    }
    let backend = Backend {
        name: if server.is_stand_in() { "mongo (nx-27017)" } else { "mongo" },
        stand_in: server.is_stand_in(),
    };
    (store, server, backend)
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite_store().await;
                    super::$name(&store, &super::SQLITE).await;
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _server, backend) = super::mongo_store().await;
                    super::$name(&store, &backend).await;
                    // Only reached when the contract passed; a failed run leaves its uniquely
                    // named database behind for inspection.
                    store.database().drop().await.unwrap();
                }
            )*
        }
    };
}

contract!(
    insert_then_get_returns_every_field,
    get_json_is_the_document_of_get,
    duplicate_id_is_a_conflict,
    update_replaces_the_whole_record,
    replace_if_unchanged_is_a_compare_and_set,
    list_filters_each_field,
    q_is_a_literal_case_insensitive_substring,
    visibility_limits_what_a_caller_sees,
    pages_are_stable_without_gaps_or_duplicates,
    limits_are_clamped,
    a_malformed_cursor_is_rejected,
    a_callers_listing_merges_and_counts_both_branches,
    idempotency_keys_are_first_writer_wins,
    upload_sessions_have_a_lifecycle,
    extending_and_sweeping_uploads_exclude_each_other,
    health_check_answers,
);

// ---------------------------------------------------------------------------------------------
// SQLite specifics: the file is shared by processes, so state must survive a reopen.

#[tokio::test]
async fn sqlite_reopens_with_its_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.db");
    let r = full_record();
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert(&r).await.unwrap();
    }
    // Two stores on one file, as two worker processes would have.
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    assert_eq!(one.get(&r.media.id).await.unwrap(), Some(r.clone()));
    let other = record("from-two", "u", 1);
    two.insert(&other).await.unwrap();
    assert_eq!(one.get("from-two").await.unwrap(), Some(other));
    assert_eq!(one.claim_idempotency("k", "m1").await.unwrap(), None);
    assert_eq!(two.claim_idempotency("k", "m2").await.unwrap(), Some("m1".into()));
}
