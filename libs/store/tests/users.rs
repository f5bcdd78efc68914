//! One contract for every `UserStore` backend (users, refresh-token families, login counters).
//!
//! Each `async fn` below takes `&dyn UserStore` and is run by `contract!` against SQLite in a temp
//! file and against MongoDB (a real server when `MONGODB_URI` is set, else nx-27017), as in
//! `contract.rs`. Times are whole seconds apart: nx-27017 compares dates at second precision.

use std::time::Duration;

use futures_util::future::join_all;
use mediabus_contracts::Timestamp;
use mediabus_store::{LoginAttempts, RefreshToken, Rotation, SqliteStore, StoreError, User, UserStore};

mod backends;
use backends::contract;

/// 2026-11-21T00:00:00Z: times are fixed, not read from the clock.
const BASE_MS: i64 = 1_795_219_200_000;

fn at_secs(offset: i64) -> Timestamp {
    Timestamp::from_unix_millis(BASE_MS + offset * 1000)
}

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        email: email.into(),
        name: "Zoë Ångström".into(),
        password_hash: format!("$2b$04${}", "a".repeat(53)),
        roles: vec!["user".into()],
        created_at: at_secs(0),
        updated_at: at_secs(0),
    }
}

/// The first token of a login: family `family`, created at 0 s, expiring at `expires` s.
fn first_token(hash: &str, family: &str, user_id: &str, expires: i64) -> RefreshToken {
    RefreshToken {
        token_hash: hash.into(),
        family_id: family.into(),
        user_id: user_id.into(),
        created_at: at_secs(0),
        expires_at: at_secs(expires),
        used_at: None,
        revoked_at: None,
    }
}

async fn token(store: &dyn UserStore, hash: &str) -> RefreshToken {
    store.refresh_token(hash).await.unwrap().unwrap_or_else(|| panic!("token {hash} stored"))
}

const HOUR: i64 = 3600;

// ---------------------------------------------------------------------------------------------
// The contract

async fn users_round_trip_with_unique_emails(store: &dyn UserStore) {
    let alice = user("u-alice", "alice@example.com");
    store.create_user(&alice).await.unwrap();
    assert_eq!(store.user_by_id("u-alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_email("alice@example.com").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_email("bob@example.com").await.unwrap(), None);
    assert_eq!(store.user_by_id("nobody").await.unwrap(), None);

    // The email is unique; so is the id.
    let err = store.create_user(&user("u-other", "alice@example.com")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store.create_user(&user("u-alice", "new@example.com")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.user_by_email("new@example.com").await.unwrap(), None, "nothing half-written");

    // Update replaces every field but the id.
    let mut changed = alice.clone();
    changed.name = "Alice A.".into();
    changed.roles = vec!["user".into(), "admin".into()];
    changed.password_hash = format!("$2b$12${}", "b".repeat(53));
    changed.updated_at = at_secs(5);
    store.update_user(&changed).await.unwrap();
    assert_eq!(store.user_by_id("u-alice").await.unwrap(), Some(changed.clone()));

    let bob = user("u-bob", "bob@example.com");
    store.create_user(&bob).await.unwrap();
    let mut stolen = bob.clone();
    stolen.email = "alice@example.com".into();
    assert!(matches!(store.update_user(&stolen).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.user_by_id("u-bob").await.unwrap(), Some(bob), "bob untouched");
    assert_eq!(store.update_user(&user("u-ghost", "ghost@example.com")).await, Err(StoreError::NotFound));
}

async fn rotation_uses_the_token_and_stores_its_successor(store: &dyn UserStore) {
    store.insert_refresh_token(&first_token("t1", "fam-a", "u1", HOUR)).await.unwrap();
    assert_eq!(token(store, "t1").await, first_token("t1", "fam-a", "u1", HOUR));
    assert!(matches!(
        store.insert_refresh_token(&first_token("t1", "fam-z", "u9", HOUR)).await,
        Err(StoreError::Conflict(_))
    ));

    let rotated = store.rotate_refresh_token("t1", "t2", at_secs(10), at_secs(10 + HOUR)).await.unwrap();
    assert_eq!(rotated, Rotation::Rotated { user_id: "u1".into(), family_id: "fam-a".into() });
    assert_eq!(token(store, "t1").await.used_at, Some(at_secs(10)), "t1 used");
    assert_eq!(
        token(store, "t2").await,
        RefreshToken {
            token_hash: "t2".into(),
            family_id: "fam-a".into(),
            user_id: "u1".into(),
            created_at: at_secs(10),
            expires_at: at_secs(10 + HOUR),
            used_at: None,
            revoked_at: None,
        }
    );
    let again = store.rotate_refresh_token("t2", "t3", at_secs(20), at_secs(20 + HOUR)).await.unwrap();
    assert_eq!(again, Rotation::Rotated { user_id: "u1".into(), family_id: "fam-a".into() });
}

async fn reusing_a_used_token_revokes_its_whole_family(store: &dyn UserStore) {
    store.insert_refresh_token(&first_token("t1", "fam-a", "u1", HOUR)).await.unwrap();
    store.insert_refresh_token(&first_token("other-1", "fam-b", "u1", HOUR)).await.unwrap();
    store.rotate_refresh_token("t1", "t2", at_secs(10), at_secs(10 + HOUR)).await.unwrap();

    // t1 again: someone kept a copy.
    let reused = store.rotate_refresh_token("t1", "t2-thief", at_secs(20), at_secs(20 + HOUR)).await.unwrap();
    assert_eq!(reused, Rotation::Reused { user_id: "u1".into(), family_id: "fam-a".into() });
    assert_eq!(store.refresh_token("t2-thief").await.unwrap(), None, "no successor for a reuse");
    assert_eq!(token(store, "t2").await.revoked_at, Some(at_secs(20)), "the newest token dies too");
    assert_eq!(token(store, "t1").await.revoked_at, Some(at_secs(20)));

    // The legitimate holder's newest token no longer refreshes.
    assert_eq!(
        store.rotate_refresh_token("t2", "t3", at_secs(30), at_secs(30 + HOUR)).await.unwrap(),
        Rotation::Invalid
    );
    assert_eq!(store.refresh_token("t3").await.unwrap(), None);
    // Presenting the used token once more changes nothing.
    assert_eq!(
        store.rotate_refresh_token("t1", "t4", at_secs(40), at_secs(40 + HOUR)).await.unwrap(),
        Rotation::Invalid
    );
    assert_eq!(token(store, "t2").await.revoked_at, Some(at_secs(20)), "first revocation time kept");

    // Another login of the same user is untouched.
    assert_eq!(
        store.rotate_refresh_token("other-1", "other-2", at_secs(50), at_secs(50 + HOUR)).await.unwrap(),
        Rotation::Rotated { user_id: "u1".into(), family_id: "fam-b".into() }
    );
}

async fn unknown_expired_and_revoked_tokens_do_not_rotate(store: &dyn UserStore) {
    assert_eq!(store.rotate_refresh_token("nope", "n2", at_secs(0), at_secs(HOUR)).await.unwrap(), Rotation::Invalid);
    assert_eq!(store.refresh_token("n2").await.unwrap(), None);

    store.insert_refresh_token(&first_token("old", "fam-old", "u1", 60)).await.unwrap();
    for now in [60, 61, 3 * HOUR] {
        assert_eq!(
            store.rotate_refresh_token("old", "old-2", at_secs(now), at_secs(now + HOUR)).await.unwrap(),
            Rotation::Invalid,
            "expired at 60 s, presented at {now} s"
        );
    }
    assert_eq!(token(store, "old").await.used_at, None, "an expired token is not consumed");
    assert_eq!(store.refresh_token("old-2").await.unwrap(), None);
    // One second before expiry it still rotates.
    store.insert_refresh_token(&first_token("edge", "fam-edge", "u1", 60)).await.unwrap();
    assert!(matches!(
        store.rotate_refresh_token("edge", "edge-2", at_secs(59), at_secs(59 + HOUR)).await.unwrap(),
        Rotation::Rotated { .. }
    ));
}

async fn a_race_on_one_token_rotates_once_and_then_revokes(store: &dyn UserStore) {
    store.insert_refresh_token(&first_token("race", "fam-race", "u1", HOUR)).await.unwrap();
    let nexts: Vec<String> = (0..8).map(|i| format!("race-next-{i}")).collect();
    let outcomes =
        join_all(nexts.iter().map(|next| store.rotate_refresh_token("race", next, at_secs(10), at_secs(10 + HOUR))))
            .await;
    let outcomes: Vec<Rotation> = outcomes.into_iter().map(Result::unwrap).collect();
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
    let reused = outcomes.iter().filter(|o| matches!(o, Rotation::Reused { .. })).count();
    assert!(rotated <= 1, "at most one exchange wins: {outcomes:?}");
    assert!(reused >= 1, "the others are reuse: {outcomes:?}");
    // Exactly one successor was stored, and the reuse revoked it with its family.
    let mut stored = Vec::new();
    for next in &nexts {
        stored.extend(store.refresh_token(next).await.unwrap());
    }
    assert_eq!(stored.len(), 1, "one claim: {stored:?}");
    assert!(stored[0].revoked_at.is_some(), "successor revoked: {stored:?}");
    assert!(token(store, "race").await.used_at.is_some());
}

async fn logout_revokes_the_family(store: &dyn UserStore) {
    store.insert_refresh_token(&first_token("l1", "fam-l", "u1", HOUR)).await.unwrap();
    store.insert_refresh_token(&first_token("keep", "fam-keep", "u1", HOUR)).await.unwrap();
    store.rotate_refresh_token("l1", "l2", at_secs(10), at_secs(10 + HOUR)).await.unwrap();

    let before = token(store, "l2").await;
    assert_eq!(store.revoke_refresh_family("l2", at_secs(20)).await.unwrap(), Some(before));
    assert_eq!(token(store, "l1").await.revoked_at, Some(at_secs(20)));
    assert_eq!(token(store, "l2").await.revoked_at, Some(at_secs(20)));
    assert_eq!(
        store.rotate_refresh_token("l2", "l3", at_secs(30), at_secs(30 + HOUR)).await.unwrap(),
        Rotation::Invalid
    );
    // Again: the first revocation time stays.
    let revoked = store.revoke_refresh_family("l2", at_secs(40)).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at_secs(20)));
    assert_eq!(store.revoke_refresh_family("unknown", at_secs(40)).await.unwrap(), None);
    assert_eq!(token(store, "keep").await.revoked_at, None, "other sessions stay");
}

async fn login_attempts_count_within_a_window(store: &dyn UserStore) {
    let window = Duration::from_secs(900);
    let key = "alice@example.com";
    let record = |now: i64| store.record_login_attempt(key, at_secs(now), window);
    assert_eq!(record(0).await.unwrap(), LoginAttempts { count: 1, window_start: at_secs(0) });
    assert_eq!(record(10).await.unwrap(), LoginAttempts { count: 2, window_start: at_secs(0) });
    assert_eq!(record(899).await.unwrap(), LoginAttempts { count: 3, window_start: at_secs(0) });
    // The window ends 900 s after its first attempt: a new one starts.
    assert_eq!(record(900).await.unwrap(), LoginAttempts { count: 1, window_start: at_secs(900) });
    assert_eq!(record(901).await.unwrap(), LoginAttempts { count: 2, window_start: at_secs(900) });

    // Keys are independent; clearing starts over.
    assert_eq!(
        store.record_login_attempt("bob@example.com", at_secs(901), window).await.unwrap(),
        LoginAttempts { count: 1, window_start: at_secs(901) }
    );
    store.clear_login_attempts(key).await.unwrap();
    store.clear_login_attempts("never-seen").await.unwrap();
    assert_eq!(record(902).await.unwrap(), LoginAttempts { count: 1, window_start: at_secs(902) });

    // Concurrent attempts are each counted.
    let many = join_all((0..10).map(|_| store.record_login_attempt("burst", at_secs(0), window))).await;
    let mut counts: Vec<u32> = many.into_iter().map(|r| r.unwrap().count).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<u32>>());
}

async fn purge_removes_what_expired(store: &dyn UserStore) {
    store.insert_refresh_token(&first_token("dead", "fam-dead", "u1", 60)).await.unwrap();
    store.insert_refresh_token(&first_token("alive", "fam-alive", "u1", HOUR)).await.unwrap();
    let window = Duration::from_secs(60);
    store.record_login_attempt("stale", at_secs(0), window).await.unwrap();
    store.record_login_attempt("fresh", at_secs(100), window).await.unwrap();

    assert_eq!(store.purge_expired_auth(at_secs(120)).await.unwrap(), 2);
    assert_eq!(store.refresh_token("dead").await.unwrap(), None);
    assert!(store.refresh_token("alive").await.unwrap().is_some());
    assert_eq!(
        store.record_login_attempt("fresh", at_secs(120), window).await.unwrap().count,
        2,
        "a live window survives"
    );
    // The surviving family still rotates.
    assert!(matches!(
        store.rotate_refresh_token("alive", "alive-2", at_secs(130), at_secs(130 + HOUR)).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    assert_eq!(store.purge_expired_auth(at_secs(120)).await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// Running the contract on each backend

contract!(
    users_round_trip_with_unique_emails,
    rotation_uses_the_token_and_stores_its_successor,
    reusing_a_used_token_revokes_its_whole_family,
    unknown_expired_and_revoked_tokens_do_not_rotate,
    a_race_on_one_token_rotates_once_and_then_revokes,
    logout_revokes_the_family,
    login_attempts_count_within_a_window,
    purge_removes_what_expired,
);

// ---------------------------------------------------------------------------------------------
// SQLite specifics

#[tokio::test]
async fn sqlite_shares_users_and_tokens_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // Two handles on one file, as two auth workers have; plus the media side on the same file.
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    one.create_user(&user("u1", "a@example.com")).await.unwrap();
    assert!(matches!(two.create_user(&user("u2", "a@example.com")).await, Err(StoreError::Conflict(_))));
    one.insert_refresh_token(&first_token("s1", "fam", "u1", HOUR)).await.unwrap();
    let (a, b) = tokio::join!(
        one.rotate_refresh_token("s1", "s2-one", at_secs(1), at_secs(HOUR)),
        two.rotate_refresh_token("s1", "s2-two", at_secs(1), at_secs(HOUR)),
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Rotation::Reused { .. })).count(), 1, "{outcomes:?}");
    let media = mediabus_store::open(&mediabus_store::StoreConfig::Sqlite { path }).await.unwrap();
    media.health_check().await.unwrap();
}
