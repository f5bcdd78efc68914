//! Settings, layered: built-in defaults (`defaults.toml`) → `config/http-bridge.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY`.

use serde::Deserialize;

/// Everything the bridge reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub nats: NatsSettings,
    pub http: HttpSettings,
    pub upload: UploadSettings,
    pub content: ContentSettings,
    /// The file store content is served from: the media service's `[storage]`, same keys.
    pub storage: mediabus_storage::StorageConfig,
    pub docs: DocsSettings,
}

/// `GET /docs` (Swagger UI).
#[derive(Debug, Clone, Deserialize)]
pub struct DocsSettings {
    /// Directory of the npm package `swagger-ui-dist` (relative: from the working directory).
    pub assets_dir: std::path::PathBuf,
}

/// `[nats]`: URL, this service's user and password (see `defaults.toml`).
pub use mediabus_rpc::NatsSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub listen: String,
    /// Milliseconds.
    pub request_timeout_ms: u64,
    /// Bytes.
    pub json_body_limit_bytes: usize,
    pub ready_services: Vec<String>,
    /// Milliseconds to receive a request's headers, and to wait for the next request on an idle
    /// keep-alive connection.
    pub header_timeout_ms: u64,
    /// Milliseconds a request body may pause before the request fails with 408.
    pub body_idle_timeout_ms: u64,
}

/// `POST /api/media/upload`.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadSettings {
    /// Largest multipart body, bytes.
    pub max_body_bytes: u64,
    /// Files up to this many bytes go as one `upload_file` message; larger ones as `upload.*`
    /// parts. Base64 and JSON add a third, which must stay under the NATS max_payload.
    pub single_message_max_bytes: usize,
    /// `upload.part` requests in flight per upload; memory per upload is about this many parts.
    pub parts_in_flight: usize,
}

/// Content tokens issued by the media service (`media.content`).
#[derive(Clone, Deserialize)]
pub struct ContentSettings {
    /// HS256 secret shared with the media service (`content.signing_secret` there).
    pub signing_secret: String,
}

impl std::fmt::Debug for ContentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.write_str("ContentSettings { .. }")
    }
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
