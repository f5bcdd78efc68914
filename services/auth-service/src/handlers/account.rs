//! `auth.register`, `auth.login`, `auth.me`.

use mediabus_auth::AuthError;
use mediabus_contracts::Timestamp;
pub use mediabus_contracts::auth::{Login, Me, Register};
use mediabus_rpc::Ctx;
use mediabus_store::{StoreError, User};

use super::{Session, UserView, start_session, user_view};
use crate::AppState;
use crate::domain::{Email, Name, NewPassword, check_length};
use crate::error::{AuthFailure, Result};
use crate::throttle::{self, Source};

/// `auth.register {name, email, password}` → [`Session`] (the new account is signed in).
///
/// 400 `VALIDATION_FAILED` (name, email shape, password under the minimum or over 72 bytes);
/// 409 `EMAIL_TAKEN` when the normalised email has an account; 429 `TOO_MANY_ATTEMPTS` past
/// `auth.max_registrations` attempts from the caller's source (see [`crate::throttle`]) in the
/// window. New accounts get role `user`.
pub async fn register(ctx: Ctx<AppState>, input: Register) -> Result<Session> {
    let state = &ctx.state;
    throttle::registration(state, &Source::of(&ctx)).await?;
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
/// bcrypt work; 400 for a malformed email or a password over 72 bytes. Throttling
/// ([`crate::throttle::login`]): past `max_failed_logins` attempts for the account from the
/// caller's source in the window, 429 `TOO_MANY_ATTEMPTS` (details `retryAfterSecs`) for that
/// source only, so the owner still signs in from elsewhere; past the same count from all sources,
/// every attempt for the account is delayed (doubling, at most `login_delay_max_ms`) until a
/// correct password clears it.
pub async fn login(ctx: Ctx<AppState>, input: Login) -> Result<Session> {
    let state = &ctx.state;
    let email = Email::parse(&input.email)?;
    check_length(&input.password)?;
    let attempt = throttle::login(state, email.as_ref(), &Source::of(&ctx)).await?;
    if !attempt.delay.is_zero() {
        tokio::time::sleep(attempt.delay).await;
    }
    let user = state.store.user_by_email(email.as_ref()).await?;
    let matched = state.passwords.verify(&input.password, user.as_ref().map(|u| u.password_hash.as_str())).await?;
    let Some(user) = user.filter(|_| matched) else {
        return Err(AuthFailure::InvalidCredentials);
    };
    attempt.succeeded(state).await?;
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
            Ok(user_view(&user))
        }
        None if caller.has(mediabus_auth::Role::Service) && !caller.is_admin() => {
            Err(AuthFailure::Invalid("a service token names no account: pass userId".into()))
        }
        None => {
            let user = store.user_by_id(&caller.user_id).await?.ok_or(AuthFailure::AccountGone)?;
            Ok(user_view(&user))
        }
    }
}
