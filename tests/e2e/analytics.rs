//! View and download counts through the bridge (DESIGN §14): the bridge counts what it serves in
//! memory and flushes every 2 s to the media service (`media.analytics`), which adds the counts
//! to the store; `GET /api/media/{id}/stats` reads them, and a media worker restart loses nothing
//! flushed. An in-process stack: nats-server, the media service, the bridge's router; and the
//! `http-bridge` binary, to show the counts it holds at SIGTERM are flushed as it stops.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use mediabus_e2e::http::call;
use mediabus_e2e::{WorkerProcess, built_bin};
use mediabus_rpc::{NatsSettings, RpcClient};
use mediabus_testkit::{NatsServer, jwt_keys, media_files};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::stack::{KID, token};

/// One request through the bridge's router: the status and the body.
async fn get(router: &axum::Router, uri: &str, token: &str, range: Option<&str>) -> (StatusCode, Bytes) {
    let mut request = Request::builder().uri(uri).header("authorization", format!("Bearer {token}"));
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    (status, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap())
}

async fn stats(router: &axum::Router, id: &str, token: &str) -> (StatusCode, Value) {
    let (status, body) = get(router, &format!("/api/media/{id}/stats"), token, None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Polls the stats until they are `views`/`downloads` (the next flush is at most 2 s away).
async fn await_stats(router: &axum::Router, id: &str, token: &str, views: u64, downloads: u64) {
    let want = json!({"id": id, "views": views, "downloads": downloads});
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, got) = stats(router, id, token).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "stats stuck at {status} {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fetches_and_downloads_through_the_bridge_are_counted_and_survive_a_worker_restart() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let files = media_service::config::StorageConfig::Local { root: dir.path().join("files") };
    let mut media = media_service::Settings::defaults();
    media.nats = NatsSettings::new(nats.url()).with_user("media", nats.password("media"));
    media.storage = files.clone();
    media.store = mediabus_store::StoreConfig::Sqlite { path: dir.path().join("mediabus.db") };
    media.auth.keys = vec![mediabus_auth::KeyConfig {
        kid: KID.into(),
        algorithm: "RS256".into(),
        secret: None,
        public_key_pem: Some(jwt_keys::RSA_PUBLIC.into()),
        public_key_file: None,
    }];
    let worker = media_service::start(media.clone(), media.nats.connect("media", 1024).await.unwrap()).await.unwrap();

    let mut bridge = http_bridge::config::Settings::defaults();
    bridge.storage = files;
    let client = NatsSettings::new(nats.url()).with_user("bridge", nats.password("bridge"));
    let client = client.connect("http-bridge", 1024).await.unwrap();
    let router = http_bridge::app(http_bridge::AppState::new(client, &bridge).await.unwrap());

    // A stored PNG of Olga's, with a thumbnail as the processor would write it.
    let olga = token("olga", "user");
    let backend = NatsSettings::new(nats.url()).with_user("backend", nats.password("backend"));
    let backend = RpcClient::new(backend.connect("backend", 64).await.unwrap());
    let png = std::fs::read(&media_files().png).unwrap();
    let file = json!({"buffer": base64_encode(&png), "originalname": "p.png", "mimetype": "image/png"});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {olga}").as_str());
    let uploaded: Value = backend.call_with_headers("upload_file", &json!({"file": file}), headers).await.unwrap();
    let id = uploaded["id"].as_str().unwrap().to_owned();
    // The local file store keeps key `variants/<id>/thumb.webp` at that path under its root.
    let thumb = dir.path().join("files/variants").join(&id).join("thumb.webp");
    std::fs::create_dir_all(thumb.parent().unwrap()).unwrap();
    std::fs::write(&thumb, b"RIFF....WEBPVP8 thumbnail").unwrap();
    let hls = dir.path().join("files/variants").join(&id).join("hls");
    std::fs::create_dir_all(hls.join("360p")).unwrap();
    std::fs::write(hls.join("master.m3u8"), "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\n360p/index.m3u8\n").unwrap();
    std::fs::write(hls.join("360p/index.m3u8"), "#EXTM3U\n#EXT-X-ENDLIST\n").unwrap();

    let (status, zero) = stats(&router, &id, &olga).await;
    assert_eq!((status, zero), (StatusCode::OK, json!({"id": id, "views": 0, "downloads": 0})));

    let started = Instant::now();
    // 100 views: 90 thumbnails and 10 HLS master playlists; rendition playlists do not count.
    for _ in 0..90 {
        let (status, body) = get(&router, &format!("/api/media/{id}/content?variant=thumb"), &olga, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(b"RIFF"));
    }
    for file in ["master.m3u8"; 10].into_iter().chain(["360p/index.m3u8"; 3]) {
        let (status, body) = get(&router, &format!("/api/media/{id}/hls/{file}"), &olga, None).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert!(body.starts_with(b"#EXTM3U"));
    }
    for _ in 0..10 {
        let (status, body) = get(&router, &format!("/api/media/{id}/content"), &olga, None).await;
        assert_eq!((status, body.len()), (StatusCode::OK, png.len()));
    }
    // A player's follow-up ranges are not downloads; a range from byte 0 is.
    for _ in 0..5 {
        let (status, _) = get(&router, &format!("/api/media/{id}/content"), &olga, Some("bytes=10-20")).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    }
    // HEADs (a client checking size or freshness) are neither views nor downloads.
    for uri in [format!("/api/media/{id}/content"), format!("/api/media/{id}/content?variant=thumb")] {
        for _ in 0..3 {
            let request = Request::head(&uri).header("authorization", format!("Bearer {olga}"));
            let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "HEAD {uri}");
            assert!(response.headers().contains_key("etag"), "HEAD {uri}");
        }
    }
    let served = started.elapsed();
    await_stats(&router, &id, &olga, 100, 10).await;
    eprintln!("118 fetches served in {served:?}; counts visible {:?} after the first", started.elapsed());

    let (status, body) = get(&router, &format!("/api/media/{id}/content"), &olga, Some("bytes=0-99")).await;
    assert_eq!((status, body.len()), (StatusCode::PARTIAL_CONTENT, 100));
    await_stats(&router, &id, &olga, 100, 11).await;

    // Owner or admin only; others get 404 as from findOne.
    assert_eq!(stats(&router, &id, &token("eve", "user")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(stats(&router, &id, &token("root", "admin")).await.1["downloads"], 11);

    // A new media worker: nothing flushed is lost.
    worker.shutdown().await;
    let _worker =
        media_service::start(media.clone(), media.nats.connect("media-2", 1024).await.unwrap()).await.unwrap();
    await_stats(&router, &id, &olga, 100, 11).await;

    let (_, doc) = get(&router, "/openapi.json", &olga, None).await;
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"]["/api/media/{id}/stats"]["get"].is_object(), "documented in /openapi.json");
}

/// The counts a bridge process gathered since its last periodic flush are flushed when it gets
/// SIGTERM: they show in the stats a restarted bridge serves. The fetches happen right after a
/// periodic flush was seen, well before the next (2 s later), so only the shutdown flush can
/// carry them.
#[tokio::test]
async fn counts_held_by_a_bridge_at_sigterm_are_flushed_as_it_stops() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    // Default settings: the development JWT key (`dev_token`) and content secret, as the bridge's.
    let mut media = media_service::Settings::defaults();
    media.nats = NatsSettings::new(nats.url()).with_user("media", nats.password("media"));
    media.storage = media_service::config::StorageConfig::Local { root: root.clone() };
    media.store = mediabus_store::StoreConfig::Sqlite { path: dir.path().join("mediabus.db") };
    let _worker = media_service::start(media.clone(), media.nats.connect("media", 1024).await.unwrap()).await.unwrap();

    let olga = mediabus_e2e::dev_token("olga");
    let bearer = format!("Bearer {olga}");
    let backend = NatsSettings::new(nats.url()).with_user("backend", nats.password("backend"));
    let backend = RpcClient::new(backend.connect("backend", 64).await.unwrap());
    let png = std::fs::read(&media_files().png).unwrap();
    let file = json!({"buffer": base64_encode(&png), "originalname": "p.png", "mimetype": "image/png"});
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", bearer.as_str());
    let uploaded: Value =
        backend.call_with_headers("upload_file", &json!({"file": file}), headers.clone()).await.unwrap();
    let id = uploaded["id"].as_str().unwrap().to_owned();
    let thumb = root.join("variants").join(&id).join("thumb.webp");
    std::fs::create_dir_all(thumb.parent().unwrap()).unwrap();
    std::fs::write(&thumb, b"RIFF....WEBPVP8 thumbnail").unwrap();
    let stats = || async {
        let reply: Value = backend.call_with_headers("media.stats", &json!({"id": id}), headers.clone()).await.unwrap();
        (reply["views"].as_u64().unwrap(), reply["downloads"].as_u64().unwrap())
    };

    let (url, root_str, password) = (nats.url(), root.to_str().unwrap().to_owned(), nats.password("bridge"));
    let env = [
        ("MEDIABUS__NATS__URL", url.as_str()),
        ("MEDIABUS__NATS__USER", "bridge"),
        ("MEDIABUS__NATS__PASSWORD", password.as_str()),
        ("MEDIABUS__STORAGE__ROOT", root_str.as_str()),
        ("MEDIABUS__HTTP__LISTEN", "127.0.0.1:0"),
        ("RUST_LOG", "warn"),
    ];
    let mut bridge = WorkerProcess::spawn_with_env(&built_bin("http-bridge"), &env, &[]);
    let port = bridge.ready_port();
    let auth = [("authorization", bearer.as_str())];
    let thumb_uri = format!("/api/media/{id}/content?variant=thumb");
    let content_uri = format!("/api/media/{id}/content");
    assert_eq!(call(port, "GET", &thumb_uri, &auth, Bytes::new()).await.status, StatusCode::OK);
    // The one view shows up: a periodic flush just ran; the next is about 2 s away.
    let deadline = Instant::now() + Duration::from_secs(15);
    while stats().await != (1, 0) {
        assert!(Instant::now() < deadline, "the periodic flush never came: {:?}", stats().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let flushed = Instant::now();
    for _ in 0..20 {
        assert_eq!(call(port, "GET", &thumb_uri, &auth, Bytes::new()).await.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let reply = call(port, "GET", &content_uri, &auth, Bytes::new()).await;
        assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, png.len()));
    }
    let held_for = flushed.elapsed();
    eprintln!("23 fetches held {held_for:?} after the periodic flush, then SIGTERM");
    bridge.terminate();
    assert!(held_for < Duration::from_millis(1500), "fetches took {held_for:?}: a periodic flush may have run");
    let exit = tokio::time::timeout(Duration::from_secs(30), tokio::task::spawn_blocking(move || bridge.wait()));
    let status = exit.await.expect("the bridge exits within 30 s of SIGTERM").unwrap();
    assert!(status.success(), "{status:?}");

    // A new bridge process serves the stats: nothing held at SIGTERM was lost.
    let bridge = WorkerProcess::spawn_with_env(&built_bin("http-bridge"), &env, &[]);
    let reply = call(bridge.ready_port(), "GET", &format!("/api/media/{id}/stats"), &auth, Bytes::new()).await;
    assert_eq!((reply.status, reply.json()), (StatusCode::OK, json!({"id": id, "views": 21, "downloads": 3})));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
