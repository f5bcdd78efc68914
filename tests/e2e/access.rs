//! Zero trust through the bridge (DESIGN §6): real tokens from the auth service (registered and
//! logged-in users, the configured admin, a backend's `service` token) against the media access
//! matrix over HTTP, and forged tokens refused with 401 on every kind of route.

use axum::http::StatusCode;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use mediabus_rpc::{NatsSettings, RpcClient};
use mediabus_testkit::jwt_keys;
use serde_json::{Value, json};

use crate::stack::{ADMIN, KID, SERVICE, Stack};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Callers of the matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Owner,
    Other,
    Admin,
    Service,
    Anonymous,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_access_matrix_holds_through_the_bridge_with_real_tokens() {
    let stack = Stack::start(true, &["media", "auth"]).await;
    let (owner, owner_id) = stack.register("owner").await;
    let (other, _) = stack.register("other").await;
    let login = json!({"email": ADMIN.0, "password": ADMIN.1}).to_string();
    let (status, session) = stack.send("POST", "/api/auth/login", None, Some(&login)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let admin = session["accessToken"].as_str().unwrap().to_owned();
    // A backend gets its service token over NATS, as its own NATS user.
    let backend = NatsSettings::new(stack.nats.url())
        .with_user("backend", stack.nats.password("backend"))
        .connect("courses-service", 64)
        .await
        .unwrap();
    let issued: Value = RpcClient::new(backend)
        .call("auth.serviceToken", &json!({"serviceId": SERVICE.0, "secret": SERVICE.1}))
        .await
        .unwrap();
    let service = issued["accessToken"].as_str().unwrap().to_owned();
    let token_of = |who: Who| match who {
        Who::Owner => Some(owner.as_str()),
        Who::Other => Some(other.as_str()),
        Who::Admin => Some(admin.as_str()),
        Who::Service => Some(service.as_str()),
        Who::Anonymous => None,
    };

    let mut ids = Vec::new();
    for public in [true, false] {
        let body = json!({"originalName": "a.png", "mimeType": "image/png", "size": 3, "url": "/a.png",
                          "isPublic": public, "entityType": "course", "entityId": "c1"});
        let (status, media) = stack.send("POST", "/api/media", Some(&owner), Some(&body.to_string())).await;
        assert_eq!(status, StatusCode::CREATED, "{media}");
        ids.push((public, media["id"].as_str().unwrap().to_owned()));
    }

    let everyone = [Who::Owner, Who::Other, Who::Admin, Who::Service, Who::Anonymous];
    for who in everyone {
        let token = token_of(who);
        // The service acts for nobody here (no userId): it has its own, non-owner rights.
        let privileged = matches!(who, Who::Owner | Who::Admin);
        for (public, id) in &ids {
            let can_read = *public || privileged;
            let (status, _) = stack.send("GET", &format!("/api/media/{id}"), token, None).await;
            assert_eq!(status, if can_read { 200 } else { 404 }, "{who:?} findOne public={public}");
            let (status, _) = stack.send("GET", &format!("/api/media/{id}/content-url"), token, None).await;
            // Registered by URL: no stored bytes, so 404 even where readable; never more.
            assert_eq!(status, 404, "{who:?} content-url public={public}");

            let patch = Some(r#"{"metadata":{"touched":true}}"#);
            let (status, _) = stack.send("PATCH", &format!("/api/media/{id}"), token, patch).await;
            let expected = match (who, can_read) {
                (Who::Anonymous, _) => 401,
                (_, false) => 404,
                _ if privileged => 200,
                _ => 403,
            };
            assert_eq!(status, expected, "{who:?} update public={public}");
            if !privileged {
                let (status, _) = stack.send("DELETE", &format!("/api/media/{id}"), token, None).await;
                assert_eq!(status, expected, "{who:?} remove public={public}");
            }
        }
        // Listings show exactly what the caller may read; the service acts for the user it names.
        let sees_private = privileged || who == Who::Service;
        let (_, page) = stack.send("GET", &format!("/api/users/{owner_id}/media"), token, None).await;
        assert_eq!(page["total"], if sees_private { 2 } else { 1 }, "{who:?} findByUser: {page}");
        let (_, page) = stack.send("GET", "/api/entities/course/c1/media", token, None).await;
        assert_eq!(page["total"], if privileged { 2 } else { 1 }, "{who:?} findByEntity: {page}");
    }
    // The owner and an admin may remove; then the media are gone for everyone.
    for (who, (_, id)) in [Who::Admin, Who::Owner].into_iter().zip(&ids) {
        let (status, removed) = stack.send("DELETE", &format!("/api/media/{id}"), token_of(who), None).await;
        assert_eq!((status, removed["status"].as_str()), (StatusCode::OK, Some("DELETED")), "{who:?}");
        for reader in everyone {
            assert_eq!(stack.send("GET", &format!("/api/media/{id}"), token_of(reader), None).await.0, 404);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_are_refused_with_401_over_http() {
    let stack = Stack::start(true, &["media", "auth"]).await;
    let (genuine, user_id) = stack.register("lee").await;
    let private = json!({"originalName": "a.png", "mimeType": "image/png", "size": 3, "url": "/a.png"}).to_string();
    let (status, media) = stack.send("POST", "/api/media", Some(&genuine), Some(&private)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = media["id"].as_str().unwrap();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let base = json!({"sub": user_id, "roles": ["user"], "iat": now, "exp": now + 600,
                      "iss": "mediabus", "aud": "mediabus-api"});
    let with = |changes: Value| {
        let mut claims = base.clone();
        claims.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        claims
    };
    let key = EncodingKey::from_rsa_pem(jwt_keys::RSA_PRIVATE.as_bytes()).unwrap();
    let sign = |alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, claims, key).unwrap()
    };
    // The harness itself: a properly signed token passes.
    let proper = sign(Algorithm::RS256, KID, &base, &key);
    assert_eq!(stack.send("GET", &format!("/api/media/{id}"), Some(&proper), None).await.0, 200);

    let payload = genuine.split('.').nth(1).unwrap();
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(serde_json::to_vec(&with(json!({"roles": ["admin"]}))).unwrap());
    let tampered = parts.join(".");
    let rsa_public_as_secret = EncodingKey::from_secret(jwt_keys::RSA_PUBLIC.as_bytes());
    let attacker = EncodingKey::from_rsa_pem(jwt_keys::RSA_OTHER_PRIVATE.as_bytes()).unwrap();
    let cases = [
        ("alg none", format!("{}.{payload}.", B64.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{KID}"}}"#)))),
        ("HS256 signed with the RS256 public key", sign(Algorithm::HS256, KID, &base, &rsa_public_as_secret)),
        ("wrong signature", sign(Algorithm::RS256, KID, &base, &attacker)),
        ("tampered payload", tampered),
        ("expired", sign(Algorithm::RS256, KID, &with(json!({"iat": now - 1000, "exp": now - 60})), &key)),
        ("not yet valid", sign(Algorithm::RS256, KID, &with(json!({"nbf": now + 300})), &key)),
        ("wrong issuer", sign(Algorithm::RS256, KID, &with(json!({"iss": "evil"})), &key)),
        ("wrong audience", sign(Algorithm::RS256, KID, &with(json!({"aud": "other-api"})), &key)),
        ("unknown kid", sign(Algorithm::RS256, "k9", &base, &key)),
    ];
    let routes = [
        ("GET", "/api/auth/me".to_owned(), None),
        ("GET", format!("/api/media/{id}"), None),
        ("GET", format!("/api/media/{id}/content"), None),
        ("GET", "/api/media".to_owned(), None),
        ("POST", "/api/media".to_owned(), Some(private.as_str())),
        ("DELETE", format!("/api/media/{id}"), None),
    ];
    for (what, token) in &cases {
        for (method, path, body) in &routes {
            let (status, err) = stack.send(method, path, Some(token), *body).await;
            assert_eq!(
                (status, err["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")),
                "{what}: {method} {path}"
            );
        }
    }
    // Nothing changed: the media is still there for its owner.
    assert_eq!(stack.send("GET", &format!("/api/media/{id}"), Some(&genuine), None).await.0, 200);
}
