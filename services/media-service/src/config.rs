//! Settings, layered: built-in defaults (`defaults.toml`) → `config/media-service.toml` (optional)
//! → environment `MEDIABUS__SECTION__KEY` (`__` separates levels).

use mediabus_auth::KeyConfig;
use mediabus_config::{DevSecretError, Env, ExposeSecret, SecretString, refuse_dev_secret};
pub use mediabus_rpc::ServiceSettings;
pub use mediabus_storage::StorageConfig;
use mediabus_store::StoreConfig;
use serde::Deserialize;

/// Everything the media service reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `MEDIABUS__ENV`: `production` (default) refuses development secrets, `dev` accepts them.
    #[serde(default)]
    pub env: Env,
    pub nats: NatsSettings,
    /// `[jetstream]`: how the streams this service creates are replicated.
    pub jetstream: JetStreamSettings,
    pub service: ServiceSettings,
    pub storage: StorageConfig,
    pub store: StoreConfig,
    pub auth: AuthSettings,
    pub media: MediaSettings,
    pub content: ContentSettings,
    /// `[telemetry]`: log format and OTLP endpoint (DESIGN §12).
    pub telemetry: mediabus_telemetry::TelemetrySettings,
    /// `[metrics]`: the Prometheus listener; off unless `listen` is set.
    pub metrics: mediabus_telemetry::MetricsSettings,
    /// `[quota]`: per-user limits (DESIGN §14); all off when the section is absent.
    #[serde(default)]
    pub quota: QuotaSettings,
}

/// `[quota]`: what one user may store, checked before any byte is stored (413 `QUOTA_EXCEEDED`).
/// Each limit is per owner, over media that are not `DELETED`; 0 means no limit. The check and the
/// write are not atomic: concurrent uploads of one user may overshoot by the uploads in flight.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QuotaSettings {
    /// Most bytes of originals per user.
    #[serde(default)]
    pub max_bytes: u64,
    /// Most media per user (uploads; `media.create` by URL is not counted against it).
    #[serde(default)]
    pub max_count: u64,
    /// Most chunked uploads (`upload.create`, tus) open at once per user.
    #[serde(default)]
    pub max_open_uploads: u64,
}

/// `[nats]`: URL, this service's user and password (see `defaults.toml`).
pub use mediabus_rpc::NatsSettings;

/// `[jetstream]`: settings of the JetStream streams this service creates.
#[derive(Debug, Clone, Deserialize)]
pub struct JetStreamSettings {
    /// Replicas of a stream created here (`num_replicas`): 1 on one nats-server, 3 on a 3-node
    /// cluster. An existing stream keeps its own (see [`mediabus_rpc::streams::ensure_stream`]).
    pub replicas: usize,
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

/// Content tokens (`media.content`): the secret shared with the HTTP bridge, and their lifetime.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentSettings {
    /// HS256 secret, at least 32 bytes; the bridge's `content.signing_secret` must be the same.
    /// Never printed.
    pub signing_secret: SecretString,
    /// Seconds a content URL stays valid.
    pub token_ttl_secs: u64,
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
    /// Seconds after which an `Idempotency-Key` claim whose create left no document counts as
    /// dead (its worker crashed) and a retry takes it over; longer than the longest create
    /// (`upload.complete`, 15 minutes).
    pub idempotency_claim_ttl_secs: u64,
    /// Days removed media keep their bytes before the sweeper purges them (0: at once).
    pub retention_days: u64,
    /// Age in seconds before unreferenced bytes, temp files and abandoned multipart uploads
    /// count as orphans (uploads in flight are younger).
    pub orphan_grace_secs: u64,
    /// Seconds between lifecycle sweeps (retention and orphans; one worker at a time).
    pub lifecycle_sweep_secs: u64,
}

impl Settings {
    /// Loads built-in defaults, `config/media-service.toml` and `MEDIABUS__*` (see `mediabus_config`).
    /// Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("media-service", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment): the base tests start from, with
    /// `env = dev` (their secrets are the development ones).
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }

    /// Refuses the development secrets (`defaults.toml`'s HS256 `dev` key and content secret, the
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
