//! media-service: the media subjects of DESIGN §5 on queue group `media`, as a library so the
//! binary and the tests run the same app ([`start`]).
//!
//! Subject → handler (one hop): `media.*` → [`handlers::media`], `upload_file` and `upload.*` →
//! [`handlers::upload`]. The table is [`router`].

pub mod access;
pub mod config;
pub mod content;
pub mod error;
pub mod events;
pub mod handlers;

use std::sync::Arc;
use std::time::Duration;

use mediabus_auth::Verifier;
use mediabus_contracts::subjects;
use mediabus_rpc::{Router, Running, Service};
use mediabus_storage::BlobStore;
use mediabus_store::MediaStore;

pub use config::Settings;

use crate::content::ContentRules;
use crate::events::Events;
use crate::handlers::{media, upload};

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
    pub settings: config::MediaSettings,
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
        .request(subjects::UPLOAD_FILE, upload::upload_file)
        .request(subjects::UPLOAD_CREATE, upload::create)
        .binary_request(subjects::UPLOAD_PART, upload::part)
        .request(subjects::UPLOAD_COMPLETE, upload::complete)
        .request(subjects::UPLOAD_ABORT, upload::abort)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("document store: {0}")]
    Store(#[from] mediabus_store::StoreError),
    #[error("file store: {0}")]
    Storage(#[from] mediabus_storage::StorageError),
    #[error("auth keys: {0}")]
    Auth(#[from] mediabus_auth::KeyError),
    #[error(transparent)]
    Serve(#[from] mediabus_rpc::ServeError),
}

/// Opens the stores, checks the keys, creates the event stream, starts the expired-upload sweeper
/// and serves the subjects on `nats`.
pub async fn start(settings: Settings, nats: async_nats::Client) -> Result<Running, StartError> {
    let store = mediabus_store::open(&settings.store).await?;
    let blobs = settings.storage.open().await?;
    let verifier = Verifier::new(&settings.auth.keys, &settings.auth.issuer, &settings.auth.audience)?;
    let events = Events::new(nats.clone());
    if let Err(e) = events.ensure_stream().await {
        // Events still go out on core NATS; only their capture is missing.
        tracing::warn!(error = %e, "JetStream stream {} unavailable", events::STREAM);
    }
    let state = AppState(Arc::new(Inner {
        store,
        blobs,
        verifier,
        rules: ContentRules::new(&settings.media),
        events,
        settings: settings.media.clone(),
        content_signer: mediabus_auth::ContentSigner::new(&settings.content.signing_secret)?,
        content_ttl: Duration::from_secs(settings.content.token_ttl_secs),
    }));
    tokio::spawn(upload::sweep_expired(state.clone(), Duration::from_secs(settings.media.sweep_interval_secs.max(1))));

    let config = settings.service.config("media", env!("CARGO_PKG_VERSION"));
    Ok(Service::new(config, router(), state).serve(nats).await?)
}
