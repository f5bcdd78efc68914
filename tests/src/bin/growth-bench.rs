//! growth-bench: listing latency as the media table grows, from 10 thousand to 1 million documents
//! (SQLite). Target (issue 13): p99 of `media.findByEntity` and `media.findAll` at 1M at most 1.5x
//! their p99 at 10k.
//!
//! Documents go straight into the store (`MediaStore::insert`, 64 in flight), not through NATS:
//! document `i` is owned by `user-{i % 100}`, linked to `post-{i % 1000}` (type `post`), public when
//! `i % 10 == 0`, READY, created `i` seconds after a fixed instant. At each size the listings are
//! timed through the store API (sequential calls; the filters the service builds for a regular
//! caller, `user-7`), then through NATS with one media-service process on the same file (closed
//! loop at concurrency 1). The query plans are printed once (`sqlite3`'s EXPLAIN QUERY PLAN).
//!
//! Usage: `growth-bench [--docs N] [--seconds S]` (default 1,000,000 documents, 5 s per NATS
//! measurement; store timings are 5,000 calls each). The MongoDB path is not measured: the testkit's
//! nx-27017 is not meant to hold a million documents in a bench's time.

use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_contracts::{ListFilter, Media, MediaRecord, MediaStatus, MediaType, Timestamp, Visibility, new_media_id};
use mediabus_e2e::WorkerProcess;
use mediabus_e2e::bench::{Target, connect_clients, measure, seconds_arg, sibling_bin, summary};
use mediabus_store::{MediaStore, SqliteStore};
use mediabus_testkit::NatsServer;
use serde_json::json;

/// 2026-01-01T00:00:00Z: document `i` is created `i` seconds later.
const BASE_MS: i64 = 1_767_225_600_000;
/// Sequential store calls timed per listing: enough that p99 is the 50th slowest, not the 5th, so
/// one scheduling hiccup of a shared 2-core machine does not decide it (~1.5 s per listing).
const STORE_CALLS: usize = 5_000;
const CALLER: &str = "user-7";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs: usize = args
        .iter()
        .position(|a| a == "--docs")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |n| n.parse().expect("--docs N"));
    let seconds = seconds_arg();
    let data = mediabus_testkit::repo_root().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let dir = tempfile::tempdir_in(data).expect("temp dir");
    let db = dir.path().join("media.db").to_str().unwrap().to_owned();
    let files = dir.path().join("files").to_str().unwrap().to_owned();
    let store = SqliteStore::open(&db).await.expect("open the store");
    let server = NatsServer::start();
    let clients = connect_clients(&server.url()).await;

    println!(
        "listing growth, SQLite: p50/p99 by table size; store: {STORE_CALLS} sequential calls; NATS: one media-service, \
         concurrency 1, {seconds} s"
    );
    println!("{:<40} {:>9} {:>9} {:>9}", "listing", "docs", "p50 µs", "p99 µs");
    let mut inserted = 0;
    let mut first: Vec<f64> = Vec::new();
    for (step, size) in [10_000.min(docs), docs].into_iter().enumerate() {
        let start = Instant::now();
        futures_util::stream::iter(inserted..size)
            .map(|i| {
                let store = store.clone();
                async move { store.insert(&record(i)).await }
            })
            .buffer_unordered(64)
            .for_each(|r| async move { r.expect("insert") })
            .await;
        eprintln!("growth-bench: {} documents inserted in {:.1} s", size - inserted, start.elapsed().as_secs_f64());
        inserted = size;

        let mut p99s = Vec::new();
        for (name, filter) in filters() {
            let (p50, p99) = time_store(&store, &filter).await;
            println!("{:<40} {size:>9} {p50:>9} {p99:>9}", format!("{name} (store)"));
            p99s.push((format!("{name} (store)"), p99 as f64));
        }
        for (name, target) in nats_targets() {
            let password = server.password("media");
            let url = server.url();
            let env = [
                ("MEDIABUS__NATS__URL", url.as_str()),
                ("MEDIABUS__NATS__PASSWORD", password.as_str()),
                ("MEDIABUS__STORE__PATH", db.as_str()),
                ("MEDIABUS__STORAGE__ROOT", files.as_str()),
                ("RUST_LOG", "warn"),
            ];
            let worker = WorkerProcess::spawn_with_env(&sibling_bin("media-service"), &env, &[]);
            let sample = measure(&clients, &target, 1, seconds).await;
            drop(worker);
            println!("{:<40} {size:>9} {:>9} {:>9}", format!("{name} (NATS)"), sample.p50_us, sample.p99_us);
            p99s.push((format!("{name} (NATS)"), sample.p99_us as f64));
        }
        for (i, (name, p99)) in p99s.iter().enumerate() {
            let label = format!("growth: {name} p99, {size} docs");
            if step == 0 {
                first.push(*p99);
                summary(&label, *p99, "µs", "-", None, "-");
            } else {
                summary(&label, *p99, "µs", &format!("{} docs", 10_000.min(docs)), Some(p99 / first[i]), "<= 1.5");
            }
        }
    }
    explain(&db);
}

/// Document `i` of the data set (see the module docs).
fn record(i: usize) -> MediaRecord {
    let id = new_media_id();
    let at = Timestamp::from_unix_millis(BASE_MS + i as i64 * 1000);
    MediaRecord {
        media: Media {
            url: format!("/api/media/{id}/content"),
            id,
            media_type: MediaType::Image,
            original_name: format!("photo-{i}.jpg"),
            mime_type: "image/jpeg".into(),
            size: 100_000 + i as u64,
            user_id: format!("user-{}", i % 100),
            entity_id: Some(format!("post-{}", i % 1000)),
            entity_type: Some("post".into()),
            metadata: Some(json!({"caption": "a photo"})),
            is_public: i.is_multiple_of(10),
            status: MediaStatus::Ready,
            created_at: at,
            updated_at: at,
            checksum: Some(format!("sha256:{:064x}", i)),
            details: Some(json!({"width": 4000, "height": 3000})),
            variants: vec![],
            failure_reason: None,
        },
        storage_key: None,
    }
}

/// The store filters `media.findByEntity` and `media.findAll` build for [`CALLER`] (first page, 20).
fn filters() -> Vec<(&'static str, ListFilter)> {
    let caller = Visibility::PublicOr { user_id: CALLER.into() };
    let mut by_entity = ListFilter::new(caller.clone());
    by_entity.entity_id = Some("post-7".into());
    by_entity.entity_type = Some("post".into());
    vec![("media.findByEntity post-7", by_entity), ("media.findAll", ListFilter::new(caller))]
}

/// The same listings as NestJS request packets with the caller's token.
fn nats_targets() -> Vec<(&'static str, Target)> {
    let mut auth = HeaderMap::new();
    auth.insert("Authorization", format!("Bearer {}", mediabus_e2e::dev_token(CALLER)).as_str());
    [
        ("media.findByEntity post-7", "media.findByEntity", json!({"entityId": "post-7", "entityType": "post"})),
        ("media.findAll", "media.findAll", json!({})),
    ]
    .into_iter()
    .map(|(name, subject, data)| {
        let body = json!({"pattern": subject, "data": data, "id": "growth-1"});
        let mut target = Target::new(subject, Bytes::from(body.to_string()));
        target.headers = auth.clone();
        (name, target)
    })
    .collect()
}

/// p50 and p99 in µs of [`STORE_CALLS`] sequential `list` calls (after 50 untimed ones).
async fn time_store(store: &SqliteStore, filter: &ListFilter) -> (u64, u64) {
    for _ in 0..50 {
        store.list(filter).await.expect("list");
    }
    let mut latencies = Vec::with_capacity(STORE_CALLS);
    for _ in 0..STORE_CALLS {
        let start = Instant::now();
        let page = store.list(filter).await.expect("list");
        latencies.push(start.elapsed().as_micros() as u64);
        assert!(!page.items.is_empty(), "the listing finds documents");
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

/// Prints SQLite's plans for the counts and the page of both listings, as the store words them
/// (libs/store/src/sqlite.rs `list_statements`: the caller's visibility as two disjoint branches,
/// public and own-not-public, each counted and read in index order), if the `sqlite3` shell is
/// installed. The shell's SQLite may be older than the one compiled into the store.
fn explain(db: &str) {
    let live = "status <> 'DELETED'";
    let entity = format!("{live} AND entity_id = 'post-7' AND entity_type = 'post'");
    let branches = ["is_public = 1", "user_id = 'user-7' AND is_public = 0"];
    let columns = "id, created_at";
    let order = "ORDER BY created_at DESC, id DESC LIMIT 21";
    println!("\nquery plans (sqlite3 EXPLAIN QUERY PLAN):");
    for (name, cond) in [("findByEntity", entity.as_str()), ("findAll", live)] {
        let mut statements: Vec<(&str, String)> = branches
            .iter()
            .map(|branch| {
                let limit = mediabus_store::TOTAL_CAP + 1;
                ("count", format!("SELECT COUNT(*) FROM (SELECT 1 FROM media WHERE {cond} AND {branch} LIMIT {limit})"))
            })
            .collect();
        let page = branches
            .map(|branch| format!("SELECT * FROM (SELECT {columns} FROM media WHERE {cond} AND {branch} {order})"))
            .join(" UNION ALL ");
        statements.push(("page", format!("{page} {order}")));
        for (what, sql) in statements {
            let out = std::process::Command::new("sqlite3").arg(db).arg(format!("EXPLAIN QUERY PLAN {sql}")).output();
            match out {
                Ok(out) if out.status.success() => {
                    let plan =
                        String::from_utf8_lossy(&out.stdout).lines().map(str::trim).collect::<Vec<_>>().join(" / ");
                    println!("{name} {what}: {plan}");
                }
                _ => println!("{name} {what}: (sqlite3 not available)"),
            }
        }
    }
}
