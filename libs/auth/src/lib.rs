//! Who is calling: verifies the access JWT a request carries (`Authorization: Bearer <jwt>`, as a
//! NATS header or forwarded by the HTTP bridge) and yields an [`Identity`] with roles (DESIGN §6).
//!
//! Tokens are JWTs (RFC 7519) signed with HS256 (shared secret), RS256 (RSA public key, PEM) or
//! EdDSA (Ed25519 public key, PEM). Each key has an id (`kid` header, RFC 7515 §4.1.4) so keys can
//! rotate: a token names its key, the verifier accepts every configured key until it is removed.
//! Each key accepts only its own algorithm, which rules out algorithm confusion (an HS256 token
//! "signed" with an RSA public key) and `alg: none`.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::{Deserialize, Serialize};

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

/// Failure to build a [`Verifier`] from configuration.
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
    /// HS256: the shared secret (at least 32 bytes recommended).
    #[serde(default)]
    pub secret: Option<String>,
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
        match (&self.public_key_pem, &self.public_key_file) {
            (Some(pem), _) => Ok(Some(pem.clone())),
            (None, Some(path)) => std::fs::read_to_string(path).map(Some).map_err(|e| format!("{}: {e}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

/// Verifies access tokens against a set of keys, an issuer and an audience.
#[derive(Clone)]
pub struct Verifier {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    default_kid: String,
    issuer: String,
    audience: String,
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
                    let secret = key.secret.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| bad("HS256 needs a secret"))?;
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
        Ok(Self { keys: map, default_kid: first.kid.clone(), issuer: issuer.to_owned(), audience: audience.to_owned() })
    }

    /// Verifies signature, `exp`, `nbf`, `iss` and `aud` (no leeway: clocks of one deployment
    /// agree closely, and an access token lives minutes) and returns the caller.
    ///
    /// Errors: [`AuthError::Expired`] past `exp`; [`AuthError::Invalid`] for everything else
    /// (malformed, unknown `kid`, wrong algorithm, bad signature, not yet valid, wrong issuer or
    /// audience, no roles).
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
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
        Ok(Identity { user_id: claims.sub, roles: claims.roles })
    }

    /// The caller of a request: `None` (anonymous) without an `Authorization` header; a refusal
    /// when a header is present but not a valid Bearer token (a bad token is never anonymous).
    pub fn identify(&self, bearer_token: Option<&str>, has_authorization_header: bool) -> Result<Option<Identity>, AuthError> {
        match (bearer_token, has_authorization_header) {
            (Some(token), _) => self.verify(token).map(Some),
            (None, true) => Err(AuthError::Invalid("expected Bearer scheme")),
            (None, false) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "a-test-secret-that-is-long-enough-0123";

    fn verifier() -> Verifier {
        let key = KeyConfig { kid: "k1".into(), algorithm: "HS256".into(), secret: Some(SECRET.into()), public_key_pem: None, public_key_file: None };
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
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", token(claims(60), None).split('.').nth(1).unwrap());
        assert!(v.verify(&unsigned).is_err());
    }
}
