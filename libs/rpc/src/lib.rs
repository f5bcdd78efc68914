//! mediabus-rpc: typed request-reply handlers on NATS queue groups, wire-compatible with NestJS
//! microservices (DESIGN §3).
//!
//! - [`Router`]: the subject table (`.request("media.findOne", find_one)`, `.event(..)`).
//! - [`Service`]: serves a router on a queue group with limits, the NATS service API
//!   (`$SRV.PING/INFO/STATS`) and graceful shutdown.
//! - [`RpcClient`]: `call` / `emit`, the Rust side of NestJS `ClientProxy`.
//! - [`NatsSettings`]: the `[nats]` settings (URL, user, password) and the connection they make.
//! - [`RpcError`]: the `{status, code, message}` error object every failure becomes.
//! - [`envelope`]: the NestJS packet and reply encoding.
//! - [`streams`]: creating the JetStream streams services share (events, jobs).

mod client;
mod connection;
pub mod envelope;
mod error;
mod router;
mod service;
mod service_api;
pub mod streams;

pub use client::RpcClient;
pub use connection::NatsSettings;
pub use error::{RpcError, codes};
pub use router::{Body, Ctx, Router};
pub use service::{
    DEADLINE_HEADER, Running, ServeError, Service, ServiceConfig, ServiceSettings, run_worker, shutdown_signal,
};

/// Headers a service passes on when it calls another: identity and W3C trace context (DESIGN §3).
pub const FORWARDED_HEADERS: [&str; 2] = ["Authorization", "traceparent"];

/// Connects to `url` without credentials; see [`NatsSettings::connect`] (with a user, that is
/// what every service uses).
///
/// Errors: the first connection attempt fails (bad URL, server down, credentials required).
pub async fn connect(
    url: &str,
    name: &str,
    subscription_capacity: usize,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    NatsSettings::new(url).connect(name, subscription_capacity).await
}
