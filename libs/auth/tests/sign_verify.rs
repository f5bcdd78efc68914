//! What a `Signer` mints, a `Verifier` with the matching key accepts, for every algorithm; and
//! what it must not accept.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use mediabus_auth::{
    AuthError, Claims, ExposeSecret, Identity, KeyConfig, KeyError, Role, Signer, SigningKeyConfig, Verifier,
};
use mediabus_testkit::jwt_keys;

const ISS: &str = "mediabus";
const AUD: &str = "mediabus-api";
const SECRET: &str = "sign-verify-test-secret-0123456789abcdef";

fn public(kid: &str, algorithm: &str, pem: &str) -> KeyConfig {
    KeyConfig {
        kid: kid.into(),
        algorithm: algorithm.into(),
        secret: None,
        public_key_pem: Some(pem.into()),
        public_key_file: None,
    }
}

fn hs256(kid: &str, secret: &str) -> KeyConfig {
    SigningKeyConfig::hs256(kid, secret).verification_key().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The payload of a JWT, decoded without any check (to look at what was signed).
fn payload(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn round_trip(signing: &SigningKeyConfig, verifying: &[KeyConfig]) {
    let signer = Signer::new(signing, ISS, AUD).unwrap();
    let (token, expires_in) = signer.sign("user-42", &[Role::User, Role::Admin], Duration::from_secs(900)).unwrap();
    assert_eq!(expires_in, 900);

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(signing.kid.as_str()), "kid header");
    assert_eq!(format!("{:?}", header.alg), signing.algorithm);

    let claims = payload(&token);
    let iat = claims["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now()) <= 2, "iat is now");
    assert_eq!(claims["exp"].as_u64().unwrap(), iat + 900);
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some(ISS), Some(AUD)));
    assert_eq!(claims["roles"], serde_json::json!(["user", "admin"]));

    let verifier = Verifier::new(verifying, ISS, AUD).unwrap();
    assert_eq!(
        verifier.verify(&token).unwrap(),
        Identity { user_id: "user-42".into(), roles: vec![Role::User, Role::Admin] }
    );
    // Another issuer's or audience's verifier refuses it.
    assert_eq!(
        Verifier::new(verifying, "someone-else", AUD).unwrap().verify(&token),
        Err(AuthError::Invalid("wrong issuer"))
    );
    assert_eq!(
        Verifier::new(verifying, ISS, "another-api").unwrap().verify(&token),
        Err(AuthError::Invalid("wrong audience"))
    );
}

#[test]
fn hs256_tokens_verify_with_the_same_secret() {
    round_trip(&SigningKeyConfig::hs256("h1", SECRET), &[hs256("h1", SECRET)]);
}

#[test]
fn rs256_tokens_verify_with_the_public_key() {
    round_trip(
        &SigningKeyConfig::pem("r1", "RS256", jwt_keys::RSA_PRIVATE),
        &[public("r1", "RS256", jwt_keys::RSA_PUBLIC)],
    );
}

#[test]
fn eddsa_tokens_verify_with_the_public_key() {
    round_trip(
        &SigningKeyConfig::pem("e1", "EdDSA", jwt_keys::ED25519_PRIVATE),
        &[public("e1", "EdDSA", jwt_keys::ED25519_PUBLIC)],
    );
}

#[test]
fn keys_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("ed.pem");
    let public_file = dir.path().join("ed.pub.pem");
    std::fs::write(&private, jwt_keys::ED25519_PRIVATE).unwrap();
    std::fs::write(&public_file, jwt_keys::ED25519_PUBLIC).unwrap();
    let signing = SigningKeyConfig {
        private_key_pem: None,
        private_key_file: Some(private),
        ..SigningKeyConfig::pem("f1", "EdDSA", "")
    };
    let verifying = KeyConfig { public_key_pem: None, public_key_file: Some(public_file), ..public("f1", "EdDSA", "") };
    round_trip(&signing, &[verifying]);

    let missing = SigningKeyConfig { private_key_file: Some(dir.path().join("nope.pem")), ..signing };
    assert!(matches!(Signer::new(&missing, ISS, AUD), Err(KeyError::Key { .. })));
}

#[test]
fn rotation_accepts_old_and_new_keys_until_the_old_one_is_removed() {
    let old = Signer::new(&SigningKeyConfig::hs256("2026-10", SECRET), ISS, AUD).unwrap();
    let new = Signer::new(&SigningKeyConfig::pem("2026-11", "EdDSA", jwt_keys::ED25519_PRIVATE), ISS, AUD).unwrap();
    let (old_token, _) = old.sign("u", &[Role::User], Duration::from_secs(60)).unwrap();
    let (new_token, _) = new.sign("u", &[Role::User], Duration::from_secs(60)).unwrap();

    let both =
        Verifier::new(&[public("2026-11", "EdDSA", jwt_keys::ED25519_PUBLIC), hs256("2026-10", SECRET)], ISS, AUD)
            .unwrap();
    assert!(both.verify(&old_token).is_ok(), "old key still accepted");
    assert!(both.verify(&new_token).is_ok(), "new key accepted");

    let new_only = Verifier::new(&[public("2026-11", "EdDSA", jwt_keys::ED25519_PUBLIC)], ISS, AUD).unwrap();
    assert_eq!(new_only.verify(&old_token), Err(AuthError::Invalid("unknown key id")));
}

#[test]
fn a_token_signed_with_another_key_of_the_same_kid_is_refused() {
    let attacker = Signer::new(&SigningKeyConfig::pem("r1", "RS256", jwt_keys::RSA_OTHER_PRIVATE), ISS, AUD).unwrap();
    let (forged, _) = attacker.sign("root", &[Role::Admin], Duration::from_secs(60)).unwrap();
    let verifier = Verifier::new(&[public("r1", "RS256", jwt_keys::RSA_PUBLIC)], ISS, AUD).unwrap();
    assert_eq!(verifier.verify(&forged), Err(AuthError::Invalid("bad signature")));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("r1".into());
    let n = now();
    let claims = serde_json::json!({"sub":"root","roles":["admin"],"iat":n,"exp":n+60,"iss":ISS,"aud":AUD});
    let forged = encode(&header, &claims, &EncodingKey::from_secret(jwt_keys::RSA_PUBLIC.as_bytes())).unwrap();
    let verifier = Verifier::new(&[public("r1", "RS256", jwt_keys::RSA_PUBLIC)], ISS, AUD).unwrap();
    assert_eq!(verifier.verify(&forged), Err(AuthError::Invalid("wrong algorithm")));
}

#[test]
fn signed_claims_keep_nbf_and_a_past_exp_is_expired() {
    let signer = Signer::new(&SigningKeyConfig::hs256("h1", SECRET), ISS, AUD).unwrap();
    let verifier = Verifier::new(&[hs256("h1", SECRET)], ISS, AUD).unwrap();
    let n = now();
    let claims = |iat: u64, exp: u64, nbf: Option<u64>| Claims {
        sub: "u".into(),
        roles: vec![Role::User],
        iat,
        exp,
        nbf,
        iss: ISS.into(),
        aud: AUD.into(),
    };
    let expired = signer.sign_claims(&claims(n - 120, n - 60, None)).unwrap();
    assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
    let early = signer.sign_claims(&claims(n, n + 600, Some(n + 300))).unwrap();
    assert_eq!(verifier.verify(&early), Err(AuthError::Invalid("not yet valid")));
}

#[test]
fn bad_signing_configuration_is_refused_at_start() {
    let err = |key: SigningKeyConfig| Signer::new(&key, ISS, AUD).unwrap_err();
    assert!(matches!(err(SigningKeyConfig::hs256("h", "too-short")), KeyError::Key { .. }));
    assert!(matches!(err(SigningKeyConfig::hs256("", SECRET)), KeyError::Key { .. }));
    assert!(matches!(err(SigningKeyConfig::pem("r", "RS256", "not a pem")), KeyError::Key { .. }));
    // A public key where the private key belongs.
    assert!(matches!(err(SigningKeyConfig::pem("r", "RS256", jwt_keys::RSA_PUBLIC)), KeyError::Key { .. }));
    assert!(matches!(err(SigningKeyConfig::pem("e", "EdDSA", jwt_keys::RSA_PRIVATE)), KeyError::Key { .. }));
    assert!(matches!(err(SigningKeyConfig::pem("x", "HS512", jwt_keys::RSA_PRIVATE)), KeyError::Algorithm(_)));
    // Debug output never shows the secret.
    let shown = format!("{:?}", SigningKeyConfig::hs256("h", SECRET));
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!format!("{:?}", Signer::new(&SigningKeyConfig::hs256("h", SECRET), ISS, AUD).unwrap()).contains(SECRET));
}

#[test]
fn only_hs256_derives_its_verification_key() {
    assert!(SigningKeyConfig::pem("r", "RS256", jwt_keys::RSA_PRIVATE).verification_key().is_none());
    let key = SigningKeyConfig::hs256("h", SECRET).verification_key().unwrap();
    assert_eq!(
        (key.kid.as_str(), key.algorithm.as_str(), key.secret.as_ref().map(|s| s.expose_secret())),
        ("h", "HS256", Some(SECRET))
    );
}
