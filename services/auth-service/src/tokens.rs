//! Access tokens (JWTs from [`Signer`], checked by [`Verifier`]) and refresh tokens (opaque
//! random values, stored only as hashes).

use std::time::Duration;

use base64::Engine as _;
use mediabus_auth::{KeyConfig, KeyError, Role, Signer, Verifier};
use sha2::{Digest as _, Sha256};

use crate::config::AuthSettings;
use crate::error::AuthFailure;

/// Bytes of randomness in a refresh token (256 bits).
const REFRESH_TOKEN_BYTES: usize = 32;

/// Longest refresh token looked up, in characters; ours are 43. Longer input is refused without
/// hashing it.
pub const MAX_REFRESH_TOKEN_CHARS: usize = 256;

/// Signs and verifies this service's access tokens. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Tokens {
    signer: Signer,
    verifier: Verifier,
    access_ttl: Duration,
    service_ttl: Duration,
    /// Lifetime of each refresh token.
    pub refresh_ttl: Duration,
}

impl Tokens {
    /// The signer from `auth.signing_key` and a verifier over `auth.keys`, plus the signing key
    /// itself when it is HS256 and not listed. Checks that a token just signed verifies, so a
    /// private key without its public half (or a mismatched one) fails at start-up.
    pub fn new(auth: &AuthSettings) -> Result<Self, KeyError> {
        let signer = Signer::new(&auth.signing_key, &auth.issuer, &auth.audience)?;
        let mut keys: Vec<KeyConfig> = auth.keys.clone();
        if !keys.iter().any(|k| k.kid == auth.signing_key.kid) {
            keys.extend(auth.signing_key.verification_key());
        }
        let verifier = Verifier::new(&keys, &auth.issuer, &auth.audience).map_err(|e| match e {
            KeyError::NoKeys => {
                KeyError::Key { kid: auth.signing_key.kid.clone(), reason: "list its public key in auth.keys".into() }
            }
            other => other,
        })?;
        let (probe, _) = signer
            .sign("probe", &[Role::User], Duration::from_secs(60))
            .map_err(|e| KeyError::Key { kid: signer.kid().to_owned(), reason: e.to_string() })?;
        verifier.verify(&probe).map_err(|e| KeyError::Key {
            kid: signer.kid().to_owned(),
            reason: format!("tokens it signs do not verify with auth.keys ({e}): list the matching public key"),
        })?;
        Ok(Self {
            signer,
            verifier,
            access_ttl: Duration::from_secs(auth.access_ttl_secs),
            service_ttl: Duration::from_secs(auth.service_token_ttl_secs),
            refresh_ttl: Duration::from_secs(auth.refresh_ttl_secs),
        })
    }

    /// Verifies access tokens presented to this service (every configured key).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// An access token for `user_id` with `roles`: `(token, expires_in_secs)`.
    pub fn access_token(&self, user_id: &str, roles: &[Role]) -> Result<(String, u64), AuthFailure> {
        self.signer.sign(user_id, roles, self.access_ttl).map_err(|e| AuthFailure::Internal(e.to_string()))
    }

    /// A `service` token for the backend service `service_id`: `(token, expires_in_secs)`.
    pub fn service_token(&self, service_id: &str) -> Result<(String, u64), AuthFailure> {
        self.signer
            .sign(service_id, &[Role::Service], self.service_ttl)
            .map_err(|e| AuthFailure::Internal(e.to_string()))
    }
}

/// A new refresh token: what the client gets, and the hash the store keeps.
pub struct RefreshSecret {
    /// 256 random bits, URL-safe base64 without padding (43 characters).
    pub value: String,
    /// [`refresh_hash`] of `value`.
    pub hash: String,
}

impl RefreshSecret {
    /// Draws a fresh token from the OS. 500 if the OS has no randomness.
    pub fn generate() -> Result<Self, AuthFailure> {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| AuthFailure::Internal(format!("randomness: {e}")))?;
        let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let hash = refresh_hash(&value);
        Ok(Self { value, hash })
    }
}

/// Lowercase hex SHA-256 of a refresh token. A fast hash is enough: the token is 256 random
/// bits, so the stored hash cannot be brute-forced back, and lookups by hash stay cheap.
pub fn refresh_hash(value: &str) -> String {
    hex(&Sha256::digest(value.as_bytes()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_256_random_bits_stored_as_sha256() {
        let a = RefreshSecret::generate().unwrap();
        let b = RefreshSecret::generate().unwrap();
        assert_eq!(a.value.len(), 43);
        assert_ne!(a.value, b.value);
        assert!(a.value.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a.hash, refresh_hash(&a.value));
        assert_eq!(a.hash.len(), 64);
        assert_eq!(refresh_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
