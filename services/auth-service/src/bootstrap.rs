//! The first admin, from configuration (`auth.admin_email`, `auth.admin_password`).

use mediabus_config::ExposeSecret;
use mediabus_contracts::Timestamp;
use mediabus_store::{StoreError, User};

use crate::AppState;
use crate::domain::{Email, Name, NewPassword};
use crate::error::AuthFailure;

/// Makes the account `auth.admin_email` an admin. A missing account is created, with the role,
/// when `auth.admin_password` is set (else a warning says to set it). An existing account that
/// is already admin (the one this bootstrap created) is left as is; any other existing account
/// is promoted only if `auth.admin_password` is its password.
///
/// Registration never grants `admin`, and there is no email verification: whoever registered the
/// address first would otherwise become admin at the next start. Several workers may run this at
/// once; the store's unique email makes that safe.
///
/// Errors: an account of that email exists, is not admin, and `auth.admin_password` is empty or
/// not its password (the service must not start: the configured admin would silently not be
/// one, or be someone else); invalid settings; store failures.
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
                let password = settings.admin_password.expose_secret();
                let proven =
                    !password.is_empty() && state.passwords.verify(password, Some(&user.password_hash)).await?;
                if !proven {
                    tracing::error!(user = %user.id, "auth.admin_email belongs to an account this service did not create");
                    return Err(AuthFailure::Invalid(format!(
                        "auth.admin_email: the account {} exists but was not created by this service's admin \
                         bootstrap, and auth.admin_password is not its password: refusing to make it admin \
                         (anyone can register an address). Set MEDIABUS__AUTH__ADMIN_PASSWORD to that account's \
                         password if it is yours, or choose another admin_email",
                        email.as_ref()
                    )));
                }
                user.roles.push("admin".into());
                user.updated_at = Timestamp::now();
                state.store.update_user(&user).await?;
                tracing::info!(user = %user.id, "admin role granted to the configured admin account");
            }
            return Ok(());
        }
        if settings.admin_password.expose_secret().is_empty() {
            tracing::warn!("auth.admin_email has no account yet: set auth.admin_password to create it");
            return Ok(());
        }
        let password = NewPassword::parse(settings.admin_password.expose_secret(), settings.password_min_chars)
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
