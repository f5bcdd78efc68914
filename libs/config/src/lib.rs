//! Layered settings shared by every mediabus binary, first to last (later wins):
//! 1. the binary's built-in defaults (its `defaults.toml`, compiled in);
//! 2. `config/<name>.toml`, optional (directory from `MEDIABUS_CONFIG_DIR`, default `config`);
//! 3. environment variables `MEDIABUS__<SECTION>__<KEY>` (`__` separates levels; values are
//!    parsed as numbers and booleans where they look like them).

use serde::de::DeserializeOwned;

pub use config::ConfigError;

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

/// The built-in defaults alone (no file, no environment): what tests start from.
///
/// Panics if `defaults` does not describe a valid `T` (a bug in the binary, caught by its tests).
pub fn defaults<T: DeserializeOwned>(defaults: &str) -> T {
    builder(defaults).build().and_then(|c| c.try_deserialize()).expect("built-in defaults are valid")
}

fn builder(defaults: &str) -> config::ConfigBuilder<config::builder::DefaultState> {
    config::Config::builder().add_source(config::File::from_str(defaults, config::FileFormat::Toml))
}
