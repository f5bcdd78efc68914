//! Handlers, one module per concern. Each is an async fn `(Ctx<AppState>, Input) -> Result<Output>`.
//!
//! - `auth.register`, `auth.login`, `auth.me` in [`account`];
//! - `auth.refresh`, `auth.logout` in [`session`];
//! - `auth.serviceToken` in [`service`].

pub mod account;
pub mod service;
pub mod session;

use mediabus_auth::Role;
use mediabus_contracts::Timestamp;
pub use mediabus_contracts::auth::{Session, UserView};
use mediabus_store::{RefreshToken, User};

use crate::AppState;
use crate::error::Result;
use crate::tokens::RefreshSecret;

/// A stored user as callers see it ([`UserView`]): never the password hash.
pub fn user_view(user: &User) -> UserView {
    UserView {
        id: user.id.clone(),
        name: user.name.clone(),
        email: user.email.clone(),
        roles: user.roles.clone(),
        created_at: user.created_at,
        updated_at: user.updated_at,
    }
}

/// The roles of a stored user, as token roles; names this build does not know are left out.
fn roles_of(user: &User) -> Vec<Role> {
    user.roles
        .iter()
        .filter_map(|name| match name.as_str() {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            other => {
                tracing::warn!(user = %user.id, role = %other, "unknown role ignored");
                None
            }
        })
        .collect()
}

/// `now + ttl` as a store timestamp.
fn after(now: Timestamp, ttl: std::time::Duration) -> Timestamp {
    let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_unix_millis(now.unix_millis().saturating_add(millis))
}

/// The session a login (or registration) starts: an access token and the first refresh token of
/// a new family.
async fn start_session(state: &AppState, user: &User) -> Result<Session> {
    let secret = RefreshSecret::generate()?;
    let now = Timestamp::now();
    state
        .store
        .insert_refresh_token(&RefreshToken {
            token_hash: secret.hash,
            family_id: cuid2::create_id(),
            user_id: user.id.clone(),
            created_at: now,
            expires_at: after(now, state.tokens.refresh_ttl),
            used_at: None,
            revoked_at: None,
        })
        .await?;
    session(state, user, secret.value)
}

/// The answer for `user` holding the refresh token `refresh_token`.
fn session(state: &AppState, user: &User, refresh_token: String) -> Result<Session> {
    let (access_token, expires_in) = state.tokens.access_token(&user.id, &roles_of(user))?;
    Ok(Session { access_token, refresh_token, expires_in, token_type: "Bearer".into(), user: user_view(user) })
}
