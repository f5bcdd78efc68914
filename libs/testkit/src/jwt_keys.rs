//! PEM key pairs for token tests (RS256 and EdDSA), committed under `libs/testkit/keys/`.
//!
//! Test-only keys: they are public in this repository and must never be configured elsewhere.

/// RSA 2048 private key, PKCS#8 PEM.
pub const RSA_PRIVATE: &str = include_str!("../keys/rsa_private.pem");
/// The public half of [`RSA_PRIVATE`], SPKI PEM.
pub const RSA_PUBLIC: &str = include_str!("../keys/rsa_public.pem");
/// Another RSA 2048 private key that no service trusts (an attacker's), PKCS#8 PEM.
pub const RSA_OTHER_PRIVATE: &str = include_str!("../keys/rsa_other_private.pem");
/// Ed25519 private key, PKCS#8 PEM.
pub const ED25519_PRIVATE: &str = include_str!("../keys/ed25519_private.pem");
/// The public half of [`ED25519_PRIVATE`], SPKI PEM.
pub const ED25519_PUBLIC: &str = include_str!("../keys/ed25519_public.pem");
