//! Settings, layered: built-in defaults (`defaults.toml`) → `config/http-bridge.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY`.

use mediabus_config::{DevSecretError, Env, ExposeSecret, SecretString, refuse_dev_secret};
use serde::Deserialize;

/// Everything the bridge reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `MEDIABUS__ENV`: `production` (default) refuses development secrets, `dev` accepts them.
    #[serde(default)]
    pub env: Env,
    pub nats: NatsSettings,
    pub http: HttpSettings,
    pub upload: UploadSettings,
    pub content: ContentSettings,
    /// The file store content is served from: the media service's `[storage]`, same keys.
    pub storage: mediabus_storage::StorageConfig,
    pub docs: DocsSettings,
    pub web: WebSettings,
    /// Access-token verification for the routes the bridge authenticates itself (`/api/events`).
    pub auth: AuthSettings,
    /// `GET /api/events` (Server-Sent Events).
    pub events: EventsSettings,
    /// `/api/uploads` (tus resumable uploads).
    pub tus: TusSettings,
    /// `[telemetry]`: log format and OTLP endpoint (DESIGN §12).
    pub telemetry: mediabus_telemetry::TelemetrySettings,
    /// `[metrics]`: the Prometheus listener; off unless `listen` is set.
    pub metrics: mediabus_telemetry::MetricsSettings,
}

/// `[tus]`: the resumable-upload endpoint `/api/uploads`.
#[derive(Debug, Clone, Deserialize)]
pub struct TusSettings {
    /// Seconds from creation until an unfinished upload expires (`Upload-Expires`). Keep it under
    /// the media service's `upload.upload_ttl_secs`, which sweeps the parts.
    pub expiry_secs: u64,
    /// Seconds between sweeps of expired tus state by this bridge; 0: no sweep.
    pub sweep_interval_secs: u64,
}

/// `[auth]`: the keys, issuer and audience access tokens are verified against; the same as the
/// media service's `[auth]`.
#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<mediabus_auth::KeyConfig>,
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

/// `[events]`: limits of `GET /api/events`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsSettings {
    /// SSE connections open at once on this bridge; one more gets 503.
    pub max_connections: usize,
    /// Seconds between keep-alive comments.
    pub keep_alive_secs: u64,
    /// Longest a stream stays open, milliseconds; 0: until the access token expires. Clients
    /// reconnect with `Last-Event-ID` and lose nothing.
    pub max_stream_ms: u64,
}

/// `GET /docs` (Swagger UI).
#[derive(Debug, Clone, Deserialize)]
pub struct DocsSettings {
    /// Directory of the npm package `swagger-ui-dist` (relative: from the working directory).
    pub assets_dir: std::path::PathBuf,
}

/// `GET /`: the media library (`crate::web`).
#[derive(Debug, Clone, Deserialize)]
pub struct WebSettings {
    /// Directory with `index.html`, `app/` and the npm packages in `node_modules/` (relative: from
    /// the working directory).
    pub dir: std::path::PathBuf,
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
    /// Milliseconds a request body may pause before the request fails with 408 (every route:
    /// tower-http's `RequestBodyTimeoutLayer`; tus keeps an equivalent timer of its own).
    pub body_idle_timeout_ms: u64,
    /// Connections open at once; one more is closed at once (`crate::server`).
    pub max_connections: usize,
    /// Connections open at once from one IP address; one more is closed at once. 0: no such limit
    /// (behind a reverse proxy every client has the proxy's address).
    pub max_connections_per_ip: usize,
    /// JSON-route subject calls in flight at once; one more gets 503 + `Retry-After` at once.
    pub max_in_flight: usize,
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
#[derive(Debug, Clone, Deserialize)]
pub struct ContentSettings {
    /// HS256 secret shared with the media service (`content.signing_secret` there); never
    /// printed.
    pub signing_secret: SecretString,
    /// Longest life of a content token, seconds: at least the media service's
    /// `content.token_ttl_secs`. Removals and changes to private are remembered this long
    /// (`crate::revocation`).
    pub token_ttl_secs: u64,
    /// Most revocations remembered at once; beyond, every older grant is refused.
    pub revocation_capacity: usize,
}

impl Settings {
    /// Loads built-in defaults, `config/http-bridge.toml` and `MEDIABUS__*` (see `mediabus_config`).
    /// Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("http-bridge", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment): the base tests start from, with
    /// `env = dev` (their secrets are the development ones).
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }

    /// Refuses the development secrets (`defaults.toml`'s content secret and HS256 `dev` key, the
    /// `*-dev-only` NATS password) unless `env` is `dev` (DESIGN §12).
    ///
    /// Errors: the first such key, named with the variable to set.
    pub fn refuse_dev_secrets(&self) -> Result<(), DevSecretError> {
        refuse_dev_secret(self.env, "content.signing_secret", self.content.signing_secret.expose_secret())?;
        refuse_dev_secret(self.env, "nats.password", self.nats.password.expose_secret())?;
        for key in &self.auth.keys {
            let name = format!("auth.keys (kid {:?}) secret", key.kid);
            refuse_dev_secret(self.env, &name, key.secret.as_ref().map_or("", ExposeSecret::expose_secret))?;
        }
        Ok(())
    }
}
