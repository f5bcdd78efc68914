//! Failed logins per account: after `max_failed_logins` in the window, 429 until it ends.

use crate::helpers::{Docs, PASSWORD, TestApp, status};

#[tokio::test]
async fn the_sixth_attempt_after_five_failures_is_429_even_with_the_right_password() {
    let app = TestApp::spawn().await;
    app.register("Fay", "fay@example.com").await;
    app.register("Gus", "gus@example.com").await;
    for attempt in 1..=5 {
        assert_eq!(status(app.login("fay@example.com", "wrong").await).1, "INVALID_CREDENTIALS", "attempt {attempt}");
    }
    let err = app.login("fay@example.com", PASSWORD).await.unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (429, "TOO_MANY_ATTEMPTS"));
    let retry = err.details.as_ref().and_then(|d| d["retryAfterSecs"].as_u64()).expect("retryAfterSecs");
    assert!((850..=900).contains(&retry), "about the 15 min window: {retry}");
    // Spelling the email differently is the same account.
    assert_eq!(status(app.login(" FAY@example.com", PASSWORD).await).0, 429);
    // Other accounts are not affected.
    assert!(app.login("gus@example.com", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn a_successful_login_resets_the_count() {
    let app = TestApp::spawn().await;
    app.register("Hal", "hal@example.com").await;
    for _ in 0..4 {
        app.login("hal@example.com", "wrong").await.unwrap_err();
    }
    app.login("hal@example.com", PASSWORD).await.unwrap();
    for attempt in 1..=5 {
        assert_eq!(status(app.login("hal@example.com", "wrong").await).0, 401, "attempt {attempt} after the reset");
    }
    assert_eq!(status(app.login("hal@example.com", "wrong").await).0, 429);
}

#[tokio::test]
async fn unknown_emails_are_throttled_too_so_the_limit_reveals_nothing() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        assert_eq!(status(app.login("ghost@example.com", "wrong").await).0, 401);
    }
    assert_eq!(status(app.login("ghost@example.com", "wrong").await).0, 429);
}

#[tokio::test]
async fn the_window_ends_and_the_limit_is_configurable() {
    let app = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.max_failed_logins = 2;
        s.auth.failed_login_window_secs = 2;
    })
    .await;
    app.register("Ivy", "ivy@example.com").await;
    app.login("ivy@example.com", "wrong").await.unwrap_err();
    app.login("ivy@example.com", "wrong").await.unwrap_err();
    let err = app.login("ivy@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(err.status, 429);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(app.login("ivy@example.com", PASSWORD).await.is_ok(), "a new window");
}

#[tokio::test]
async fn throttling_is_shared_by_the_workers_of_the_group() {
    let mut app = TestApp::spawn().await;
    app.add_worker().await;
    app.register("Jo", "jo@example.com").await;
    // Requests spread over both workers; the counter lives in the store, so the limit holds.
    let results = futures_util::future::join_all((0..8).map(|_| app.login("jo@example.com", "wrong"))).await;
    let throttled = results.iter().filter(|r| r.as_ref().is_err_and(|e| e.status == 429)).count();
    assert_eq!(throttled, 3, "5 counted failures, then 429: {results:?}");
}
