//! Settings, layered: built-in defaults (`defaults.toml`) → `config/http-bridge.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY`.

use serde::Deserialize;

/// Everything the bridge reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub nats: NatsSettings,
    pub http: HttpSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NatsSettings {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: String,
    /// Milliseconds.
    pub request_timeout_ms: u64,
    /// Bytes.
    pub json_body_limit_bytes: usize,
    pub ready_services: Vec<String>,
}

impl Settings {
    /// Loads built-in defaults, `config/http-bridge.toml` and `MEDIABUS__*` (see `mediabus_config`).
    /// Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("http-bridge", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment): the base tests start from.
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }
}
