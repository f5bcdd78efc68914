//! Wire types of the auth subjects (DESIGN §5, §6), served by auth-service on queue group `auth`:
//! what callers send and receive, with the JSON names fixed by the contract (camelCase).
//!
//! Requests that carry a password or a secret print it as `[REDACTED]` in `Debug`.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Subject names (NestJS message patterns) served by the auth service.
pub mod subjects {
    /// [`super::Register`] → [`super::Session`].
    pub const REGISTER: &str = "auth.register";
    /// [`super::Login`] → [`super::Session`].
    pub const LOGIN: &str = "auth.login";
    /// [`super::Refresh`] → [`super::Session`] (rotates the refresh token).
    pub const REFRESH: &str = "auth.refresh";
    /// [`super::Refresh`] → `{}` (revokes the session).
    pub const LOGOUT: &str = "auth.logout";
    /// [`super::Me`] with the access token → [`super::UserView`].
    pub const ME: &str = "auth.me";
    /// Extension: [`super::ServiceLogin`] → [`super::ServiceToken`].
    pub const SERVICE_TOKEN: &str = "auth.serviceToken";
}

/// NATS header carrying the end client's network address (IP, as text), set by the HTTP bridge
/// from the TCP peer address of the request, never copied from a client header. The auth service
/// throttles `auth.login` and `auth.register` per source with it; callers that do not set it
/// (backend services on NATS) share one source. Only trusted NATS users (bridge, backends) can
/// call the auth subjects, so the header is believed as given.
pub const CLIENT_ADDR_HEADER: &str = "Mediabus-Client-Addr";

/// `auth.register` data.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Register {
    /// Display name: 1 to 100 characters (trimmed), no control characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 100))]
    pub name: String,
    /// `local@domain`; trimmed and lowercased; must be unused (409 `EMAIL_TAKEN`).
    #[cfg_attr(feature = "openapi", schema(format = Email, max_length = 254))]
    pub email: String,
    /// 8 characters (`auth.password_min_chars`) to 72 bytes (bcrypt's limit).
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 72))]
    pub password: String,
}

impl std::fmt::Debug for Register {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Register")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// `auth.login` data. Wrong email and wrong password alike give 401 `INVALID_CREDENTIALS`; too
/// many failures from one source for the account give 429 `TOO_MANY_ATTEMPTS`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Login {
    #[cfg_attr(feature = "openapi", schema(format = Email, max_length = 254))]
    pub email: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("email", &self.email).field("password", &"[REDACTED]").finish()
    }
}

/// `auth.refresh` and `auth.logout` data.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Refresh {
    /// The opaque refresh token of a session (single use: `auth.refresh` rotates it).
    pub refresh_token: String,
}

impl std::fmt::Debug for Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresh").field("refresh_token", &"[REDACTED]").finish()
    }
}

/// `auth.me` data: `{}`; admin and service callers may name the user they act for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Me {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `auth.serviceToken` data: a backend service listed in `auth.service_accounts` and its secret.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceLogin {
    pub service_id: String,
    pub secret: String,
}

impl std::fmt::Debug for ServiceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLogin").field("service_id", &self.service_id).field("secret", &"[REDACTED]").finish()
    }
}

/// `auth.serviceToken` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceToken {
    /// JWT with `sub` = the service id and `roles: ["service"]`.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^Bearer$"))]
    pub token_type: String,
}

/// An account as callers see it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub name: String,
    /// Normalised (lowercase).
    pub email: String,
    /// `user`, and `admin` for administrators.
    pub roles: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The answer of `auth.register`, `auth.login` and `auth.refresh`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Opaque; exchange it once with `auth.refresh`, or end the session with `auth.logout`.
    pub refresh_token: String,
    /// Seconds until `accessToken` expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^Bearer$"))]
    pub token_type: String,
    pub user: UserView,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are credentials: out of logs.
        f.debug_struct("Session")
            .field("expires_in", &self.expires_in)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_are_the_contract_and_debug_hides_credentials() {
        let login: Login = serde_json::from_str(r#"{"email":"a@b.c","password":"hunter22"}"#).unwrap();
        assert!(!format!("{login:?}").contains("hunter22"));
        let refresh: Refresh = serde_json::from_str(r#"{"refreshToken":"r1"}"#).unwrap();
        assert_eq!(refresh.refresh_token, "r1");
        let service: ServiceLogin = serde_json::from_str(r#"{"serviceId":"s","secret":"xyz"}"#).unwrap();
        assert!(!format!("{service:?}").contains("xyz"));
        let me: Me = serde_json::from_str("{}").unwrap();
        assert_eq!(me.user_id, None);
        let now = Timestamp::from_unix_millis(0);
        let user = UserView {
            id: "u".into(),
            name: "n".into(),
            email: "e".into(),
            roles: vec!["user".into()],
            created_at: now,
            updated_at: now,
        };
        let session = Session {
            access_token: "at".into(),
            refresh_token: "rt".into(),
            expires_in: 900,
            token_type: "Bearer".into(),
            user,
        };
        let json = serde_json::to_value(&session).unwrap();
        assert_eq!(json["accessToken"], "at");
        assert_eq!(json["tokenType"], "Bearer");
        assert_eq!(json["user"]["createdAt"], "1970-01-01T00:00:00.000Z");
        assert!(!format!("{session:?}").contains("at\""));
    }
}
