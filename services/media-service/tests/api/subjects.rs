//! Every media subject: the happy path and each error.

use async_nats::HeaderMap;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, status, token};

fn create_body(name: &str) -> Value {
    json!({"originalName": name, "mimeType": "image/png", "size": 10, "url": "https://cdn.example.com/a.png", "entityId": "course-1", "entityType": "course"})
}

#[tokio::test]
async fn media_create_registers_a_url_and_emits_media_created() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let mut events = app.rpc.nats().subscribe("media.created").await.unwrap();
    app.rpc.nats().flush().await.unwrap();

    let media = app.call("media.create", create_body("../a.png"), Some(&alice)).await.unwrap();
    assert_eq!(media["originalName"], "a.png");
    assert_eq!(
        (media["type"].as_str(), media["status"].as_str(), media["userId"].as_str()),
        (Some("IMAGE"), Some("READY"), Some("alice"))
    );
    assert_eq!(media["isPublic"], false);
    assert_eq!(media["url"], "https://cdn.example.com/a.png");
    assert_eq!(media["id"].as_str().unwrap().len(), 24, "a cuid2");

    let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.next()).await.unwrap().unwrap();
    let packet: Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(
        (packet["pattern"].clone(), packet["data"]["id"].clone(), packet.get("id")),
        (json!("media.created"), media["id"].clone(), None)
    );

    // Captured in JetStream too.
    let js = async_nats::jetstream::new(app.rpc.nats().clone());
    let mut stream = js.get_stream(media_service::events::STREAM).await.unwrap();
    assert!(stream.info().await.unwrap().state.messages >= 1);
}

#[tokio::test]
async fn media_create_refuses_anonymous_callers_and_bad_fields() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    assert_eq!(status(app.call("media.create", create_body("a.png"), None).await), (401, "UNAUTHENTICATED".into()));
    let cases = [
        json!({"url": "javascript:alert(1)"}),
        json!({"mimeType": "png"}),
        json!({"status": "DELETED"}),
        json!({"entityId": ""}),
        json!({"metadata": {"big": "x".repeat(20_000)}}),
        json!({"originalName": "\u{0007}/"}),
    ];
    for case in cases {
        let mut body = create_body("a.png");
        crate::helpers::merge(&mut body, case.clone());
        assert_eq!(
            status(app.call("media.create", body, Some(&alice)).await),
            (400, "VALIDATION_FAILED".into()),
            "{case}"
        );
    }
    let wrong_type = json!({"originalName": "a", "mimeType": "image/png", "size": "ten", "url": "/x"});
    assert_eq!(status(app.call("media.create", wrong_type, Some(&alice)).await), (400, "INVALID_PAYLOAD".into()));
    let bad_token = Some("not.a.jwt");
    assert_eq!(
        status(app.call("media.create", create_body("a.png"), bad_token).await),
        (401, "UNAUTHENTICATED".into())
    );
}

#[tokio::test]
async fn a_retried_create_with_the_same_idempotency_key_gives_one_document() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let mut headers = HeaderMap::new();
    headers.insert("Idempotency-Key", "create-42");
    let first = app.call_with("media.create", create_body("a.png"), Some(&alice), headers.clone()).await.unwrap();
    let again = app.call_with("media.create", create_body("a.png"), Some(&alice), headers).await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let page = app.call("media.findByUser", json!({"userId": "alice"}), Some(&alice)).await.unwrap();
    assert_eq!(page["total"], 1);
    // The key is per owner: bob's request with the same key is his own.
    let mut headers = HeaderMap::new();
    headers.insert("Idempotency-Key", "create-42");
    let bobs = app.call_with("media.create", create_body("b.png"), Some(&token("bob", "user")), headers).await.unwrap();
    assert_ne!(bobs["id"], first["id"]);
}

#[tokio::test]
async fn media_find_one_returns_the_document_or_404() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let media = app.call("media.create", create_body("a.png"), Some(&alice)).await.unwrap();
    let found = app.call("media.findOne", json!({"id": media["id"]}), Some(&alice)).await.unwrap();
    assert_eq!(found, media);
    assert_eq!(status(app.call("media.findOne", json!({"id": "nope"}), Some(&alice)).await), (404, "NOT_FOUND".into()));
    assert_eq!(status(app.call("media.findOne", json!({}), Some(&alice)).await), (400, "INVALID_PAYLOAD".into()));
    assert_eq!(
        status(app.call("media.findOne", json!({"id": 7}), Some(&alice)).await),
        (400, "INVALID_PAYLOAD".into())
    );
}

#[tokio::test]
async fn media_content_grants_readers_a_signed_url_to_stored_bytes() {
    let app = TestApp::spawn().await;
    let (alice, bob, admin) = (token("alice", "user"), token("bob", "user"), token("root", "admin"));
    let png = crate::helpers::read(&mediabus_testkit::media_files().png);
    let media = app.upload(&alice, "a.png", &png, json!({})).await.unwrap();
    let id = media["id"].as_str().unwrap();

    let secret = mediabus_config::ExposeSecret::expose_secret(&app.settings.content.signing_secret);
    let signer = mediabus_auth::ContentSigner::new(secret).unwrap();
    for caller in [&alice, &admin] {
        let ticket = app.call("media.content", json!({"id": id}), Some(caller)).await.unwrap();
        let token = ticket["token"].as_str().unwrap();
        assert_eq!(ticket["url"], format!("/api/media/{id}/content?token={token}"));
        let grant = signer.verify(token, id).unwrap();
        assert_eq!((grant.size, grant.mime.as_str(), grant.public), (png.len() as u64, "image/png", false));
        assert_eq!(format!("sha256:{}", grant.sha256), media["checksum"].as_str().unwrap());
        let stored = app.store.get(id).await.unwrap().unwrap();
        assert_eq!(Some(grant.key), stored.storage_key);
        assert!(ticket["expiresAt"].as_str().unwrap() > media["createdAt"].as_str().unwrap());
    }
    // The rules of media.findOne: private media are 404 to others and to anonymous callers.
    for caller in [Some(bob.as_str()), None] {
        assert_eq!(status(app.call("media.content", json!({"id": id}), caller).await), (404, "NOT_FOUND".into()));
    }
    // Media registered by URL have no stored bytes to grant.
    let linked = app.call("media.create", create_body("b.png"), Some(&alice)).await.unwrap();
    assert_eq!(
        status(app.call("media.content", json!({"id": linked["id"]}), Some(&alice)).await),
        (404, "NOT_FOUND".into())
    );
}

#[tokio::test]
async fn listings_filter_page_and_count() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    for i in 0..25 {
        let mut body = create_body(&format!("photo-{i:02}.png"));
        body["isPublic"] = json!(i % 2 == 0);
        body["entityId"] = json!(if i < 10 { "lesson-1" } else { "lesson-2" });
        if i == 3 {
            body["mimeType"] = json!("video/mp4");
            body["originalName"] = json!("Holiday 100%_Clip.mp4");
        }
        app.call("media.create", body, Some(&alice)).await.unwrap();
    }
    // Pages of 10: newest first, no duplicates, no gaps.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let page = app.call("media.findAll", json!({"limit": 10, "cursor": cursor}), Some(&alice)).await.unwrap();
        assert_eq!(page["total"], 25);
        assert_eq!(page["limit"], 10);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["createdAt"].as_str().unwrap().to_owned(), m["id"].as_str().unwrap().to_owned())),
        );
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    // Newest first, ties (same millisecond) broken by id: exactly the store's documented order.
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    expected.dedup();
    assert_eq!((seen.len(), &seen), (25, &expected));

    let by_entity = app
        .call("media.findByEntity", json!({"entityId": "lesson-1", "entityType": "course"}), Some(&alice))
        .await
        .unwrap();
    assert_eq!(by_entity["total"], 10);
    let videos = app.call("media.findByUser", json!({"userId": "alice", "type": "VIDEO"}), Some(&alice)).await.unwrap();
    assert_eq!(videos["total"], 1);
    let q = app.call("media.findAll", json!({"q": "100%_c"}), Some(&alice)).await.unwrap();
    assert_eq!(q["items"][0]["originalName"], "Holiday 100%_Clip.mp4");
    assert_eq!(q["total"], 1, "% and _ match literally");
    let public = app.call("media.findAll", json!({"isPublic": true}), Some(&alice)).await.unwrap();
    assert_eq!(public["total"], 13);
    let oldest = app.call("media.findAll", json!({"sort": "createdAt:asc", "limit": 1}), Some(&alice)).await.unwrap();
    assert_eq!(oldest["items"][0]["id"].as_str(), expected.last().map(|(_, id)| id.as_str()));

    for bad in [json!({"limit": 0}), json!({"limit": 101}), json!({"sort": "size"})] {
        assert_eq!(
            status(app.call("media.findAll", bad.clone(), Some(&alice)).await),
            (400, "VALIDATION_FAILED".into()),
            "{bad}"
        );
    }
    assert_eq!(
        status(app.call("media.findAll", json!({"cursor": "garbage!"}), Some(&alice)).await),
        (400, "INVALID_CURSOR".into())
    );
    assert_eq!(
        status(app.call("media.findAll", json!({"type": "SOUND"}), Some(&alice)).await),
        (400, "INVALID_PAYLOAD".into())
    );
    assert_eq!(status(app.call("media.findByUser", json!({}), Some(&alice)).await), (400, "INVALID_PAYLOAD".into()));
    assert_eq!(
        status(app.call("media.findByEntity", json!({"entityType": "course"}), Some(&alice)).await),
        (400, "INVALID_PAYLOAD".into())
    );
}

#[tokio::test]
async fn media_update_changes_only_given_fields_and_null_clears() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let media = app.call("media.create", create_body("a.png"), Some(&alice)).await.unwrap();
    let id = media["id"].clone();
    let updated = app
        .call("media.update", json!({"id": id, "originalName": "b.png", "metadata": {"alt": "a cat"}, "isPublic": true, "entityId": null}), Some(&alice))
        .await
        .unwrap();
    assert_eq!((updated["originalName"].as_str(), updated["isPublic"].as_bool()), (Some("b.png"), Some(true)));
    assert_eq!(updated["metadata"], json!({"alt": "a cat"}));
    assert_eq!((updated["entityId"].clone(), updated["entityType"].clone()), (Value::Null, json!("course")));
    assert_eq!(updated["createdAt"], media["createdAt"]);
    assert_ne!(updated["updatedAt"], media["updatedAt"]);
    assert_eq!(app.call("media.findOne", json!({"id": id}), Some(&alice)).await.unwrap(), updated);

    assert_eq!(
        status(app.call("media.update", json!({"id": "nope", "isPublic": true}), Some(&alice)).await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        status(app.call("media.update", json!({"id": id, "isPublic": "yes"}), Some(&alice)).await),
        (400, "INVALID_PAYLOAD".into())
    );
    assert_eq!(
        status(app.call("media.update", json!({"id": id, "originalName": ""}), Some(&alice)).await),
        (400, "VALIDATION_FAILED".into())
    );
}

#[tokio::test]
async fn media_remove_soft_deletes_and_only_admins_list_deleted() {
    let app = TestApp::spawn().await;
    let alice = token("alice", "user");
    let admin = token("root", "admin");
    let media = app.call("media.create", create_body("a.png"), Some(&alice)).await.unwrap();
    let removed = app.call("media.remove", json!({"id": media["id"]}), Some(&alice)).await.unwrap();
    assert_eq!(removed["status"], "DELETED");
    assert_eq!(
        status(app.call("media.findOne", json!({"id": media["id"]}), Some(&alice)).await),
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        status(app.call("media.remove", json!({"id": media["id"]}), Some(&alice)).await),
        (404, "NOT_FOUND".into())
    );
    let listed = app.call("media.findAll", json!({}), Some(&admin)).await.unwrap();
    assert_eq!(listed["total"], 0, "deleted media are invisible by default");
    let deleted = app.call("media.findAll", json!({"status": "DELETED"}), Some(&admin)).await.unwrap();
    assert_eq!(deleted["items"][0]["id"], media["id"]);
    let not_for_users = app.call("media.findAll", json!({"status": "DELETED"}), Some(&alice)).await.unwrap();
    assert_eq!(not_for_users["total"], 0);
}
