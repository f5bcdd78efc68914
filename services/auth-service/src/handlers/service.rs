//! `auth.serviceToken`: trusted backend services exchange their secret for a short-lived
//! `service` token, with which they act for users (`userId` in data) on every service.

pub use mediabus_contracts::auth::{ServiceLogin, ServiceToken};
use mediabus_rpc::Ctx;
use sha2::{Digest as _, Sha256};

use crate::AppState;
use crate::error::{AuthFailure, Result};
use crate::tokens::{constant_time_eq, hex};

/// `auth.serviceToken {serviceId, secret}` → [`ServiceToken`] for a service listed in
/// `auth.service_accounts` whose secret hashes to its `secret_sha256`.
///
/// 401 `INVALID_CREDENTIALS` for an unknown service or a wrong secret alike. Secrets are long
/// random values, so a fast hash compared in constant time suffices (no bcrypt, no throttle).
pub async fn token(ctx: Ctx<AppState>, input: ServiceLogin) -> Result<ServiceToken> {
    let presented = hex(&Sha256::digest(input.secret.as_bytes()));
    let account = ctx.state.settings.service_accounts.iter().find(|a| a.id == input.service_id);
    // An unknown id is compared against a digest no secret has, so both paths do the same work.
    let expected = account.map_or_else(|| "-".repeat(64), |a| a.secret_sha256.to_ascii_lowercase());
    let matched = constant_time_eq(presented.as_bytes(), expected.as_bytes());
    let Some(account) = account.filter(|_| matched) else {
        tracing::warn!(service = %input.service_id, "service token refused");
        return Err(AuthFailure::InvalidCredentials);
    };
    let (access_token, expires_in) = ctx.state.tokens.service_token(&account.id)?;
    tracing::info!(service = %account.id, "service token issued");
    Ok(ServiceToken { access_token, expires_in, token_type: "Bearer".into() })
}
