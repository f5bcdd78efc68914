//! The auth service's failures and their one mapping onto the wire error (DESIGN §3).

use mediabus_rpc::RpcError;
use mediabus_store::StoreError;
use serde_json::json;

/// Everything an auth subject can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// A field breaks a rule; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// Unknown email or wrong password: one answer for both, so accounts cannot be probed.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// No, or a bad, access token where one is required.
    #[error(transparent)]
    Unauthenticated(#[from] mediabus_auth::AuthError),
    /// A valid token whose user no longer exists.
    #[error("the account no longer exists")]
    AccountGone,
    /// A refresh token that is unknown, expired, used or revoked.
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Too many failed logins for the account; retry after the window ends.
    #[error("too many failed login attempts, retry in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A user named by an admin or service caller does not exist.
    #[error("user not found")]
    UserNotFound,
    #[error("document store: {0}")]
    Store(#[from] StoreError),
    /// Hashing, signing or randomness failed: details for the logs only.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<AuthFailure> for RpcError {
    fn from(err: AuthFailure) -> Self {
        let (status, code) = match &err {
            AuthFailure::Invalid(_) => (400, "VALIDATION_FAILED"),
            AuthFailure::InvalidCredentials => (401, "INVALID_CREDENTIALS"),
            AuthFailure::Unauthenticated(_) | AuthFailure::AccountGone => (401, "UNAUTHENTICATED"),
            AuthFailure::InvalidRefreshToken => (401, "INVALID_REFRESH_TOKEN"),
            AuthFailure::EmailTaken => (409, "EMAIL_TAKEN"),
            AuthFailure::TooManyAttempts { retry_after_secs } => {
                return RpcError::new(429, "TOO_MANY_ATTEMPTS", err.to_string())
                    .with_details(json!({ "retryAfterSecs": retry_after_secs }));
            }
            AuthFailure::UserNotFound => (404, "NOT_FOUND"),
            AuthFailure::Store(_) => {
                // Outages and corrupt data: details for the logs only.
                tracing::error!(error = %err, "store failure");
                return RpcError::new(503, "BACKEND_UNAVAILABLE", "storage is unavailable, retry later");
            }
            AuthFailure::Internal(_) => {
                tracing::error!(error = %err, "internal failure");
                return RpcError::internal();
            }
        };
        RpcError::new(status, code, err.to_string())
    }
}

/// Shorthand for handler results.
pub type Result<T, E = AuthFailure> = std::result::Result<T, E>;
