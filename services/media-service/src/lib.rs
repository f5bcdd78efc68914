//! media-service: the media subjects of DESIGN §5 on queue group `media`, as a library so the
//! binary and the tests run the same app ([`start`]).
//!
//! Subject → handler (one hop): `media.*` → [`handlers::media`], `upload_file` and `upload.*` →
//! [`handlers::upload`]; the lifecycle (`user.deleted`, `entity.deleted`, `media.purge`,
//! `media.stats`, `media.analytics`) → [`handlers::lifecycle`], with the retention and orphan
//! [`sweeper`]. The table is [`router`].

pub mod access;
pub mod config;
pub mod content;
pub mod error;
pub mod events;
pub mod handlers;
pub mod jobs;
pub mod sweeper;

use std::sync::Arc;
use std::time::Duration;

use mediabus_auth::Verifier;
use mediabus_config::ExposeSecret;
use mediabus_contracts::subjects;
use mediabus_rpc::{Router, Running, Service};
use mediabus_storage::BlobStore;
use mediabus_store::MediaStore;

pub use config::Settings;

use crate::content::ContentRules;
use crate::events::Events;
use crate::handlers::{lifecycle, media, upload, usage};

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    pub store: Arc<dyn MediaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub verifier: Verifier,
    pub rules: ContentRules,
    pub events: Events,
    /// Processing jobs on JetStream (`MEDIA_JOBS`) and their conditional store writes.
    pub jobs: jobs::Jobs,
    pub settings: config::MediaSettings,
    /// Per-user quotas (`[quota]`, `handlers::usage`).
    pub quota: config::QuotaSettings,
    /// Signs `media.content` tokens.
    pub content_signer: mediabus_auth::ContentSigner,
    pub content_ttl: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The subject table of the media service.
pub fn router() -> Router<AppState> {
    Router::new()
        .request(subjects::MEDIA_CREATE, media::create)
        .request(subjects::MEDIA_FIND_ALL, media::find_all)
        .request(subjects::MEDIA_FIND_BY_USER, media::find_by_user)
        .request(subjects::MEDIA_FIND_BY_ENTITY, media::find_by_entity)
        .request(subjects::MEDIA_FIND_ONE, media::find_one)
        .request(subjects::MEDIA_UPDATE, media::update)
        .request(subjects::MEDIA_REMOVE, media::remove)
        .request(subjects::MEDIA_CONTENT, media::content)
        .request(subjects::MEDIA_REPROCESS, jobs::reprocess)
        .request(subjects::UPLOAD_FILE, upload::upload_file)
        .request(subjects::UPLOAD_CREATE, upload::create)
        // Raw parts carry `Upload-Id`; a chunk's bytes can look like JSON.
        .binary_request_by_header(subjects::UPLOAD_PART, mediabus_contracts::requests::headers::UPLOAD_ID, upload::part)
        // File bytes (megabytes of base64 or raw) are decoded only for a caller with a valid token.
        .guard(subjects::UPLOAD_FILE, access::require_token)
        .guard(subjects::UPLOAD_PART, access::require_token)
        .request(subjects::UPLOAD_COMPLETE, upload::complete)
        // Assembling (and on S3 hashing) a multi-GiB file outlasts the 30 s request timeout.
        .timeout(subjects::UPLOAD_COMPLETE, upload::COMPLETE_TIMEOUT)
        .request(subjects::UPLOAD_ABORT, upload::abort)
        .event(subjects::USER_DELETED, lifecycle::user_deleted)
        .event(subjects::ENTITY_DELETED, lifecycle::entity_deleted)
        // A cascade over a user's or entity's every media outlasts the 30 s request timeout, and
        // core NATS never redelivers an event cut off.
        .timeout(subjects::USER_DELETED, lifecycle::CASCADE_TIMEOUT)
        .timeout(subjects::ENTITY_DELETED, lifecycle::CASCADE_TIMEOUT)
        .request(subjects::MEDIA_PURGE, lifecycle::purge)
        .request(subjects::MEDIA_STATS, lifecycle::stats)
        .request(subjects::MEDIA_ANALYTICS, lifecycle::analytics)
        .request(subjects::MEDIA_USAGE, usage::usage)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A development secret outside `MEDIABUS__ENV=dev` (the message names the key).
    #[error(transparent)]
    DevSecret(#[from] mediabus_config::DevSecretError),
    #[error("document store: {0}")]
    Store(#[from] mediabus_store::StoreError),
    #[error("file store: {0}")]
    Storage(#[from] mediabus_storage::StorageError),
    #[error("auth keys: {0}")]
    Auth(#[from] mediabus_auth::KeyError),
    #[error(transparent)]
    Serve(#[from] mediabus_rpc::ServeError),
}

/// Refuses development secrets outside `env = dev`, opens the stores, checks the keys, creates
/// the event stream, starts the expired-upload sweeper and serves the subjects on `nats`.
pub async fn start(settings: Settings, nats: async_nats::Client) -> Result<Running, StartError> {
    settings.refuse_dev_secrets()?;
    let store = mediabus_store::open(&settings.store).await?;
    let blobs = settings.storage.open().await?;
    // `GET /readyz` on the metrics listener (DESIGN §12): the document store and the file store.
    let ready_store = store.clone();
    mediabus_telemetry::add_readiness_check("store", move || {
        let store = ready_store.clone();
        async move { store.health_check().await.map_err(|e| e.to_string()) }
    });
    let ready_blobs = blobs.clone();
    mediabus_telemetry::add_readiness_check("files", move || {
        let blobs = ready_blobs.clone();
        async move { blobs.health_check().await.map_err(|e| e.to_string()) }
    });
    let verifier = Verifier::new(&settings.auth.keys, &settings.auth.issuer, &settings.auth.audience)?;
    let events = Events::new(nats.clone());
    if let Err(e) = events.ensure_stream(settings.jetstream.replicas).await {
        // Events still go out on core NATS; only their capture is missing.
        tracing::warn!(error = %e, "JetStream stream {} unavailable", events::STREAM);
    }
    let jobs = jobs::Jobs::new(nats.clone(), mediabus_store::open_processing(&settings.store).await?);
    if let Err(e) = jobs.ensure_stream(settings.jetstream.replicas).await {
        // Uploads still work; each job publish then fails and its media ends FAILED (see `jobs`).
        tracing::warn!(error = %e, "JetStream stream {} unavailable", mediabus_contracts::jobs::STREAM);
    }
    let state = AppState(Arc::new(Inner {
        store,
        blobs,
        verifier,
        rules: ContentRules::new(&settings.media),
        events,
        jobs,
        settings: settings.media.clone(),
        quota: settings.quota.clone(),
        content_signer: mediabus_auth::ContentSigner::new(settings.content.signing_secret.expose_secret())?,
        content_ttl: Duration::from_secs(settings.content.token_ttl_secs),
    }));
    tokio::spawn(upload::sweep_expired(state.clone(), Duration::from_secs(settings.media.sweep_interval_secs.max(1))));
    tokio::spawn(sweeper::run(state.clone(), Duration::from_secs(settings.media.lifecycle_sweep_secs.max(1))));

    let config = settings.service.config("media", env!("CARGO_PKG_VERSION"));
    Ok(Service::new(config, router(), state).serve(nats).await?)
}
