//! `auth.refresh` and `auth.logout`: rotation, reuse detection, revocation.

use serde_json::{Value, json};

use crate::helpers::{Docs, PASSWORD, TestApp, access, status};

fn invalid_refresh(result: Result<Value, mediabus_rpc::RpcError>) {
    assert_eq!(status(result), (401, "INVALID_REFRESH_TOKEN".into()));
}

/// The whole life of a session, on the given store.
async fn session_lifecycle(docs: Docs) {
    let app = TestApp::spawn_with(docs, |_| {}).await;
    app.register("Ann", "ann@example.com").await;
    let first = app.login("ann@example.com", PASSWORD).await.unwrap();

    // Refresh: new access and refresh tokens; the old refresh token is used up.
    let second = app.refresh(&first["refreshToken"]).await.unwrap();
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    assert_eq!(second["user"], first["user"]);
    assert_eq!(second["expiresIn"], 900);
    assert!(app.me(access(&second)).await.is_ok());
    let third = app.refresh(&second["refreshToken"]).await.unwrap();

    // Reuse of an old token: refused, and the whole family dies, the newest token included.
    invalid_refresh(app.refresh(&first["refreshToken"]).await);
    invalid_refresh(app.refresh(&third["refreshToken"]).await);

    // Logging in again starts a fresh family; logout ends it.
    let again = app.login("ann@example.com", PASSWORD).await.unwrap();
    let rotated = app.refresh(&again["refreshToken"]).await.unwrap();
    assert_eq!(
        app.call("auth.logout", json!({"refreshToken": rotated["refreshToken"]}), None).await.unwrap(),
        json!({})
    );
    invalid_refresh(app.refresh(&rotated["refreshToken"]).await);
    // Idempotent for a known token; unknown tokens are refused.
    assert!(app.call("auth.logout", json!({"refreshToken": rotated["refreshToken"]}), None).await.is_ok());
    invalid_refresh(app.call("auth.logout", json!({"refreshToken": "not-a-token"}), None).await);

    // Duplicate emails are refused on this store too.
    let dup = app.call("auth.register", json!({"name": "A", "email": "ANN@example.com", "password": PASSWORD}), None);
    assert_eq!(status(dup.await), (409, "EMAIL_TAKEN".into()));
}

#[tokio::test]
async fn a_session_rotates_detects_reuse_and_ends_on_sqlite() {
    session_lifecycle(Docs::Sqlite).await;
}

#[tokio::test]
async fn a_session_rotates_detects_reuse_and_ends_on_mongodb() {
    session_lifecycle(Docs::Mongo).await;
}

#[tokio::test]
async fn the_old_refresh_token_is_dead_after_a_refresh() {
    let app = TestApp::spawn().await;
    let first = app.register("Ben", "ben@example.com").await;
    let second = app.refresh(&first["refreshToken"]).await.unwrap();
    invalid_refresh(app.refresh(&first["refreshToken"]).await);
    // ... and that reuse also killed the token it had been exchanged for.
    invalid_refresh(app.refresh(&second["refreshToken"]).await);
    // Only hashes are stored.
    let hash = auth_service::tokens::refresh_hash(second["refreshToken"].as_str().unwrap());
    let stored = app.store.refresh_token(&hash).await.unwrap().expect("stored by hash");
    assert!(stored.revoked_at.is_some());
    assert_eq!(app.store.refresh_token(second["refreshToken"].as_str().unwrap()).await.unwrap(), None);
}

#[tokio::test]
async fn a_reuse_revokes_only_that_login() {
    let app = TestApp::spawn().await;
    app.register("Cy", "cy@example.com").await;
    let laptop = app.login("cy@example.com", PASSWORD).await.unwrap();
    let phone = app.login("cy@example.com", PASSWORD).await.unwrap();
    app.refresh(&laptop["refreshToken"]).await.unwrap();
    invalid_refresh(app.refresh(&laptop["refreshToken"]).await);
    assert!(app.refresh(&phone["refreshToken"]).await.is_ok(), "the other device stays signed in");
}

#[tokio::test]
async fn racing_refreshes_over_two_workers_rotate_once() {
    let mut app = TestApp::spawn().await;
    app.add_worker().await;
    let session = app.register("Di", "di@example.com").await;
    let token = session["refreshToken"].clone();
    let results = futures_util::future::join_all((0..6).map(|_| app.refresh(&token))).await;
    let winners: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    // At most one: on MongoDB the claimant itself may find the family already revoked.
    assert!(winners.len() <= 1, "{results:?}");
    for loser in results.iter().filter(|r| r.is_err()) {
        assert_eq!(loser.as_ref().unwrap_err().code, "INVALID_REFRESH_TOKEN");
    }
    // The losers were reuses, so the winner's new token is revoked with the family.
    for winner in winners {
        invalid_refresh(app.refresh(&winner["refreshToken"]).await);
    }
}

#[tokio::test]
async fn bad_refresh_payloads_are_refused() {
    let app = TestApp::spawn().await;
    invalid_refresh(app.call("auth.refresh", json!({"refreshToken": ""}), None).await);
    invalid_refresh(app.call("auth.refresh", json!({"refreshToken": "x".repeat(10_000)}), None).await);
    assert_eq!(status(app.call("auth.refresh", json!({}), None).await).0, 400);
}
