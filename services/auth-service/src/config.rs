//! Settings, layered: built-in defaults (`defaults.toml`) → `config/auth-service.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY` (`__` separates levels), as in the media service.

use mediabus_auth::{KeyConfig, SigningKeyConfig};
use mediabus_config::{DevSecretError, Env, ExposeSecret, SecretString, refuse_dev_secret};
pub use mediabus_rpc::ServiceSettings;
use mediabus_store::StoreConfig;
use serde::Deserialize;

/// Everything the auth service reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `MEDIABUS__ENV`: `production` (default) refuses development secrets, `dev` accepts them.
    #[serde(default)]
    pub env: Env,
    pub nats: NatsSettings,
    pub service: ServiceSettings,
    pub store: StoreConfig,
    pub auth: AuthSettings,
    /// `[telemetry]`: log format and OTLP endpoint (DESIGN §12).
    pub telemetry: mediabus_telemetry::TelemetrySettings,
    /// `[metrics]`: the Prometheus listener; off unless `listen` is set.
    pub metrics: mediabus_telemetry::MetricsSettings,
}

/// `[nats]`: URL, this service's user and password (see `defaults.toml`).
pub use mediabus_rpc::NatsSettings;

/// Tokens, passwords, throttling and the first admin (the `[auth]` section).
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    /// `iss` of every access token.
    pub issuer: String,
    /// `aud` of every access token.
    pub audience: String,
    /// Access-token lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Refresh-token lifetime, seconds (each rotation starts a new one).
    pub refresh_ttl_secs: u64,
    /// bcrypt work factor, 4..=31.
    pub bcrypt_cost: u32,
    /// Shortest password, in characters.
    pub password_min_chars: usize,
    /// Login attempts per account from one source within the window before that source gets
    /// 429; past as many from all sources, attempts are delayed (see `crate::throttle`). 0 = no
    /// throttling.
    pub max_failed_logins: u32,
    /// Seconds.
    pub failed_login_window_secs: u64,
    /// Longest delay before a login for an account under attack, milliseconds.
    pub login_delay_max_ms: u64,
    /// Registrations per source within `registration_window_secs` before 429; 0 = unlimited.
    pub max_registrations: u32,
    /// Seconds.
    pub registration_window_secs: u64,
    /// Email of the first admin; empty = none.
    pub admin_email: String,
    /// Creates the first admin's account when it does not exist; also the proof that an existing
    /// account of that email is the admin's (see `crate::bootstrap`). Never printed.
    pub admin_password: SecretString,
    /// Name of the first admin's account when it is created.
    pub admin_name: String,
    /// Seconds between purges of expired refresh tokens and login counters.
    pub sweep_interval_secs: u64,
    /// Service-token lifetime, seconds.
    pub service_token_ttl_secs: u64,
    /// The key new access tokens are signed with.
    pub signing_key: SigningKeyConfig,
    /// Further verification keys (rotation; the public half of an RS256 / EdDSA signing key).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Backend services allowed to obtain `service` tokens.
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccount>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets (admin password, key material) stay out of logs.
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        let services: Vec<&str> = self.service_accounts.iter().map(|s| s.id.as_str()).collect();
        f.debug_struct("AuthSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl_secs", &self.access_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("password_min_chars", &self.password_min_chars)
            .field("max_failed_logins", &self.max_failed_logins)
            .field("failed_login_window_secs", &self.failed_login_window_secs)
            .field("login_delay_max_ms", &self.login_delay_max_ms)
            .field("max_registrations", &self.max_registrations)
            .field("registration_window_secs", &self.registration_window_secs)
            .field("admin_email", &self.admin_email)
            .field("signing_key", &self.signing_key)
            .field("kids", &kids)
            .field("service_accounts", &services)
            .finish_non_exhaustive()
    }
}

/// A backend service that may exchange its secret for a `service` token.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    /// The token's `sub`, and what logs name the service by.
    pub id: String,
    /// Lowercase hex SHA-256 of the service's secret (the secret itself is not configured here).
    pub secret_sha256: String,
}

/// Longest lifetime or window accepted, in seconds (10 years): keeps timestamp arithmetic far
/// from overflow and catches unit mistakes (milliseconds given as seconds).
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

impl AuthSettings {
    /// Checks ranges the types cannot express. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!("auth.bcrypt_cost must be 4..=31, not {}", self.bcrypt_cost));
        }
        if !(1..=72).contains(&self.password_min_chars) {
            return Err("auth.password_min_chars must be 1..=72".into());
        }
        for (key, value) in [
            ("access_ttl_secs", self.access_ttl_secs),
            ("refresh_ttl_secs", self.refresh_ttl_secs),
            ("failed_login_window_secs", self.failed_login_window_secs),
            ("registration_window_secs", self.registration_window_secs),
            ("sweep_interval_secs", self.sweep_interval_secs),
            ("service_token_ttl_secs", self.service_token_ttl_secs),
        ] {
            if !(1..=MAX_SECS).contains(&value) {
                return Err(format!("auth.{key} must be 1..={MAX_SECS} seconds, not {value}"));
            }
        }
        for account in &self.service_accounts {
            let hex = &account.secret_sha256;
            if account.id.is_empty() || hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "auth.service_accounts: {:?} needs an id and secret_sha256 as 64 hex digits",
                    account.id
                ));
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Loads built-in defaults, `config/auth-service.toml` and `MEDIABUS__*` (see `mediabus_config`).
    /// Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("auth-service", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment): the base tests start from, with
    /// `env = dev` (their signing key is the development one).
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }

    /// Refuses the development secrets (`defaults.toml`'s HS256 `dev` signing key, the
    /// `*-dev-only` NATS password) unless `env` is `dev` (DESIGN §12).
    ///
    /// Errors: the first such key, named with the variable to set.
    pub fn refuse_dev_secrets(&self) -> Result<(), DevSecretError> {
        let signing = self.auth.signing_key.secret.as_ref().map_or("", ExposeSecret::expose_secret);
        refuse_dev_secret(self.env, "auth.signing_key.secret", signing)?;
        let pem = self.auth.signing_key.private_key_pem.as_ref().map_or("", ExposeSecret::expose_secret);
        refuse_dev_secret(self.env, "auth.signing_key.private_key_pem", pem)?;
        refuse_dev_secret(self.env, "nats.password", self.nats.password.expose_secret())?;
        refuse_dev_secret(self.env, "auth.admin_password", self.auth.admin_password.expose_secret())?;
        for key in &self.auth.keys {
            let name = format!("auth.keys (kid {:?}) secret", key.kid);
            refuse_dev_secret(self.env, &name, key.secret.as_ref().map_or("", ExposeSecret::expose_secret))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let settings = Settings::defaults();
        assert_eq!(settings.service.queue_group, "auth");
        assert_eq!(settings.auth.bcrypt_cost, 12);
        assert_eq!(settings.auth.access_ttl_secs, 900);
        assert_eq!(settings.auth.max_failed_logins, 5);
        assert_eq!(settings.env, Env::Dev, "the built-in defaults are a development configuration");
        assert!(settings.auth.keys.is_empty());
        settings.auth.validate().unwrap();
        // Debug output never shows the signing secret.
        let shown = format!("{settings:?}");
        assert!(!shown.contains("dev-only-secret"), "{shown}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let mut auth = Settings::defaults().auth;
        auth.bcrypt_cost = 3;
        assert!(auth.validate().unwrap_err().contains("bcrypt_cost"));
        auth.bcrypt_cost = 10;
        auth.access_ttl_secs = 0;
        assert!(auth.validate().unwrap_err().contains("access_ttl_secs"));
    }

    #[test]
    fn production_refuses_the_development_signing_key_by_name() {
        let mut settings = Settings::defaults();
        settings.refuse_dev_secrets().unwrap();
        settings.env = Env::Production;
        let err = settings.refuse_dev_secrets().unwrap_err().to_string();
        assert!(err.contains("MEDIABUS__AUTH__SIGNING_KEY__SECRET"), "{err}");
        settings.auth.signing_key = SigningKeyConfig::hs256("prod", "a-production-secret-0123456789abcdef");
        settings.refuse_dev_secrets().unwrap();
        settings.nats.password = "auth-dev-only".to_owned().into();
        assert!(settings.refuse_dev_secrets().unwrap_err().to_string().contains("MEDIABUS__NATS__PASSWORD"));
    }
}
