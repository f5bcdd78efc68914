//! The HTTP bridge in front of a real media service on a real nats-server: REST routes onto
//! subjects, the contract's error object with HTTP status `err.status`, 503 without responders.
use axum::http::StatusCode;

use crate::stack::{Stack, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_routes_map_onto_media_subjects() {
    let stack = Stack::start(false, &["media"]).await;
    let alice = token("alice", "user");
    let body = r#"{"originalName":"a.png","mimeType":"image/png","size":3,"url":"/a.png","entityId":"l1","entityType":"lesson"}"#;
    let (status, media) = stack.send("POST", "/api/media", Some(&alice), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let id = media["id"].as_str().unwrap();

    let (status, found) = stack.send("GET", &format!("/api/media/{id}"), Some(&alice), None).await;
    assert_eq!((status, &found), (StatusCode::OK, &media));
    let (status, err) = stack.send("GET", &format!("/api/media/{id}"), Some(&token("bob", "user")), None).await;
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
    let stack = Stack::start(false, &["media"]).await;
    let (status, err) = stack
        .send("POST", "/api/media", None, Some(r#"{"originalName":"a","mimeType":"a/b","size":1,"url":"/a"}"#))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));
    let (status, err) = stack.send("POST", "/api/media", Some(&token("a", "user")), Some("{oops")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("MALFORMED_PAYLOAD")));
    let (status, err) = stack.send("POST", "/api/media", Some(&token("a", "user")), Some("[1]")).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD")));
    let (status, err) = stack.send("GET", "/api/media?limit=abc", Some(&token("a", "user")), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_PAYLOAD")));
    // No auth service runs here: no responders is a 503.
    let (status, err) = stack.send("POST", "/api/auth/login", None, Some(r#"{"email":"a@b.c","password":"x"}"#)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNAVAILABLE")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let stack = Stack::start(false, &["media"]).await;
    assert_eq!(stack.send("GET", "/healthz", None, None).await.0, StatusCode::OK);
    let (status, ready) = stack.send("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["services"]["media"].as_bool()), (StatusCode::OK, Some(true)));

    let waiting = Stack::start(false, &["media", "auth"]).await;
    let (status, ready) = waiting.send("GET", "/readyz", None, None).await;
    assert_eq!((status, ready["services"]["auth"].as_bool()), (StatusCode::SERVICE_UNAVAILABLE, Some(false)));
}
