//! auth-service: the auth subjects of DESIGN §5 on queue group `auth`, as a library so the binary
//! and the tests run the same app ([`start`]).
//!
//! Subject → handler: `auth.register`, `auth.login`, `auth.me` → [`handlers::account`];
//! `auth.refresh`, `auth.logout` → [`handlers::session`]; `auth.serviceToken` →
//! [`handlers::service`]. The table is [`router`].
//!
//! Accounts live in the document store ([`mediabus_store::UserStore`]: SQLite by default, MongoDB
//! for scale), passwords as bcrypt hashes; access tokens are JWTs from [`mediabus_auth::Signer`]
//! that every other service checks with [`mediabus_auth::Verifier`]; refresh tokens are opaque,
//! stored hashed, rotated on every use, with reuse detection per login (token family).

pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod error;
pub mod handlers;
pub mod passwords;
pub mod throttle;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use mediabus_contracts::Timestamp;
use mediabus_rpc::{Router, Running, Service};
use mediabus_store::UserStore;

pub use config::Settings;

use crate::handlers::{account, service, session};
use crate::passwords::Passwords;
use crate::tokens::Tokens;

/// Subject names (NestJS message patterns) served by the auth service (from the contracts).
pub use mediabus_contracts::auth::subjects;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    pub store: Arc<dyn UserStore>,
    pub passwords: Passwords,
    pub tokens: Tokens,
    pub settings: config::AuthSettings,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The subject table of the auth service.
pub fn router() -> Router<AppState> {
    Router::new()
        .request(subjects::REGISTER, account::register)
        .request(subjects::LOGIN, account::login)
        .request(subjects::ME, account::me)
        .request(subjects::REFRESH, session::refresh)
        .request(subjects::LOGOUT, session::logout)
        .request(subjects::SERVICE_TOKEN, service::token)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    /// A development secret outside `MEDIABUS__ENV=dev` (the message names the key).
    #[error(transparent)]
    DevSecret(#[from] mediabus_config::DevSecretError),
    #[error("document store: {0}")]
    Store(#[from] mediabus_store::StoreError),
    #[error("auth keys: {0}")]
    Keys(#[from] mediabus_auth::KeyError),
    /// Password hashing could not be set up, or the first admin could not be (the message names
    /// the setting).
    #[error("{0}")]
    Setup(#[from] error::AuthFailure),
    #[error(transparent)]
    Serve(#[from] mediabus_rpc::ServeError),
}

/// Checks the settings and keys (development secrets only with `env = dev`), opens the store,
/// sets up the first admin, starts the sweeper of expired tokens and serves the subjects on
/// `nats`.
pub async fn start(settings: Settings, nats: async_nats::Client) -> Result<Running, StartError> {
    settings.refuse_dev_secrets()?;
    settings.auth.validate().map_err(StartError::Config)?;
    let tokens = Tokens::new(&settings.auth)?;
    if settings.auth.bcrypt_cost < 10 {
        tracing::warn!(cost = settings.auth.bcrypt_cost, "auth.bcrypt_cost below 10 is for tests only");
    }
    let store = mediabus_store::open_users(&settings.store).await?;
    let passwords = Passwords::new(settings.auth.bcrypt_cost).await?;
    let state = AppState(Arc::new(Inner { store, passwords, tokens, settings: settings.auth.clone() }));
    bootstrap::ensure_admin(&state).await?;
    tokio::spawn(sweep_expired(state.clone(), Duration::from_secs(settings.auth.sweep_interval_secs)));

    let config = settings.service.config("auth", env!("CARGO_PKG_VERSION"));
    Ok(Service::new(config, router(), state).serve(nats).await?)
}

/// Deletes expired refresh tokens and login counters every `every`, for as long as the process
/// runs. Every worker runs it; the deletes are idempotent.
async fn sweep_expired(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state.store.purge_expired_auth(Timestamp::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(records = n, "expired auth records purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired auth records failed"),
        }
    }
}
