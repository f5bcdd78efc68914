//! Settings, layered: built-in defaults (`defaults.toml`) → `config/media-service.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY` (`__` separates levels).

use std::path::PathBuf;

use mediabus_auth::KeyConfig;
pub use mediabus_rpc::ServiceSettings;
use mediabus_storage::S3Config;
use mediabus_store::StoreConfig;
use serde::Deserialize;

/// Everything the media service reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub nats: NatsSettings,
    pub service: ServiceSettings,
    pub storage: StorageSettings,
    pub store: StoreConfig,
    pub auth: AuthSettings,
    pub media: MediaSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NatsSettings {
    pub url: String,
}

/// Which file store holds the bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StorageSettings {
    /// Files under `root` (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket (path-style addressing; created if missing).
    S3 { endpoint: Option<String>, region: String, bucket: String, access_key: String, secret_key: String },
}

impl StorageSettings {
    /// The S3 client settings, for `backend = "s3"`.
    pub fn s3_config(&self) -> Option<S3Config> {
        match self {
            Self::S3 { endpoint, region, bucket, access_key, secret_key } => Some(S3Config {
                endpoint: endpoint.clone(),
                region: region.clone(),
                bucket: bucket.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                force_path_style: true,
            }),
            Self::Local { .. } => None,
        }
    }
}

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
