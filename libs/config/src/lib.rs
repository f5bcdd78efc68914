//! Layered settings shared by every mediabus binary, first to last (later wins):
//! 1. the binary's built-in defaults (its `defaults.toml`, compiled in);
//! 2. `config/<name>.toml`, optional (directory from `MEDIABUS_CONFIG_DIR`, default `config`);
//! 3. environment variables `MEDIABUS__<SECTION>__<KEY>` (`__` separates levels; values are
//!    parsed as numbers and booleans where they look like them).
//!
//! Secrets: settings hold them as [`SecretString`] (never printed: `Debug` shows `[REDACTED]`),
//! and each binary refuses the development secrets its `defaults.toml` ships unless
//! `MEDIABUS__ENV=dev` ([`Env`], [`refuse_dev_secret`]; DESIGN §12).

use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use config::ConfigError;
pub use secrecy::{ExposeSecret, SecretString};

/// What a binary runs as: the top-level key `env` (`MEDIABUS__ENV`), `production` when unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    /// The default: development secrets are refused.
    #[default]
    Production,
    /// `MEDIABUS__ENV=dev` (`scripts/dev`, the tests): development secrets are accepted.
    Dev,
}

/// The marker every development secret, key and password the project ships contains (the
/// `defaults.toml` secrets, the `*-dev-only` NATS passwords of `nats/dev.conf`).
pub const DEV_SECRET_MARKER: &str = "dev-only";

/// A development secret found where production needs a real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSecretError {
    /// The settings key, e.g. `content.signing_secret`.
    pub key: String,
}

impl std::fmt::Display for DevSecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is a development secret (it contains \"{DEV_SECRET_MARKER}\"): ", self.key)?;
        if self.key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.') {
            let var = format!("MEDIABUS__{}", self.key.replace('.', "__").to_ascii_uppercase());
            write!(f, "set {var} (or the key in the config file) to a secret of your own")?;
        } else {
            f.write_str("replace it in the config file with a key of your own")?;
        }
        f.write_str(", or set MEDIABUS__ENV=dev to run with development secrets")
    }
}

impl std::error::Error for DevSecretError {}

/// Refuses `secret`, the value of settings key `key`, when it is a development one (it contains
/// [`DEV_SECRET_MARKER`]) and `env` is not [`Env::Dev`]. Empty secrets are not judged here (each
/// binary decides whether it needs the key at all).
///
/// Errors: [`DevSecretError`], whose message names the key and the environment variable to set.
pub fn refuse_dev_secret(env: Env, key: &str, secret: &str) -> Result<(), DevSecretError> {
    if env != Env::Dev && secret.contains(DEV_SECRET_MARKER) {
        return Err(DevSecretError { key: key.to_owned() });
    }
    Ok(())
}

/// Loads the three layers for binary `name` over `defaults` (TOML text) into `T`.
///
/// Errors: a malformed file, or a key missing or of the wrong type (the error names it).
pub fn load<T: DeserializeOwned>(name: &str, defaults: &str) -> Result<T, ConfigError> {
    let dir = std::env::var("MEDIABUS_CONFIG_DIR").unwrap_or_else(|_| "config".into());
    builder(defaults)
        .add_source(config::File::with_name(&format!("{dir}/{name}")).required(false))
        .add_source(
            config::Environment::with_prefix("MEDIABUS").prefix_separator("__").separator("__").try_parsing(true),
        )
        .build()?
        .try_deserialize()
}

/// The built-in defaults alone (no file, no environment): what tests start from. The top-level
/// `env` is `dev`: the built-in secrets are development ones, and tests run in development mode
/// (a test of the production refusal sets `env` back to [`Env::Production`]).
///
/// Panics if `defaults` does not describe a valid `T` (a bug in the binary, caught by its tests).
pub fn defaults<T: DeserializeOwned>(defaults: &str) -> T {
    builder(defaults)
        .set_override("env", "dev")
        .and_then(|b| b.build())
        .and_then(|c| c.try_deserialize())
        .expect("built-in defaults are valid")
}

fn builder(defaults: &str) -> config::ConfigBuilder<config::builder::DefaultState> {
    config::Config::builder().add_source(config::File::from_str(defaults, config::FileFormat::Toml))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Settings {
        #[serde(default)]
        env: Env,
        secret: SecretString,
    }

    const DEFAULTS: &str = "secret = \"dev-only-secret-0123\"\n";

    #[test]
    fn dev_secrets_are_refused_outside_dev_with_the_key_named() {
        let err = refuse_dev_secret(Env::Production, "content.signing_secret", "dev-only-x").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("content.signing_secret"), "{message}");
        assert!(message.contains("MEDIABUS__CONTENT__SIGNING_SECRET"), "{message}");
        assert!(message.contains("MEDIABUS__ENV=dev"), "{message}");
        assert!(refuse_dev_secret(Env::Dev, "content.signing_secret", "dev-only-x").is_ok());
        assert!(refuse_dev_secret(Env::Production, "content.signing_secret", "a-real-secret").is_ok());
    }

    #[test]
    fn env_defaults_to_production_and_defaults_are_dev_and_secrets_are_redacted() {
        let parsed: Settings = builder(DEFAULTS).build().unwrap().try_deserialize().unwrap();
        assert_eq!(parsed.env, Env::Production);
        let tests: Settings = defaults(DEFAULTS);
        assert_eq!(tests.env, Env::Dev);
        assert_eq!(tests.secret.expose_secret(), "dev-only-secret-0123");
        let shown = format!("{tests:?}");
        assert!(shown.contains("REDACTED") && !shown.contains("dev-only-secret"), "{shown}");
    }
}
