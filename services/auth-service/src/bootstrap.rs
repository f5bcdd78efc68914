//! The first admin, from configuration (`auth.admin_email`, `auth.admin_password`).

use mediabus_contracts::Timestamp;
use mediabus_store::{StoreError, User};

use crate::AppState;
use crate::domain::{Email, Name, NewPassword};
use crate::error::AuthFailure;

/// Makes the account `auth.admin_email` an admin: an existing account gets the role; a missing
/// one is created when `auth.admin_password` is set, else a warning says how to create it.
///
/// Registration never grants `admin`, even for this email: there is no email verification, so
/// whoever registered it first would otherwise become admin. Several workers may run this at
/// once; the store's unique email makes that safe.
pub async fn ensure_admin(state: &AppState) -> Result<(), AuthFailure> {
    let settings = &state.settings;
    if settings.admin_email.trim().is_empty() {
        return Ok(());
    }
    let email =
        Email::parse(&settings.admin_email).map_err(|e| AuthFailure::Invalid(format!("auth.admin_email: {e}")))?;
    for _ in 0..2 {
        if let Some(mut user) = state.store.user_by_email(email.as_ref()).await? {
            if !user.roles.iter().any(|r| r == "admin") {
                user.roles.push("admin".into());
                user.updated_at = Timestamp::now();
                state.store.update_user(&user).await?;
                tracing::info!(user = %user.id, "admin role granted to the configured admin account");
            }
            return Ok(());
        }
        if settings.admin_password.is_empty() {
            tracing::warn!(
                "auth.admin_email has no account yet: set auth.admin_password to create it, or register it and restart"
            );
            return Ok(());
        }
        let password = NewPassword::parse(&settings.admin_password, settings.password_min_chars)
            .map_err(|e| AuthFailure::Invalid(format!("auth.admin_password: {e}")))?;
        let name =
            Name::parse(&settings.admin_name).map_err(|e| AuthFailure::Invalid(format!("auth.admin_name: {e}")))?;
        let now = Timestamp::now();
        let admin = User {
            id: cuid2::create_id(),
            email: email.as_ref().to_owned(),
            name: name.as_ref().to_owned(),
            password_hash: state.passwords.hash(password.as_ref()).await?,
            roles: vec!["user".into(), "admin".into()],
            created_at: now,
            updated_at: now,
        };
        match state.store.create_user(&admin).await {
            Ok(()) => {
                tracing::info!(user = %admin.id, "configured admin account created");
                return Ok(());
            }
            // Another worker created it meanwhile: go round and promote what it made.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
