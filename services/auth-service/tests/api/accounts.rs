//! `auth.register`, `auth.login`, `auth.me`: happy paths and each refusal.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Docs, PASSWORD, TestApp, access, status};

#[tokio::test]
async fn register_signs_the_new_account_in() {
    let app = TestApp::spawn().await;
    let session = app
        .call("auth.register", json!({"name": "  Alice  ", "email": " Alice@Example.COM ", "password": PASSWORD}), None)
        .await
        .unwrap();
    let user = &session["user"];
    assert_eq!((user["name"].as_str(), user["email"].as_str()), (Some("Alice"), Some("alice@example.com")));
    assert_eq!(user["roles"], json!(["user"]));
    assert_eq!(user["id"].as_str().unwrap().len(), 24, "a cuid2");
    assert!(user.get("passwordHash").is_none() && user.get("password").is_none(), "no secrets: {user}");
    assert_eq!(session["expiresIn"], 900);
    assert_eq!(session["tokenType"], "Bearer");
    assert_eq!(session["refreshToken"].as_str().unwrap().len(), 43, "256 bits, base64url");

    // Stored as a bcrypt hash at the configured cost.
    let stored = app.store.user_by_email("alice@example.com").await.unwrap().unwrap();
    assert!(stored.password_hash.starts_with("$2b$04$"), "{}", stored.password_hash);
    assert!(!stored.password_hash.contains(PASSWORD));

    // The access token works right away.
    let me = app.me(access(&session)).await.unwrap();
    assert_eq!(me, *user);
}

#[tokio::test]
async fn an_email_has_one_account_whatever_its_case_or_spaces() {
    let app = TestApp::spawn().await;
    app.register("Alice", "alice@example.com").await;
    for email in ["alice@example.com", "ALICE@example.com", "  Alice@Example.Com\t"] {
        let again = app.call("auth.register", json!({"name": "Mallory", "email": email, "password": PASSWORD}), None);
        let err = again.await.unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (409, "EMAIL_TAKEN"), "{email:?}");
    }
    // Login normalises the same way.
    assert!(app.login("  ALICE@EXAMPLE.COM ", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn passwords_need_8_characters_and_at_most_72_bytes() {
    let app = TestApp::spawn().await;
    let register = |email: &str, password: String| {
        app.call("auth.register", json!({"name": "P", "email": email, "password": password}), None)
    };
    let short = register("short@example.com", "1234567".into()).await.unwrap_err();
    assert_eq!((short.status, short.code.as_str()), (400, "VALIDATION_FAILED"));
    assert!(short.message.contains("at least 8"), "{}", short.message);
    let long = register("long@example.com", "x".repeat(73)).await.unwrap_err();
    assert_eq!((long.status, long.code.as_str()), (400, "VALIDATION_FAILED"));
    assert!(long.message.contains("72 bytes"), "{}", long.message);
    // 37 two-byte characters: short in characters, too long in bytes.
    assert_eq!(status(register("utf8@example.com", "é".repeat(37)).await).0, 400);
    assert_eq!(app.store.user_by_email("long@example.com").await.unwrap(), None, "nothing stored");

    // Exactly 8 characters and exactly 72 bytes are fine, and every byte of the 72 counts.
    register("eight@example.com", "12345678".into()).await.unwrap();
    let max = format!("{}a", "p".repeat(71));
    register("max@example.com", max.clone()).await.unwrap();
    assert!(app.login("max@example.com", &max).await.is_ok());
    let last_byte_differs = format!("{}b", "p".repeat(71));
    assert_eq!(status(app.login("max@example.com", &last_byte_differs).await).1, "INVALID_CREDENTIALS");
    // At login, over 72 bytes is refused before any account is looked at.
    assert_eq!(status(app.login("max@example.com", &format!("{max}a")).await), (400, "VALIDATION_FAILED".into()));
}

#[tokio::test]
async fn malformed_registrations_are_400() {
    let app = TestApp::spawn().await;
    for (data, what) in [
        (json!({"name": "A", "email": "not-an-email", "password": PASSWORD}), "email"),
        (json!({"name": "   ", "email": "a@example.com", "password": PASSWORD}), "name"),
        (json!({"name": "A", "email": "a@example.com"}), "missing password"),
        (json!({"name": "A", "email": 7, "password": PASSWORD}), "email type"),
    ] {
        let err = app.call("auth.register", data, None).await.unwrap_err();
        assert_eq!(err.status, 400, "{what}: {err:?}");
    }
}

#[tokio::test]
async fn login_answers_unknown_email_and_wrong_password_alike() {
    let app = TestApp::spawn().await;
    app.register("Bob", "bob@example.com").await;
    let session = app.login("bob@example.com", PASSWORD).await.unwrap();
    assert_eq!(session["user"]["email"], "bob@example.com");
    assert!(app.me(access(&session)).await.is_ok());

    let wrong = app.login("bob@example.com", "not the password").await.unwrap_err();
    let unknown = app.login("nobody@example.com", "not the password").await.unwrap_err();
    assert_eq!((wrong.status, wrong.code.as_str()), (401, "INVALID_CREDENTIALS"));
    assert_eq!(wrong, unknown, "same status, code, message and details");
}

/// Median of `runs` timings of `f`.
async fn median<F, Fut>(runs: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[runs / 2]
}

#[tokio::test]
async fn unknown_email_takes_about_as_long_as_a_wrong_password() {
    // A realistic cost, so bcrypt dominates each login (tens of milliseconds), and no throttle.
    let app = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.bcrypt_cost = 10;
        s.auth.max_failed_logins = 0;
    })
    .await;
    app.register("Carol", "carol@example.com").await;
    let wrong = median(7, || async {
        app.login("carol@example.com", "wrong password!").await.unwrap_err();
    })
    .await;
    let unknown = median(7, || async {
        app.login("nobody@example.com", "wrong password!").await.unwrap_err();
    })
    .await;
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    // Without the dummy comparison an unknown email would answer in about 1 ms, a ratio near 0.
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:?} vs wrong password {wrong:?}");
    assert!(wrong > Duration::from_millis(5), "bcrypt ran: {wrong:?}");
}

#[tokio::test]
async fn me_needs_a_valid_access_token() {
    let app = TestApp::spawn().await;
    let session = app.register("Dan", "dan@example.com").await;
    let me = app.me(access(&session)).await.unwrap();
    assert_eq!(me["email"], "dan@example.com");

    assert_eq!(status(app.call("auth.me", json!({}), None).await), (401, "UNAUTHENTICATED".into()));
    // A raw `null` payload is `{}` too.
    assert_eq!(status(app.call("auth.me", serde_json::Value::Null, None).await).1, "UNAUTHENTICATED");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", "Basic ZGFuOnB3");
    let basic = app.rpc.call_with_headers::<_, serde_json::Value>("auth.me", &json!({}), headers).await;
    assert_eq!(status(basic), (401, "UNAUTHENTICATED".into()));

    // A plain user naming someone else still gets themself.
    let other = app.register("Eve", "eve@example.com").await;
    let me = app.call("auth.me", json!({"userId": other["user"]["id"]}), Some(access(&session))).await.unwrap();
    assert_eq!(me["email"], "dan@example.com");
}
