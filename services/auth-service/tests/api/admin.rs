//! The first admin from configuration, and service tokens acting for users.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use auth_service::config::ServiceAccount;

use crate::helpers::{Docs, PASSWORD, TestApp, access, status};

#[tokio::test]
async fn the_configured_admin_is_created_at_start() {
    let app = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.admin_email = " Root@Example.com ".into();
        s.auth.admin_password = "root-password-123".into();
    })
    .await;
    let session = app.login("root@example.com", "root-password-123").await.unwrap();
    assert_eq!(session["user"]["roles"], json!(["user", "admin"]));
    assert_eq!(session["user"]["name"], "Administrator");
    // A second worker with the same settings finds it and changes nothing.
    let mut app = app;
    app.add_worker().await;
    let user = app.store.user_by_email("root@example.com").await.unwrap().unwrap();
    assert_eq!(user.roles, ["user", "admin"]);
}

/// Issue 12 item 4: whoever registered the admin email first used to become admin at the next
/// start.
#[tokio::test]
async fn an_account_registered_by_someone_else_is_not_promoted_and_the_start_is_refused() {
    let app = TestApp::spawn().await;
    // Someone registers the address before the operator configures it.
    let session = app.register("Mallory", "boss@example.com").await;
    assert_eq!(session["user"]["roles"], json!(["user"]));

    // A start with admin_email set (and no password, or another password) refuses loudly.
    for password in ["", "the-operators-password"] {
        let mut settings = app.settings.clone();
        settings.auth.admin_email = "boss@example.com".into();
        settings.auth.admin_password = password.into();
        let err = app.start_worker(settings).await.err().expect("start refused");
        let message = err.to_string();
        assert!(message.contains("auth.admin_email") && message.contains("boss@example.com"), "{message}");
        assert!(message.contains("not created by"), "{message}");
    }
    let user = app.store.user_by_email("boss@example.com").await.unwrap().unwrap();
    assert_eq!(user.roles, ["user"], "not promoted");
    let session = app.login("boss@example.com", PASSWORD).await.unwrap();
    assert_eq!(crate::tokens::claims(access(&session))["roles"], json!(["user"]));

    // The account's own password proves it is the operator's: then it is promoted.
    let mut settings = app.settings.clone();
    settings.auth.admin_email = "boss@example.com".into();
    settings.auth.admin_password = PASSWORD.into();
    let _worker = app.start_worker(settings).await.unwrap();
    let session = app.login("boss@example.com", PASSWORD).await.unwrap();
    assert_eq!(session["user"]["roles"], json!(["user", "admin"]));
    let claims = crate::tokens::claims(access(&session));
    assert_eq!(claims["roles"], json!(["user", "admin"]));
}

#[tokio::test]
async fn without_a_password_nothing_is_created_and_registration_never_grants_admin() {
    let app = TestApp::spawn_with(Docs::Sqlite, |s| s.auth.admin_email = "boss@example.com".into()).await;
    assert!(app.store.user_by_email("boss@example.com").await.unwrap().is_none());
    let session = app.register("Boss", "boss@example.com").await;
    assert_eq!(session["user"]["roles"], json!(["user"]));
}

#[tokio::test]
async fn a_bad_admin_password_stops_the_start() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings.clone();
    settings.auth.admin_email = "weak@example.com".into();
    settings.auth.admin_password = "short".into();
    let err = app.start_worker(settings).await.err().expect("refused");
    assert!(err.to_string().contains("admin_password"), "{err}");
}

#[tokio::test]
async fn an_admin_reads_any_account_with_user_id() {
    let app = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.admin_email = "root@example.com".into();
        s.auth.admin_password = "root-password-123".into();
    })
    .await;
    let alice = app.register("Alice", "alice@example.com").await;
    let root = app.login("root@example.com", "root-password-123").await.unwrap();
    let seen = app.call("auth.me", json!({"userId": alice["user"]["id"]}), Some(access(&root))).await.unwrap();
    assert_eq!(seen["email"], "alice@example.com");
    let missing = app.call("auth.me", json!({"userId": "nobody"}), Some(access(&root))).await;
    assert_eq!(status(missing), (404, "NOT_FOUND".into()));
}

const SERVICE_SECRET: &str = "courses-service-secret-0123456789abcdef";

fn courses_account() -> ServiceAccount {
    let digest = Sha256::digest(SERVICE_SECRET.as_bytes());
    ServiceAccount { id: "courses-service".into(), secret_sha256: digest.iter().map(|b| format!("{b:02x}")).collect() }
}

#[tokio::test]
async fn a_service_token_acts_for_a_named_user() {
    let app = TestApp::spawn_with(Docs::Sqlite, |s| s.auth.service_accounts = vec![courses_account()]).await;
    let alice = app.register("Alice", "alice@example.com").await;

    let issued = app
        .call("auth.serviceToken", json!({"serviceId": "courses-service", "secret": SERVICE_SECRET}), None)
        .await
        .unwrap();
    assert_eq!(issued["expiresIn"], 900);
    let token = issued["accessToken"].as_str().unwrap();
    let claims = crate::tokens::claims(token);
    assert_eq!((claims["sub"].clone(), claims["roles"].clone()), (json!("courses-service"), json!(["service"])));

    let seen = app.call("auth.me", json!({"userId": alice["user"]["id"]}), Some(token)).await.unwrap();
    assert_eq!(seen["email"], "alice@example.com");
    // Its own token names no account.
    assert_eq!(status(app.call("auth.me", json!({}), Some(token)).await).0, 400);

    for (service, secret) in [("courses-service", "wrong-secret"), ("unknown-service", SERVICE_SECRET)] {
        let refused = app.call("auth.serviceToken", json!({"serviceId": service, "secret": secret}), None).await;
        assert_eq!(status(refused), (401, "INVALID_CREDENTIALS".into()), "{service}");
    }
}
