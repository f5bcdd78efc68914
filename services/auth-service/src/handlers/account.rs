//! `auth.register`, `auth.login`, `auth.me`.

use mediabus_auth::AuthError;
use mediabus_contracts::Timestamp;
use mediabus_rpc::Ctx;
use mediabus_store::{StoreError, User};
use serde::Deserialize;

use super::{Session, UserView, start_session};
use crate::AppState;
use crate::domain::{Email, Name, NewPassword, check_length};
use crate::error::{AuthFailure, Result};

/// `auth.register` data.
#[derive(Debug, Deserialize)]
pub struct Register {
    pub name: String,
    pub email: String,
    pub password: String,
}

/// `auth.login` data.
#[derive(Debug, Deserialize)]
pub struct Login {
    pub email: String,
    pub password: String,
}

/// `auth.me` data: `{}`; admin and service callers may name the user they act for.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `auth.register {name, email, password}` → [`Session`] (the new account is signed in).
///
/// 400 `VALIDATION_FAILED` (name, email shape, password under the minimum or over 72 bytes);
/// 409 `EMAIL_TAKEN` when the normalised email has an account. New accounts get role `user`.
pub async fn register(ctx: Ctx<AppState>, input: Register) -> Result<Session> {
    let state = &ctx.state;
    let name = Name::parse(&input.name)?;
    let email = Email::parse(&input.email)?;
    let password = NewPassword::parse(&input.password, state.settings.password_min_chars)?;
    let now = Timestamp::now();
    let user = User {
        id: cuid2::create_id(),
        email: email.as_ref().to_owned(),
        name: name.as_ref().to_owned(),
        password_hash: state.passwords.hash(password.as_ref()).await?,
        roles: vec!["user".into()],
        created_at: now,
        updated_at: now,
    };
    match state.store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(AuthFailure::EmailTaken),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = %user.id, "account registered");
    start_session(state, &user).await
}

/// `auth.login {email, password}` → [`Session`].
///
/// 401 `INVALID_CREDENTIALS` for an unknown email and for a wrong password alike, after the same
/// bcrypt work; 429 `TOO_MANY_ATTEMPTS` (details `retryAfterSecs`) once the account's failed
/// attempts in the window pass `max_failed_logins`, even with the right password; 400 for a
/// malformed email or a password over 72 bytes.
pub async fn login(ctx: Ctx<AppState>, input: Login) -> Result<Session> {
    let state = &ctx.state;
    let email = Email::parse(&input.email)?;
    check_length(&input.password)?;
    let settings = &state.settings;
    let throttled = settings.max_failed_logins > 0;
    if throttled {
        // Counted before the password is checked, so parallel guesses cannot slip past the limit;
        // keyed by email whether or not it has an account, so the limit does not reveal that.
        let window = std::time::Duration::from_secs(settings.failed_login_window_secs);
        let now = Timestamp::now();
        let attempts = state.store.record_login_attempt(email.as_ref(), now, window).await?;
        if attempts.count > settings.max_failed_logins {
            let ends = attempts.window_start.unix_millis().saturating_add(window.as_millis() as i64);
            let retry_after_secs = u64::try_from((ends - now.unix_millis() + 999) / 1000).unwrap_or(0).max(1);
            tracing::warn!(attempts = attempts.count, "login throttled");
            return Err(AuthFailure::TooManyAttempts { retry_after_secs });
        }
    }
    let user = state.store.user_by_email(email.as_ref()).await?;
    let matched = state.passwords.verify(&input.password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
    let Some(user) = user.filter(|_| matched) else {
        return Err(AuthFailure::InvalidCredentials);
    };
    if throttled {
        state.store.clear_login_attempts(email.as_ref()).await?;
    }
    tracing::info!(user = %user.id, "login");
    start_session(state, &user).await
}

/// `auth.me {}` with `Authorization: Bearer <access token>` → the caller's account.
///
/// An admin or service caller may pass `userId` to get that user's account (a service's own
/// token names no account, so it must); each such call is logged with both identities. A
/// `userId` from a plain user is ignored. 401 `UNAUTHENTICATED` without a valid token or when the
/// account is gone; 404 `NOT_FOUND` for a `userId` that does not exist; 400 for a service token
/// without `userId`.
pub async fn me(ctx: Ctx<AppState>, input: Option<Me>) -> Result<UserView> {
    let input = input.unwrap_or_default();
    let caller = ctx
        .state
        .tokens
        .verifier()
        .identify(ctx.bearer_token(), ctx.header("Authorization").is_some())?
        .ok_or(AuthFailure::Unauthenticated(AuthError::Missing))?;
    let store = &ctx.state.store;
    let acting_for = input.user_id.as_deref().filter(|id| caller.may_act_for_others() && *id != caller.user_id);
    match acting_for {
        Some(user_id) => {
            tracing::info!(caller = %caller.user_id, roles = ?caller.roles, acting_for = %user_id, "auth.me for another user");
            let user = store.user_by_id(user_id).await?.ok_or(AuthFailure::UserNotFound)?;
            Ok(UserView::from(&user))
        }
        None if caller.has(mediabus_auth::Role::Service) && !caller.is_admin() => {
            Err(AuthFailure::Invalid("a service token names no account: pass userId".into()))
        }
        None => {
            let user = store.user_by_id(&caller.user_id).await?.ok_or(AuthFailure::AccountGone)?;
            Ok(UserView::from(&user))
        }
    }
}
