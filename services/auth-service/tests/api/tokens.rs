//! Access tokens: what auth-service mints, what `auth.me` refuses, key rotation, and the media
//! service's verifier (libs/auth with the media service's key configuration) accepting them.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use mediabus_auth::{Identity, KeyConfig, Role, SigningKeyConfig, Verifier};
use mediabus_testkit::jwt_keys;
use serde_json::{Value, json};

use crate::helpers::{Docs, SECRET, TestApp, access, status, test_key};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The claims of a JWT, decoded without any check.
pub fn claims(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn header(token: &str) -> Value {
    serde_json::from_slice(&B64.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn rsa_public(kid: &str) -> KeyConfig {
    KeyConfig {
        kid: kid.into(),
        algorithm: "RS256".into(),
        secret: None,
        public_key_pem: Some(jwt_keys::RSA_PUBLIC.into()),
        public_key_file: None,
    }
}

/// An app signing with RS256 key `rs-1`, still accepting the retired HS256 key `test`.
async fn rs256_app() -> TestApp {
    TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.signing_key = SigningKeyConfig::pem("rs-1", "RS256", jwt_keys::RSA_PRIVATE);
        s.auth.keys = vec![rsa_public("rs-1"), test_key()];
    })
    .await
}

fn sign(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, key).unwrap()
}

fn rsa(pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn minted_access_tokens_carry_the_contract_claims() {
    let app = rs256_app().await;
    let session = app.register("Kim", "kim@example.com").await;
    let token = access(&session);
    let h = header(token);
    assert_eq!((h["alg"].as_str(), h["kid"].as_str(), h["typ"].as_str()), (Some("RS256"), Some("rs-1"), Some("JWT")));
    let c = claims(token);
    assert_eq!(c["sub"], session["user"]["id"]);
    assert_eq!(c["roles"], json!(["user"]));
    assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some("mediabus"), Some("mediabus-api")));
    let iat = c["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now()) <= 5);
    assert_eq!(c["exp"].as_u64().unwrap(), iat + 900, "15 minutes");
    assert_eq!(session["expiresIn"], 900);
}

#[tokio::test]
async fn forged_and_invalid_tokens_are_refused_by_auth_me() {
    let app = rs256_app().await;
    let session = app.register("Lee", "lee@example.com").await;
    let genuine = access(&session).to_owned();
    let n = now();
    let base = json!({"sub": session["user"]["id"], "roles": ["user"], "iat": n, "exp": n + 600,
                      "iss": "mediabus", "aud": "mediabus-api"});
    let with = |changes: Value| {
        let mut c = base.clone();
        c.as_object_mut().unwrap().extend(changes.as_object().unwrap().clone());
        c
    };
    let key = rsa(jwt_keys::RSA_PRIVATE);

    // The harness itself: a token signed properly with the service's key is accepted.
    let proper = sign(Algorithm::RS256, "rs-1", &base, &key);
    assert_eq!(app.me(&proper).await.unwrap()["email"], "lee@example.com");

    let payload = genuine.split('.').nth(1).unwrap();
    let admin_payload = B64.encode(serde_json::to_vec(&with(json!({"roles": ["admin"]}))).unwrap());
    let mut parts: Vec<&str> = genuine.split('.').collect();
    parts[1] = &admin_payload;
    let tampered = parts.join(".");
    let cases = [
        ("alg none", format!("{}.{payload}.", B64.encode(r#"{"alg":"none","typ":"JWT","kid":"rs-1"}"#))),
        (
            "HS256 signed with the RS256 public key",
            sign(Algorithm::HS256, "rs-1", &base, &EncodingKey::from_secret(jwt_keys::RSA_PUBLIC.as_bytes())),
        ),
        ("wrong signature", sign(Algorithm::RS256, "rs-1", &base, &rsa(jwt_keys::RSA_OTHER_PRIVATE))),
        ("tampered payload", tampered),
        ("expired", sign(Algorithm::RS256, "rs-1", &with(json!({"iat": n - 1000, "exp": n - 60})), &key)),
        ("not yet valid", sign(Algorithm::RS256, "rs-1", &with(json!({"nbf": n + 300})), &key)),
        ("wrong issuer", sign(Algorithm::RS256, "rs-1", &with(json!({"iss": "evil"})), &key)),
        ("wrong audience", sign(Algorithm::RS256, "rs-1", &with(json!({"aud": "other-api"})), &key)),
        ("unknown kid", sign(Algorithm::RS256, "rs-9", &base, &key)),
        ("no roles", sign(Algorithm::RS256, "rs-1", &with(json!({"roles": []})), &key)),
        ("account that does not exist", sign(Algorithm::RS256, "rs-1", &with(json!({"sub": "ghost"})), &key)),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, token) in cases {
        assert_eq!(status(app.me(&token).await), (401, "UNAUTHENTICATED".into()), "{what}");
    }
    // The genuine token still works after all that.
    assert!(app.me(&genuine).await.is_ok());
}

#[tokio::test]
async fn tokens_of_a_retired_key_are_accepted_until_it_is_removed() {
    let app = rs256_app().await;
    let session = app.register("Max", "max@example.com").await;
    let n = now();
    let old_claims = json!({"sub": session["user"]["id"], "roles": ["user"], "iat": n, "exp": n + 600,
                            "iss": "mediabus", "aud": "mediabus-api"});
    let old = sign(Algorithm::HS256, "test", &old_claims, &EncodingKey::from_secret(SECRET.as_bytes()));
    assert_eq!(app.me(&old).await.unwrap()["email"], "max@example.com", "old key still listed");

    // Once the old key is removed from auth.keys, its tokens are refused.
    let retired = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.signing_key = SigningKeyConfig::pem("rs-1", "RS256", jwt_keys::RSA_PRIVATE);
        s.auth.keys = vec![rsa_public("rs-1")];
    })
    .await;
    let user = retired.register("Max", "max@example.com").await;
    let old_claims = json!({"sub": user["user"]["id"], "roles": ["user"], "iat": n, "exp": n + 600,
                            "iss": "mediabus", "aud": "mediabus-api"});
    let old = sign(Algorithm::HS256, "test", &old_claims, &EncodingKey::from_secret(SECRET.as_bytes()));
    assert_eq!(status(retired.me(&old).await), (401, "UNAUTHENTICATED".into()));
    assert!(retired.me(access(&user)).await.is_ok());
}

#[tokio::test]
async fn a_signing_key_without_its_public_key_does_not_start() {
    let app = TestApp::spawn().await;
    let mut settings = app.settings.clone();
    settings.auth.signing_key = SigningKeyConfig::pem("ed-1", "EdDSA", jwt_keys::ED25519_PRIVATE);
    let err = app.start_worker(settings.clone()).await.err().expect("no public key");
    assert!(err.to_string().contains("ed-1"), "{err}");
    // A mismatched public key under the same kid is caught too.
    settings.auth.keys = vec![KeyConfig { algorithm: "EdDSA".into(), ..rsa_public("ed-1") }];
    assert!(app.start_worker(settings).await.is_err());
}

#[tokio::test]
async fn the_media_service_verifier_accepts_minted_tokens() {
    // Both services on their built-in defaults: the media service's key list (read from its
    // defaults.toml, as it loads it) must verify what the auth service signs by default.
    let app = TestApp::spawn_with(Docs::Sqlite, |s| {
        s.auth.signing_key = auth_service::Settings::defaults().auth.signing_key;
    })
    .await;
    let session = app.register("Noa", "noa@example.com").await;

    #[derive(serde::Deserialize)]
    struct MediaAuth {
        issuer: String,
        audience: String,
        keys: Vec<KeyConfig>,
    }
    #[derive(serde::Deserialize)]
    struct MediaDefaults {
        auth: MediaAuth,
    }
    let media = mediabus_config::defaults::<MediaDefaults>(include_str!("../../../media-service/defaults.toml")).auth;
    let verifier = Verifier::new(&media.keys, &media.issuer, &media.audience).unwrap();
    let caller = verifier.verify(access(&session)).unwrap();
    assert_eq!(caller, Identity { user_id: session["user"]["id"].as_str().unwrap().into(), roles: vec![Role::User] });

    // And with asymmetric keys: the media service lists only the public key.
    let app = rs256_app().await;
    let session = app.register("Oli", "oli@example.com").await;
    let verifier = Verifier::new(&[rsa_public("rs-1")], "mediabus", "mediabus-api").unwrap();
    assert_eq!(verifier.verify(access(&session)).unwrap().roles, vec![Role::User]);
}
