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
    /// Loads the layers. Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, config::ConfigError> {
        let dir = std::env::var("MEDIABUS_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        Self::builder()
            .add_source(config::File::with_name(&format!("{dir}/http-bridge")).required(false))
            .add_source(
                config::Environment::with_prefix("MEDIABUS").prefix_separator("__").separator("__").try_parsing(true),
            )
            .build()?
            .try_deserialize()
    }

    /// The built-in defaults alone: the base tests start from.
    pub fn defaults() -> Self {
        Self::builder().build().and_then(|c| c.try_deserialize()).expect("defaults.toml is valid")
    }

    fn builder() -> config::ConfigBuilder<config::builder::DefaultState> {
        config::Config::builder()
            .add_source(config::File::from_str(include_str!("../defaults.toml"), config::FileFormat::Toml))
    }
}
