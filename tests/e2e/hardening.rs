//! Issue 12 through the bridge: an `Authorization` header that is not ASCII is refused, never
//! anonymous (item 6); logins are throttled per client address, which the bridge takes from the
//! TCP peer and no client can choose (item 5).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::stack::{Stack, token};

/// `Bearer ` and a token with non-ASCII bytes (UTF-8 `é`): legal in HTTP (obs-text), not a token.
fn non_ascii_bearer() -> HeaderValue {
    HeaderValue::from_bytes("Bearer t\u{e9}k\u{e9}n".as_bytes()).unwrap()
}

async fn send_raw(stack: &Stack, request: Request<Body>) -> (StatusCode, Value) {
    let response = stack.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_authorization_header_is_401_not_anonymous() {
    let stack = Stack::start(false, &["media"]).await;
    // A public media: an anonymous caller would see it, so a dropped header would answer 200.
    let body = r#"{"originalName":"a.png","mimeType":"image/png","size":3,"url":"/a.png","isPublic":true}"#;
    let (status, media) = stack.send("POST", "/api/media", Some(&token("alice", "user")), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{media}");
    let id = media["id"].as_str().unwrap();
    assert_eq!(stack.send("GET", &format!("/api/media/{id}"), None, None).await.0, StatusCode::OK);

    for (method, uri) in [
        ("GET", "/api/media".to_owned()),
        ("GET", format!("/api/media/{id}")),
        ("GET", format!("/api/media/{id}/content")),
        ("POST", "/api/media/upload".to_owned()),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("authorization", non_ascii_bearer())
            .header("content-type", "multipart/form-data; boundary=x")
            .body(Body::from("--x--\r\n"))
            .unwrap();
        let (status, err) = send_raw(&stack, request).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
            "{method} {uri}"
        );
        assert_eq!(err["status"], 401);
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` from the local address `from` (any 127.0.0.0/8
/// address works on Linux loopback), with extra `headers`.
async fn post_from(
    from: Ipv4Addr,
    port: u16,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::post(path).header("host", "bridge").header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request)).await.unwrap().unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_per_client_address_and_the_owner_still_gets_in() {
    let stack = Stack::start(true, &["media", "auth"]).await;
    stack.register("kim").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = http_bridge::server::Limits {
        header_timeout: Duration::from_secs(10),
        max_connections: 100,
        max_connections_per_ip: 0,
        drain: Duration::from_secs(1),
    };
    tokio::spawn(http_bridge::server::serve(listener, stack.router.clone(), limits, std::future::pending()));

    let (attacker, owner) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let login = |password: &str| json!({"email": "kim@example.com", "password": password});
    for attempt in 1..=5 {
        let (status, _) = post_from(attacker, port, "/api/auth/login", login("guess"), &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let (status, err) = post_from(attacker, port, "/api/auth/login", login("guess"), &[]).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_ATTEMPTS")));
    // Claiming another address in the header changes nothing: the bridge sets it from the peer.
    let spoofed = [("mediabus-client-addr", "198.51.100.1")];
    let (status, _) = post_from(attacker, port, "/api/auth/login", login("correct horse"), &spoofed).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // The owner, from elsewhere, signs in with the right password.
    let (status, session) = post_from(owner, port, "/api/auth/login", login("correct horse"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["user"]["email"], "kim@example.com");
}
