//! Content tokens: short-lived signed grants to read one stored file, so the HTTP bridge can serve
//! bytes straight from the file store after the media service has checked access once.
//!
//! The media service answers `media.content` with a token for a media it lets the caller read; the
//! bridge verifies the token (signature, expiry, media id) and streams the object it names. A token
//! is a JWT (RFC 7519, HS256 with a secret shared by the media service and the bridge only, audience
//! [`CONTENT_AUDIENCE`]), so it can never pass for an access token and vice versa: the secrets
//! differ and the audience is checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use crate::{AuthError, KeyError, MIN_HS256_SECRET_BYTES, SignError};

/// `aud` of every content token.
pub const CONTENT_AUDIENCE: &str = "mediabus-content";

/// What a content token grants: reading the stored object `key` of media `sub`, described enough
/// for the HTTP response headers, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentGrant {
    /// The media id.
    pub sub: String,
    /// Storage key of the bytes.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// Sniffed content type (`Content-Type`).
    pub mime: String,
    /// Sanitised original name (`Content-Disposition` filename).
    pub name: String,
    /// Hex SHA-256 of the bytes: the strong `ETag`.
    pub sha256: String,
    /// When the bytes were stored, Unix seconds (`Last-Modified`).
    pub modified: u64,
    /// Whether the media is public (`Cache-Control: public` rather than `private`).
    pub public: bool,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// When the token was signed, Unix milliseconds (set by [`ContentSigner::sign`]): the bridge
    /// refuses grants issued before their media was removed or made private. Milliseconds, not
    /// the seconds of JWT `iat`, so a grant signed just after such a change is told apart from one
    /// signed just before. Tokens without it read as 0 (issued before any change).
    #[serde(default, rename = "iatMs")]
    pub iat_ms: u64,
}

/// Signs and verifies content tokens with one HS256 secret.
#[derive(Clone)]
pub struct ContentSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for ContentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.write_str("ContentSigner")
    }
}

impl ContentSigner {
    /// A signer over `secret`. Errors: a secret shorter than [`MIN_HS256_SECRET_BYTES`].
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(KeyError::Key {
                kid: "content".into(),
                reason: format!("the content signing secret needs at least {MIN_HS256_SECRET_BYTES} bytes"),
            });
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }

    /// A token for `grant` valid for `ttl` from now (its `exp` and `iat_ms` are overwritten).
    /// Returns the token and its expiry in Unix seconds.
    pub fn sign(&self, mut grant: ContentGrant, ttl: Duration) -> Result<(String, u64), SignError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        grant.exp = (now + ttl).as_secs();
        grant.iat_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        #[derive(Serialize)]
        struct Wire<'a> {
            aud: &'static str,
            #[serde(flatten)]
            grant: &'a ContentGrant,
        }
        let token =
            encode(&Header::new(Algorithm::HS256), &Wire { aud: CONTENT_AUDIENCE, grant: &grant }, &self.encoding)
                .map_err(|e| SignError(e.to_string()))?;
        Ok((token, grant.exp))
    }

    /// The grant of `token` if it is signed with this secret, unexpired (no leeway), meant for
    /// content, and names `media_id`.
    ///
    /// Errors: [`AuthError::Expired`] past `exp`; [`AuthError::Invalid`] otherwise.
    pub fn verify(&self, token: &str, media_id: &str) -> Result<ContentGrant, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_audience(&[CONTENT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        let grant = decode::<ContentGrant>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid("invalid content token"),
            })?
            .claims;
        if grant.sub != media_id {
            return Err(AuthError::Invalid("content token for another media"));
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "content-secret-for-tests-0123456789abcdef";

    fn grant() -> ContentGrant {
        ContentGrant {
            sub: "m1".into(),
            key: "ab/cdef".into(),
            size: 10,
            mime: "image/png".into(),
            name: "a.png".into(),
            sha256: "00".repeat(32),
            modified: 1_700_000_000,
            public: false,
            exp: 0,
            iat_ms: 0,
        }
    }

    #[test]
    fn a_token_grants_exactly_its_media_until_it_expires() {
        let signer = ContentSigner::new(SECRET).unwrap();
        let before = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
        let (token, exp) = signer.sign(grant(), Duration::from_secs(60)).unwrap();
        let verified = signer.verify(&token, "m1").unwrap();
        assert!(verified.iat_ms >= before && verified.iat_ms <= before + 5_000, "issued-at in milliseconds");
        assert_eq!(verified, ContentGrant { exp, iat_ms: verified.iat_ms, ..grant() });
        assert!(matches!(signer.verify(&token, "m2"), Err(AuthError::Invalid(_))));

        // Expires at the next whole second: polled until it does, within a deadline.
        let (expired, _) = signer.sign(grant(), Duration::ZERO).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !matches!(signer.verify(&expired, "m1"), Err(AuthError::Expired)) {
            assert!(std::time::Instant::now() < deadline, "the grant never expired");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn other_secrets_and_tampering_are_refused() {
        let signer = ContentSigner::new(SECRET).unwrap();
        let other = ContentSigner::new("another-secret-for-tests-0123456789abcdef").unwrap();
        let (token, _) = other.sign(grant(), Duration::from_secs(60)).unwrap();
        assert!(matches!(signer.verify(&token, "m1"), Err(AuthError::Invalid(_))));

        let (token, _) = signer.sign(grant(), Duration::from_secs(60)).unwrap();
        let mut tampered = token.clone().into_bytes();
        let dot = token.find('.').unwrap();
        tampered[dot + 5] = if tampered[dot + 5] == b'A' { b'B' } else { b'A' };
        assert!(signer.verify(std::str::from_utf8(&tampered).unwrap(), "m1").is_err());
        assert!(ContentSigner::new("short").is_err());
    }
}
