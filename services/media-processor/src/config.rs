//! Settings, layered: built-in defaults (`defaults.toml`) → `config/media-processor.toml`
//! (optional) → environment `MEDIABUS__SECTION__KEY` (`__` separates levels).

use std::time::Duration;

use mediabus_config::{DevSecretError, Env, ExposeSecret, refuse_dev_secret};
pub use mediabus_rpc::NatsSettings;
use mediabus_storage::StorageConfig;
use mediabus_store::StoreConfig;
use serde::Deserialize;

use crate::image::ImageLimits;
use crate::video::VideoLimits;

/// Everything the processor reads at start-up. See `defaults.toml` for each key's meaning.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// `MEDIABUS__ENV`: `production` (default) refuses development secrets, `dev` accepts them.
    #[serde(default)]
    pub env: Env,
    pub nats: NatsSettings,
    /// `[jetstream]`: how the streams this binary creates are replicated.
    pub jetstream: JetStreamSettings,
    pub storage: StorageConfig,
    pub store: StoreConfig,
    pub media: MediaSettings,
    pub limits: Limits,
    pub jobs: JobSettings,
    /// `[telemetry]`: log format and OTLP endpoint (DESIGN §12).
    pub telemetry: mediabus_telemetry::TelemetrySettings,
    /// `[metrics]`: the Prometheus listener; off unless `listen` is set.
    pub metrics: mediabus_telemetry::MetricsSettings,
}

/// `[jetstream]`: settings of the JetStream streams this binary creates.
#[derive(Debug, Clone, Deserialize)]
pub struct JetStreamSettings {
    /// Replicas of a stream created here (`num_replicas`): 1 on one nats-server, 3 on a 3-node
    /// cluster. An existing stream keeps its own (see [`mediabus_rpc::streams::ensure_stream`]).
    pub replicas: usize,
}

/// `[media]`: how variant URLs are written.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaSettings {
    /// Prefix of variant URLs (the media service's `media.public_base_url`); empty = relative.
    pub public_base_url: String,
}

/// `[limits]` (DESIGN §9): what a media may demand before it ends `FAILED`.
#[derive(Debug, Clone, Deserialize)]
pub struct Limits {
    /// Decoded pixels of an image (width × height from its header).
    pub max_pixels: u64,
    /// Longest video, seconds.
    pub video_max_duration_secs: u64,
    /// Largest video frame, pixels.
    pub video_max_pixels: u64,
    /// Longest job, seconds.
    pub job_timeout_secs: u64,
}

impl Limits {
    /// The image module's limits.
    pub fn image(&self) -> ImageLimits {
        ImageLimits { max_pixels: self.max_pixels }
    }

    /// The video module's limits.
    pub fn video(&self) -> VideoLimits {
        VideoLimits {
            max_duration_ms: self.video_max_duration_secs.saturating_mul(1000),
            max_pixels: self.video_max_pixels,
        }
    }

    /// The per-job time limit.
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_secs.max(1))
    }
}

/// `[jobs]`: the consumer and the worker loop (see `defaults.toml`).
#[derive(Debug, Clone, Deserialize)]
pub struct JobSettings {
    pub concurrency: usize,
    pub ack_wait_secs: u64,
    pub max_deliver: i64,
    pub max_ack_pending: i64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub pull_expires_ms: u64,
    pub shutdown_grace_secs: u64,
    pub dead_letter_days: u64,
}

impl JobSettings {
    /// The consumer's ack wait (at least 3 s, so heartbeats every third of it stay above 1 s).
    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs(self.ack_wait_secs.max(3))
    }

    /// How often a running job tells JetStream it is still being worked on.
    pub fn heartbeat(&self) -> Duration {
        self.ack_wait() / 3
    }

    /// Delay before delivery `delivered + 1` after delivery `delivered` (1-based) failed:
    /// `backoff_base_ms × 2^(delivered − 1)`, capped at `backoff_max_ms`.
    pub fn backoff(&self, delivered: i64) -> Duration {
        let exponent = delivered.clamp(1, 31) as u32 - 1;
        let ms = self.backoff_base_ms.saturating_mul(1u64 << exponent).min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// Deliveries allowed (at least 1).
    pub fn max_deliver(&self) -> i64 {
        self.max_deliver.max(1)
    }
}

impl Settings {
    /// Loads built-in defaults, `config/media-processor.toml` and `MEDIABUS__*` (see
    /// `mediabus_config`). Errors name the key that is missing or has the wrong type.
    pub fn load() -> Result<Self, mediabus_config::ConfigError> {
        mediabus_config::load("media-processor", include_str!("../defaults.toml"))
    }

    /// The built-in defaults alone (no file, no environment).
    pub fn defaults() -> Self {
        mediabus_config::defaults(include_str!("../defaults.toml"))
    }

    /// Refuses a development NATS password (`*-dev-only`) unless `env` is `dev` (DESIGN §12).
    pub fn refuse_dev_secrets(&self) -> Result<(), DevSecretError> {
        refuse_dev_secret(self.env, "nats.password", self.nats.password.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_backoff_grows_to_its_cap() {
        let settings = Settings::defaults();
        assert_eq!(settings.limits.max_pixels, 50_000_000);
        assert_eq!(settings.jobs.max_deliver(), 5);
        let jobs = &settings.jobs;
        assert_eq!(jobs.backoff(1), Duration::from_secs(2));
        assert_eq!(jobs.backoff(2), Duration::from_secs(4));
        assert_eq!(jobs.backoff(40), Duration::from_secs(120));
        assert_eq!(jobs.heartbeat(), Duration::from_secs(20));
    }
}
