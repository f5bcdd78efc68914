//! The access matrix of DESIGN §6: five callers × public and private media × every subject.

use serde_json::{Value, json};

use crate::helpers::{TestApp, token};

/// The callers, by name: `(name, token)`.
fn callers() -> Vec<(&'static str, Option<String>)> {
    vec![
        ("owner", Some(token("alice", "user"))),
        ("other", Some(token("bob", "user"))),
        ("admin", Some(token("root", "admin"))),
        ("service", Some(token("svc-courses", "service"))),
        ("anonymous", None),
    ]
}

async fn make(app: &TestApp, public: bool) -> Value {
    let body = json!({"originalName": "m.png", "mimeType": "image/png", "size": 1, "url": "/m.png", "isPublic": public, "entityId": "e1", "entityType": "lesson"});
    app.call("media.create", body, Some(&token("alice", "user"))).await.unwrap()
}

/// `Ok` → "ok", `Err` → its status, so a whole row compares at once.
fn outcome(result: Result<Value, mediabus_rpc::RpcError>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(e) => e.status.to_string(),
    }
}

#[tokio::test]
async fn reads_follow_the_access_matrix() {
    let app = TestApp::spawn().await;
    let public = make(&app, true).await;
    let private = make(&app, false).await;
    for (name, token) in callers() {
        let token = token.as_deref();
        let one = |m: &Value| json!({"id": m["id"]});
        let public_one = outcome(app.call("media.findOne", one(&public), token).await);
        let private_one = outcome(app.call("media.findOne", one(&private), token).await);
        let listed = |page: Value| page["items"].as_array().unwrap().iter().any(|m| m["id"] == private["id"]);
        let all = app.call("media.findAll", json!({}), token).await.unwrap();
        let by_user = app.call("media.findByUser", json!({"userId": "alice"}), token).await.unwrap();
        let by_entity = app.call("media.findByEntity", json!({"entityId": "e1"}), token).await.unwrap();
        assert!(all["items"].as_array().unwrap().iter().any(|m| m["id"] == public["id"]), "{name} lists public media");
        let expected_private = matches!(name, "owner" | "admin");
        let row = (public_one, private_one, listed(all), listed(by_entity));
        let expected = (
            "ok".to_string(),
            if expected_private { "ok" } else { "404" }.to_string(),
            expected_private,
            expected_private,
        );
        assert_eq!(row, expected, "reads by {name}");
        // findByUser names the user: a service acts for that user and sees what they see.
        assert_eq!(listed(by_user), expected_private || name == "service", "findByUser by {name}");
    }
    // A service acting for the owner (userId) reads the private media; for someone else it does not.
    let service = token("svc-courses", "service");
    assert!(app.call("media.findOne", json!({"id": private["id"], "userId": "alice"}), Some(&service)).await.is_ok());
    let as_bob = app.call("media.findOne", json!({"id": private["id"], "userId": "bob"}), Some(&service)).await;
    assert_eq!(outcome(as_bob), "404");
    // A user naming someone else is not honoured.
    let bob = token("bob", "user");
    assert_eq!(
        outcome(app.call("media.findOne", json!({"id": private["id"], "userId": "alice"}), Some(&bob)).await),
        "404"
    );
}

#[tokio::test]
async fn writes_follow_the_access_matrix() {
    let app = TestApp::spawn().await;
    for public in [true, false] {
        for (name, token) in callers() {
            let token = token.as_deref();
            let expected = match (name, public) {
                ("owner" | "admin", _) => "ok",
                ("anonymous", _) => "401",
                (_, true) => "403",
                (_, false) => "404",
            };
            let m = make(&app, public).await;
            let update = outcome(app.call("media.update", json!({"id": m["id"], "isPublic": public}), token).await);
            let m = make(&app, public).await;
            let remove = outcome(app.call("media.remove", json!({"id": m["id"]}), token).await);
            assert_eq!((update.as_str(), remove.as_str()), (expected, expected), "writes by {name} on public={public}");
        }
    }
    // A service acting for the owner may change the owner's media.
    let m = make(&app, false).await;
    let service = token("svc-courses", "service");
    assert!(
        app.call("media.update", json!({"id": m["id"], "isPublic": true, "userId": "alice"}), Some(&service))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn user_id_in_a_payload_is_honoured_only_for_admins_and_services() {
    let app = TestApp::spawn().await;
    let body = json!({"originalName": "m.png", "mimeType": "image/png", "size": 1, "url": "/m.png", "userId": "alice"});
    let owner_of = |caller: &str, role: &str| {
        let (app, body, token) = (&app, body.clone(), token(caller, role));
        async move { app.call("media.create", body, Some(&token)).await.unwrap()["userId"].clone() }
    };
    assert_eq!(owner_of("bob", "user").await, "bob");
    assert_eq!(owner_of("root", "admin").await, "alice");
    assert_eq!(owner_of("svc-courses", "service").await, "alice");
    let upload = app
        .upload(
            &token("bob", "user"),
            "x.pdf",
            &crate::helpers::read(&mediabus_testkit::media_files().pdf),
            json!({"userId": "alice"}),
        )
        .await
        .unwrap();
    assert_eq!(upload["userId"], "bob");
}

/// Issue 12 item 6: an `Authorization` header that is not a valid Bearer token is refused (401),
/// never treated as anonymous, even where anonymous callers may read.
#[tokio::test]
async fn an_invalid_authorization_header_is_401_not_anonymous() {
    let app = TestApp::spawn().await;
    let public = make(&app, true).await;
    let find = json!({"id": public["id"]});
    assert!(app.call("media.findOne", find.clone(), None).await.is_ok(), "anonymous reads public media");
    for value in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer t\u{e9}k\u{e9}n", "garbage"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", value);
        let err = app.call_with("media.findOne", find.clone(), None, headers).await.unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (401, "UNAUTHENTICATED"), "{value:?}");
    }
}
