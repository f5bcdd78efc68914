//! mediabus-rpc: typed request-reply handlers on NATS queue groups, wire-compatible with NestJS
//! microservices (DESIGN §3).
//!
//! - [`Router`]: the subject table (`.request("media.findOne", find_one)`, `.event(..)`).
//! - [`Service`]: serves a router on a queue group with limits, the NATS service API
//!   (`$SRV.PING/INFO/STATS`) and graceful shutdown.
//! - [`RpcClient`]: `call` / `emit`, the Rust side of NestJS `ClientProxy`.
//! - [`RpcError`]: the `{status, code, message}` error object every failure becomes.
//! - [`envelope`]: the NestJS packet and reply encoding.

mod client;
pub mod envelope;
mod error;
mod router;
mod service;
mod service_api;

pub use client::RpcClient;
pub use error::{RpcError, codes};
pub use router::{Body, Ctx, Router};
pub use service::{Running, ServeError, Service, ServiceConfig, ServiceSettings, run_worker, shutdown_signal};

/// Headers a service passes on when it calls another: identity and W3C trace context (DESIGN §3).
pub const FORWARDED_HEADERS: [&str; 2] = ["Authorization", "traceparent"];

/// Connects to NATS for a long-running worker: named connection (shows in `nats server report
/// connections`), unlimited reconnects with back-off, and a subscription buffer of
/// `subscription_capacity` messages per subject (the bound on queued requests; excess is dropped
/// by NATS as a slow consumer rather than growing memory).
///
/// Errors: the first connection attempt fails (bad URL, server down, auth refused).
pub async fn connect(
    url: &str,
    name: &str,
    subscription_capacity: usize,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .subscription_capacity(subscription_capacity)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                async_nats::Event::Disconnected => tracing::warn!("NATS disconnected, reconnecting"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await
}
