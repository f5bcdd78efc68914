//! Settings, layered: built-in defaults (`defaults.toml`) → `config/media-service.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY` (`__` separates levels).

use mediabus_auth::KeyConfig;
pub use mediabus_rpc::ServiceSettings;
pub use mediabus_storage::StorageConfig;
use mediabus_store::StoreConfig;
use serde::Deserialize;

/// Everything the media service reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub nats: NatsSettings,
    pub service: ServiceSettings,
    pub storage: StorageConfig,
    pub store: StoreConfig,
    pub auth: AuthSettings,
    pub media: MediaSettings,
    pub content: ContentSettings,
}

/// `[nats]`: URL, this service's user and password (see `defaults.toml`).
pub use mediabus_rpc::NatsSettings;

#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<KeyConfig>,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        let kids: Vec<&str> = self.keys.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("AuthSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &kids)
            .finish()
    }
}

/// Content tokens (`media.content`): the secret shared with the HTTP bridge, and their lifetime.
#[derive(Clone, Deserialize)]
pub struct ContentSettings {
    /// HS256 secret, at least 32 bytes; the bridge's `content.signing_secret` must be the same.
    pub signing_secret: String,
    /// Seconds a content URL stays valid.
    pub token_ttl_secs: u64,
}

impl std::fmt::Debug for ContentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("ContentSettings").field("token_ttl_secs", &self.token_ttl_secs).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct MediaSettings {
    pub public_base_url: String,
    pub allowed_types: Vec<String>,
    pub max_image_bytes: u64,
    pub max_video_bytes: u64,
    pub max_audio_bytes: u64,
    pub max_document_bytes: u64,
    pub max_other_bytes: u64,
    pub metadata_max_bytes: usize,
    pub part_size_bytes: u64,
    pub upload_ttl_secs: u64,
    pub sweep_interval_secs: u64,
}

impl Settings {
    /// Loads built-in defaults, `config/media-service.toml` and `MEDIABUS__*` (see `mediabus_config`).
    /// Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("media-service", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment): the base tests start from.
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }
}
