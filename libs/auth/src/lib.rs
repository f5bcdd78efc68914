//! Who is calling: verifies the access JWT a request carries (`Authorization: Bearer <jwt>`, as a
//! NATS header or forwarded by the HTTP bridge) and yields an [`Identity`] with roles (DESIGN §6).
//!
//! Tokens are JWTs (RFC 7519) signed with HS256 (shared secret), RS256 (RSA public key, PEM) or
//! EdDSA (Ed25519 public key, PEM). Each key has an id (`kid` header, RFC 7515 §4.1.4) so keys can
//! rotate: a token names its key, the verifier accepts every configured key until it is removed.
//! Each key accepts only its own algorithm, which rules out algorithm confusion (an HS256 token
//! "signed" with an RSA public key) and `alg: none`.
//!
//! The auth service mints tokens with a [`Signer`] (one [`SigningKeyConfig`]: HS256 secret, or an
//! RS256 / EdDSA private key); every service checks them with a [`Verifier`] built from the
//! matching [`KeyConfig`]s. To rotate: add the new key to every verifier, switch the signer to it,
//! and remove the old key once the longest access-token lifetime has passed.
//!
//! # Examples
//! ```
//! use std::time::Duration;
//! use mediabus_auth::{KeyConfig, Role, Signer, SigningKeyConfig, Verifier};
//!
//! let secret = "an-example-secret-of-at-least-32-bytes";
//! let signing = SigningKeyConfig::hs256("k1", secret);
//! let signer = Signer::new(&signing, "mediabus", "mediabus-api").unwrap();
//! let (token, expires_in) = signer.sign("user-1", &[Role::User], Duration::from_secs(900)).unwrap();
//! assert_eq!(expires_in, 900);
//!
//! let keys = [signing.verification_key().unwrap()];
//! let caller = Verifier::new(&keys, "mediabus", "mediabus-api").unwrap().verify(&token).unwrap();
//! assert_eq!(caller.user_id, "user-1");
//! ```

mod content;

pub use content::{CONTENT_AUDIENCE, ContentGrant, ContentSigner};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, decode_header, encode};
pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A caller's role. `service` is a trusted backend acting for any user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
    Service,
}

/// The verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: the user id (or the service's id for `service` tokens).
    pub user_id: String,
    pub roles: Vec<Role>,
}

impl Identity {
    /// Whether the caller has `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Admins see and change everything.
    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }

    /// Admins and services may act for another user (`userId` in a payload is honoured).
    pub fn may_act_for_others(&self) -> bool {
        self.is_admin() || self.has(Role::Service)
    }
}

/// Claims of a mediabus access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
}

/// Why a token was refused. Every variant is a 401 to the caller; the text is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    #[error("token expired")]
    Expired,
}

/// Failure to build a [`Verifier`] or a [`Signer`] from configuration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported algorithm {0:?} (accepted: HS256, RS256, EdDSA)")]
    Algorithm(String),
    #[error("key {kid:?}: {reason}")]
    Key { kid: String, reason: String },
    #[error("no verification key configured")]
    NoKeys,
}

/// One verification key as configured.
#[derive(Debug, Clone, Deserialize)]
pub struct KeyConfig {
    /// Key id matched against the token's `kid` header. A token without `kid` uses the first key.
    pub kid: String,
    /// `HS256`, `RS256` or `EdDSA`.
    pub algorithm: String,
    /// HS256: the shared secret (at least 32 bytes recommended); never printed.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// RS256 / EdDSA: the public key, PEM text.
    #[serde(default)]
    pub public_key_pem: Option<String>,
    /// RS256 / EdDSA: a file holding the public key (PEM), read at start-up.
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
}

impl KeyConfig {
    /// The PEM text, inline or read from `public_key_file`.
    fn pem(&self) -> Result<Option<String>, String> {
        read_pem(self.public_key_pem.as_deref(), &self.public_key_file)
    }
}

/// PEM text given inline (wins) or as a file read now.
fn read_pem(inline: Option<&str>, file: &Option<PathBuf>) -> Result<Option<String>, String> {
    match (inline, file) {
        (Some(pem), _) => Ok(Some(pem.to_owned())),
        (None, Some(path)) => std::fs::read_to_string(path).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        (None, None) => Ok(None),
    }
}

/// Verifies access tokens against a set of keys, an issuer and an audience.
///
/// Remembers the tokens it verified (see [`TOKEN_CACHE_CAPACITY`]), so a caller repeating its
/// token skips the signature check and JSON decoding until the token's `exp`. Clones share that
/// memory.
#[derive(Clone)]
pub struct Verifier {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    default_kid: String,
    issuer: String,
    audience: String,
    cache: Arc<TokenCache>,
}

/// Most verified tokens a [`Verifier`] remembers. Entries hold a SHA-256 of the token (never the
/// token), the caller and `exp`: a few hundred bytes each.
pub const TOKEN_CACHE_CAPACITY: usize = 4096;

/// Verified tokens: SHA-256 of the token → (caller, `exp`).
///
/// Sound because verification is a pure function of the token, the fixed keys, issuer and
/// audience, and the clock: a token that verified keeps verifying until `exp` passes (`nbf` only
/// delays validity; there is no revocation of access tokens). So a hit is served only while
/// `now <= exp`, exactly the window in which a fresh verification would succeed. Failures are
/// never cached.
#[derive(Default)]
struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Identity, u64)>>,
}

impl TokenCache {
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<Identity> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(digest).filter(|(_, exp)| now <= *exp).map(|(identity, _)| identity.clone())
    }

    fn insert(&self, digest: [u8; 32], identity: Identity, exp: u64, now: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= TOKEN_CACHE_CAPACITY && !entries.contains_key(&digest) {
            entries.retain(|_, (_, exp)| now <= *exp);
            // Still full of live tokens: start over rather than track recency; refilling costs one
            // verification per caller, and clearing keeps inserts amortised O(1).
            if entries.len() >= TOKEN_CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(digest, (identity, exp));
    }
}

/// Seconds since the Unix epoch, the clock `exp` is checked against (as `jsonwebtoken` does).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("Verifier").field("kids", &self.keys.keys()).field("issuer", &self.issuer).finish()
    }
}

impl Verifier {
    /// Builds a verifier. Errors: unknown algorithm, unreadable key, or no keys.
    pub fn new(keys: &[KeyConfig], issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let first = keys.first().ok_or(KeyError::NoKeys)?;
        let mut map = HashMap::new();
        for key in keys {
            let bad = |reason: &str| KeyError::Key { kid: key.kid.clone(), reason: reason.to_owned() };
            let (decoding, algorithm) = match key.algorithm.as_str() {
                "HS256" => {
                    let secret = key.secret.as_ref().map(ExposeSecret::expose_secret).filter(|s| !s.is_empty());
                    let secret = secret.ok_or_else(|| bad("HS256 needs a secret"))?;
                    (DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256)
                }
                "RS256" => {
                    let pem = key.pem().map_err(|e| bad(&e))?.ok_or_else(|| bad("RS256 needs a public key"))?;
                    (DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, Algorithm::RS256)
                }
                "EdDSA" => {
                    let pem = key.pem().map_err(|e| bad(&e))?.ok_or_else(|| bad("EdDSA needs a public key"))?;
                    (DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, Algorithm::EdDSA)
                }
                other => return Err(KeyError::Algorithm(other.to_owned())),
            };
            map.insert(key.kid.clone(), (decoding, algorithm));
        }
        Ok(Self {
            keys: map,
            default_kid: first.kid.clone(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            cache: Arc::default(),
        })
    }

    /// Verifies signature, `exp`, `nbf`, `iss` and `aud` (no leeway: clocks of one deployment
    /// agree closely, and an access token lives minutes) and returns the caller.
    ///
    /// Errors: [`AuthError::Expired`] past `exp`; [`AuthError::Invalid`] for everything else
    /// (malformed, unknown `kid`, wrong algorithm, bad signature, not yet valid, wrong issuer or
    /// audience, no roles).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(identity) = self.cache.get(&digest, now) {
            return Ok(identity);
        }
        let (identity, exp) = self.verify_uncached(token)?;
        self.cache.insert(digest, identity.clone(), exp, now);
        Ok(identity)
    }

    /// [`Verifier::verify`] without the cache; also returns the token's `exp`.
    fn verify_uncached(&self, token: &str) -> Result<(Identity, u64), AuthError> {
        let header = decode_header(token).map_err(|_| AuthError::Invalid("malformed"))?;
        let kid = header.kid.as_deref().unwrap_or(&self.default_kid);
        let (key, algorithm) = self.keys.get(kid).ok_or(AuthError::Invalid("unknown key id"))?;
        if header.alg != *algorithm {
            return Err(AuthError::Invalid("wrong algorithm"));
        }
        let mut validation = Validation::new(*algorithm);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Claims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::Invalid("not yet valid"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                _ => AuthError::Invalid("malformed"),
            })?
            .claims;
        if claims.roles.is_empty() || claims.sub.is_empty() {
            return Err(AuthError::Invalid("no subject or roles"));
        }
        Ok((Identity { user_id: claims.sub, roles: claims.roles }, claims.exp))
    }

    /// The caller of a request: `None` (anonymous) without an `Authorization` header; a refusal
    /// when a header is present but not a valid Bearer token (a bad token is never anonymous).
    pub fn identify(
        &self,
        bearer_token: Option<&str>,
        has_authorization_header: bool,
    ) -> Result<Option<Identity>, AuthError> {
        match (bearer_token, has_authorization_header) {
            (Some(token), _) => self.verify(token).map(Some),
            (None, true) => Err(AuthError::Invalid("expected Bearer scheme")),
            (None, false) => Ok(None),
        }
    }
}

/// Shortest HS256 secret a [`Signer`] accepts, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The key new access tokens are signed with, as configured for the auth service.
///
/// In TOML (`[auth.signing_key]`):
/// ```toml
/// kid = "2026-11"
/// algorithm = "EdDSA"                       # or "RS256", "HS256"
/// private_key_file = "/run/secrets/jwt.pem" # PKCS#8 PEM; or private_key_pem = "..."
/// # HS256 instead: secret = "..." (at least 32 bytes)
/// ```
#[derive(Clone, Deserialize)]
pub struct SigningKeyConfig {
    /// Written into every token's `kid` header; verifiers look the key up by it.
    pub kid: String,
    /// `HS256`, `RS256` or `EdDSA`.
    pub algorithm: String,
    /// HS256: the shared secret, at least [`MIN_HS256_SECRET_BYTES`] bytes.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// RS256 / EdDSA: the private key, PEM text (PKCS#8; RS256 also takes PKCS#1).
    #[serde(default)]
    pub private_key_pem: Option<SecretString>,
    /// RS256 / EdDSA: a file holding the private key (PEM), read at start-up.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for SigningKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets and private keys stay out of logs; the file path is not secret.
        f.debug_struct("SigningKeyConfig")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_key_file", &self.private_key_file)
            .finish_non_exhaustive()
    }
}

impl SigningKeyConfig {
    /// An HS256 key with id `kid`.
    pub fn hs256(kid: &str, secret: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            algorithm: "HS256".to_owned(),
            secret: Some(secret.into()),
            private_key_pem: None,
            private_key_file: None,
        }
    }

    /// An RS256 (`algorithm = "RS256"`) or EdDSA key with id `kid`, from private-key PEM text.
    pub fn pem(kid: &str, algorithm: &str, private_key_pem: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            algorithm: algorithm.to_owned(),
            secret: None,
            private_key_pem: Some(private_key_pem.into()),
            private_key_file: None,
        }
    }

    /// The verification key for tokens of this key, when it follows from the signing key alone:
    /// HS256 verifies with the same secret. `None` for RS256 / EdDSA, whose public key must be
    /// configured separately (a [`KeyConfig`] with the same `kid`).
    pub fn verification_key(&self) -> Option<KeyConfig> {
        (self.algorithm == "HS256").then(|| KeyConfig {
            kid: self.kid.clone(),
            algorithm: self.algorithm.clone(),
            secret: self.secret.clone(),
            public_key_pem: None,
            public_key_file: None,
        })
    }
}

/// Failure to sign a token (a key that parsed but cannot sign; [`Signer::new`] tries one
/// signature so this shows at start-up, not per request).
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the token: {0}")]
pub struct SignError(String);

/// Mints access tokens: header `{alg, typ: "JWT", kid}`, [`Claims`] with `sub`, `roles`, `iat`,
/// `exp`, `iss`, `aud`. Cheap to clone.
#[derive(Clone)]
pub struct Signer {
    kid: String,
    algorithm: Algorithm,
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for tokens of `issuer` meant for `audience`.
    ///
    /// Errors ([`KeyError::Key`] naming the kid, or [`KeyError::Algorithm`]): unknown algorithm,
    /// an empty `kid`, an HS256 secret shorter than [`MIN_HS256_SECRET_BYTES`], a missing or
    /// unreadable private key, or one that cannot sign (a test signature is made here).
    pub fn new(key: &SigningKeyConfig, issuer: &str, audience: &str) -> Result<Self, KeyError> {
        let bad = |reason: &str| KeyError::Key { kid: key.kid.clone(), reason: reason.to_owned() };
        if key.kid.is_empty() {
            return Err(bad("the signing key needs a kid"));
        }
        let private_pem = || {
            read_pem(key.private_key_pem.as_ref().map(ExposeSecret::expose_secret), &key.private_key_file)
                .map_err(|e| bad(&e))?
                .ok_or_else(|| bad(&format!("{} needs a private key", key.algorithm)))
        };
        let (encoding, algorithm) = match key.algorithm.as_str() {
            "HS256" => {
                let secret = key.secret.as_ref().map_or("", ExposeSecret::expose_secret);
                if secret.len() < MIN_HS256_SECRET_BYTES {
                    return Err(bad(&format!("HS256 needs a secret of at least {MIN_HS256_SECRET_BYTES} bytes")));
                }
                (EncodingKey::from_secret(secret.as_bytes()), Algorithm::HS256)
            }
            "RS256" => {
                let pem = private_pem()?;
                (EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, Algorithm::RS256)
            }
            "EdDSA" => {
                let pem = private_pem()?;
                (EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| bad(&e.to_string()))?, Algorithm::EdDSA)
            }
            other => return Err(KeyError::Algorithm(other.to_owned())),
        };
        let signer = Self {
            kid: key.kid.clone(),
            algorithm,
            key: encoding,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        };
        // PEM parsing alone accepts some keys that cannot sign (e.g. a truncated RSA key).
        signer.sign("probe", &[Role::User], Duration::from_secs(1)).map_err(|e| bad(&e.to_string()))?;
        Ok(signer)
    }

    /// The key id written into every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A token for `subject` with `roles`, valid from now for `ttl` (whole seconds, at least 1).
    /// Returns the token and its lifetime in seconds (`expiresIn` on the wire).
    pub fn sign(&self, subject: &str, roles: &[Role], ttl: Duration) -> Result<(String, u64), SignError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| SignError(e.to_string()))?.as_secs();
        let expires_in = ttl.as_secs().max(1);
        let claims = Claims {
            sub: subject.to_owned(),
            roles: roles.to_vec(),
            iat: now,
            exp: now + expires_in,
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        Ok((self.sign_claims(&claims)?, expires_in))
    }

    /// Signs `claims` as given (no checks), with this signer's `kid` and algorithm. For tools
    /// and tests that need unusual claims (`nbf`, a past `exp`); services use [`Signer::sign`].
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, SignError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).map_err(|e| SignError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "a-test-secret-that-is-long-enough-0123";

    fn verifier() -> Verifier {
        let key = KeyConfig {
            kid: "k1".into(),
            algorithm: "HS256".into(),
            secret: Some(SECRET.into()),
            public_key_pem: None,
            public_key_file: None,
        };
        Verifier::new(&[key], "mediabus", "mediabus-api").unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    fn token(claims: serde_json::Value, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn claims(exp_in: i64) -> serde_json::Value {
        let n = now() as i64;
        serde_json::json!({"sub":"u1","roles":["user"],"iat":n,"exp":n+exp_in,"iss":"mediabus","aud":"mediabus-api"})
    }

    #[test]
    fn a_valid_token_yields_the_caller() {
        let id = verifier().verify(&token(claims(60), Some("k1"))).unwrap();
        assert_eq!(id, Identity { user_id: "u1".into(), roles: vec![Role::User] });
    }

    #[test]
    fn expired_wrong_audience_unknown_kid_and_alg_none_are_refused() {
        let v = verifier();
        assert_eq!(v.verify(&token(claims(-5), Some("k1"))), Err(AuthError::Expired));
        let mut wrong_aud = claims(60);
        wrong_aud["aud"] = "other".into();
        assert_eq!(v.verify(&token(wrong_aud, None)), Err(AuthError::Invalid("wrong audience")));
        assert_eq!(v.verify(&token(claims(60), Some("k9"))), Err(AuthError::Invalid("unknown key id")));
        let unsigned =
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", token(claims(60), None).split('.').nth(1).unwrap());
        assert!(v.verify(&unsigned).is_err());
    }

    #[test]
    fn a_cached_token_is_refused_once_expired() {
        let v = verifier();
        let exp = now() + 1;
        let mut short = claims(0);
        short["exp"] = exp.into();
        let t = token(short, Some("k1"));
        assert!(v.verify(&t).is_ok());
        assert!(v.verify(&t).is_ok(), "served from the cache");
        // Valid while `now <= exp`, to the second; then the cached entry no longer counts.
        while now() <= exp {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
        assert_eq!(v.clone().verify(&t), Err(AuthError::Expired));
    }

    #[test]
    fn the_cache_never_vouches_for_another_or_a_tampered_token() {
        let v = verifier();
        let good = token(claims(60), Some("k1"));
        assert!(v.verify(&good).is_ok());
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert!(v.verify(&tampered).is_err());
        let mut other = claims(60);
        other["sub"] = "u2".into();
        assert_eq!(v.verify(&token(other, Some("k1"))).unwrap().user_id, "u2");
        // Another verifier (other keys) shares nothing with this one.
        let key = KeyConfig {
            kid: "k1".into(),
            algorithm: "HS256".into(),
            secret: Some("another-secret-that-is-long-enough-4567".into()),
            public_key_pem: None,
            public_key_file: None,
        };
        let stranger = Verifier::new(&[key], "mediabus", "mediabus-api").unwrap();
        assert_eq!(stranger.verify(&good), Err(AuthError::Invalid("bad signature")));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::default();
        let identity = Identity { user_id: "u".into(), roles: vec![Role::User] };
        let now = now();
        for i in 0..(TOKEN_CACHE_CAPACITY * 2 + 7) {
            let digest: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            cache.insert(digest, identity.clone(), now + 60, now);
            assert!(cache.entries.lock().unwrap().len() <= TOKEN_CACHE_CAPACITY);
        }
        // Expired entries are dropped first when full.
        let cache = TokenCache::default();
        for i in 0..TOKEN_CACHE_CAPACITY {
            let digest: [u8; 32] = Sha256::digest(i.to_le_bytes()).into();
            cache.insert(digest, identity.clone(), if i == 0 { now + 60 } else { now - 1 }, now);
        }
        cache.insert([0; 32], identity.clone(), now + 60, now);
        assert_eq!(cache.entries.lock().unwrap().len(), 2);
    }
}
