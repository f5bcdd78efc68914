//! `auth.refresh`, `auth.logout`.

use mediabus_contracts::Timestamp;
pub use mediabus_contracts::auth::Refresh;
use mediabus_rpc::Ctx;
use mediabus_store::Rotation;
use serde_json::{Map, Value};

use super::{Session, after, session};
use crate::AppState;
use crate::error::{AuthFailure, Result};
use crate::tokens::{MAX_REFRESH_TOKEN_CHARS, RefreshSecret, refresh_hash};

/// The stored hash of the presented refresh token; 401 for input that cannot be one of ours.
fn presented_hash(input: &Refresh) -> Result<String> {
    let token = input.refresh_token.trim();
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_CHARS {
        return Err(AuthFailure::InvalidRefreshToken);
    }
    Ok(refresh_hash(token))
}

/// `auth.refresh {refreshToken}` → [`Session`] with a new access token and a new refresh token;
/// the presented one is used up.
///
/// 401 `INVALID_REFRESH_TOKEN` when it is unknown, expired, revoked or already used. Presenting an
/// already-used token also revokes its whole family (every token of that login, the newest
/// included): a used token coming back means someone else holds a copy.
pub async fn refresh(ctx: Ctx<AppState>, input: Refresh) -> Result<Session> {
    let state = &ctx.state;
    let presented = presented_hash(&input)?;
    let next = RefreshSecret::generate()?;
    let now = Timestamp::now();
    let rotation =
        state.store.rotate_refresh_token(&presented, &next.hash, now, after(now, state.tokens.refresh_ttl)).await?;
    let user_id = match rotation {
        Rotation::Rotated { user_id, .. } => user_id,
        Rotation::Reused { user_id, family_id } => {
            tracing::warn!(user = %user_id, family = %family_id, "refresh token reused: session revoked");
            return Err(AuthFailure::InvalidRefreshToken);
        }
        Rotation::Invalid => return Err(AuthFailure::InvalidRefreshToken),
    };
    let Some(user) = state.store.user_by_id(&user_id).await? else {
        // The account went away: end the session too.
        state.store.revoke_refresh_family(&next.hash, now).await?;
        return Err(AuthFailure::InvalidRefreshToken);
    };
    session(state, &user, next.value)
}

/// `auth.logout {refreshToken}` → `{}`: revokes the session (the token's whole family), so neither
/// it nor any token rotated from it refreshes again. Idempotent for a known token.
///
/// 401 `INVALID_REFRESH_TOKEN` for a token this service never issued (or long purged). The
/// access token stays valid until it expires (minutes): access tokens are not looked up.
pub async fn logout(ctx: Ctx<AppState>, input: Refresh) -> Result<Value> {
    let hash = presented_hash(&input)?;
    match ctx.state.store.revoke_refresh_family(&hash, Timestamp::now()).await? {
        Some(token) => {
            tracing::info!(user = %token.user_id, family = %token.family_id, "logout");
            Ok(Value::Object(Map::new()))
        }
        None => Err(AuthFailure::InvalidRefreshToken),
    }
}
