//! The HTTP bridge in front of a real media service on a real nats-server: REST routes onto
//! subjects, the contract's error object with HTTP status `err.status`, 503 without responders.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_bridge::{AppState, app};
use media_service::Settings;
use mediabus_auth::KeyConfig;
use mediabus_testkit::NatsServer;
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "bridge-test-secret-0123456789abcdef";

struct Stack {
    _nats: NatsServer,
    _dir: tempfile::TempDir,
    _media: mediabus_rpc::Running,
    router: axum::Router,
}

impl Stack {
    async fn start(ready_services: &[&str]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::defaults();
        settings.nats.url = nats.url();
        settings.storage = media_service::config::StorageSettings::Local { root: dir.path().join("files") };
        settings.store = mediabus_store::StoreConfig::Sqlite { path: dir.path().join("media.db") };
        settings.auth.keys = vec![KeyConfig {
            kid: "k".into(),
            algorithm: "HS256".into(),
            secret: Some(SECRET.into()),
            public_key_pem: None,
            public_key_file: None,
        }];
        let client = mediabus_rpc::connect(&nats.url(), "media", 1024).await.unwrap();
        let media = media_service::start(settings, client).await.unwrap();
        let bridge_nats = async_nats::connect(nats.url()).await.unwrap();
        let ready = ready_services.iter().map(|s| s.to_string()).collect();
        let router = app(AppState::new(bridge_nats, Duration::from_secs(10), ready), 1024 * 1024);
        Self { _nats: nats, _dir: dir, _media: media, router }
    }

    /// Sends one request; returns the status and the JSON body.
    async fn send(&self, method: &str, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned()))).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

fn token(user: &str) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims =
        json!({"sub": user, "roles": ["user"], "iss": "mediabus", "aud": "mediabus-api", "iat": now, "exp": now + 600});
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k".into());
    encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_map_onto_media_subjects() {
    let stack = Stack::start(&["media"]).await;
    let alice = token("alice");
    let body = r#"{"originalName":"a.png","mimeType":"image/png","size":3,"url":"/a.png","entityId":"l1","entityType":"lesson"}"#;
    let (status, media) = stack.send("POST", "/api/media", Some(&alice), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let id = media["id"].as_str().unwrap();

    let (status, found) = stack.send("GET", &format!("/api/media/{id}"), Some(&alice), None).await;
    assert_eq!((status, &found), (StatusCode::OK, &media));
    let (status, err) = stack.send("GET", &format!("/api/media/{id}"), Some(&token("bob")), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("NOT_FOUND")));
    assert_eq!(err["status"], 404);

    let (_, page) = stack.send("GET", "/api/media?limit=1&isPublic=false", Some(&alice), None).await;
    assert_eq!((page["limit"].as_u64(), page["total"].as_u64()), (Some(1), Some(1)));
    let (_, by_user) = stack.send("GET", "/api/users/alice/media", Some(&alice), None).await;
    assert_eq!(by_user["items"][0]["id"], id);
    let (_, by_entity) = stack.send("GET", "/api/entities/lesson/l1/media", Some(&alice), None).await;
    assert_eq!(by_entity["items"][0]["id"], id);
    let (_, none) = stack.send("GET", "/api/entities/course/l1/media", Some(&alice), None).await;
    assert_eq!(none["total"], 0, "entityType from the path filters");

    let (status, updated) =
        stack.send("PATCH", &format!("/api/media/{id}"), Some(&alice), Some(r#"{"isPublic":true}"#)).await;
    assert_eq!((status, updated["isPublic"].as_bool()), (StatusCode::OK, Some(true)));
    let (status, removed) = stack.send("DELETE", &format!("/api/media/{id}"), Some(&alice), None).await;
    assert_eq!((status, removed["status"].as_str()), (StatusCode::OK, Some("DELETED")));
    let (status, _) = stack.send("GET", &format!("/api/media/{id}"), Some(&alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_the_contract_shape_and_status() {
    let stack = Stack::start(&["media"]).await;
    let (status, err) = stack
        .send("POST", "/api/media", None, Some(r#"{"originalName":"a","mimeType":"a/b","size":1,"url":"/a"}"#))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));
    let (status, err) = stack.send("POST", "/api/media", Some(&token("a")), Some("{oops")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_PAYLOAD")));
    let (status, err) = stack.send("POST", "/api/media", Some(&token("a")), Some("[1]")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD")));
    let (status, err) = stack.send("GET", "/api/media?limit=abc", Some(&token("a")), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD")));
    // No auth service runs here: no responders is a 503.
    let (status, err) = stack.send("POST", "/api/auth/login", None, Some(r#"{"email":"a@b.c","password":"x"}"#)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let stack = Stack::start(&["media"]).await;
    assert_eq!(stack.send("GET", "/healthz", None, None).await.0, StatusCode::OK);
    let (status, ready) = stack.send("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["services"]["media"].as_bool()), (StatusCode::OK, Some(true)));

    let waiting = Stack::start(&["media", "auth"]).await;
    let (status, ready) = waiting.send("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["services"]["auth"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
}
