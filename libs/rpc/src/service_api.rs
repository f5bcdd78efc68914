//! The NATS service API (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`; "micro" protocol v1), so that
//! `nats micro ls/info/stats` list a mediabus service with per-endpoint request and error counts.
//!
//! The response types are async-nats' own (`async_nats::service::{PingResponse, Info, Stats}`), so
//! the wire format is the library's. The responder is ours because the module's `Endpoint` owns
//! the request subscription and can only drop it outright: messages still in flight from the
//! server are then lost (see `service::intake` for the drain that avoids this), and it counts an
//! error only when it sends an empty-body error reply, which NestJS clients cannot read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::service::{self, Info, PingResponse, Stats, endpoint};
use async_nats::{Client, Subject};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::RpcError;
use crate::service::ServiceConfig;

/// Counters of one endpoint, updated by every handled message.
#[derive(Default)]
pub(crate) struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_nanos: AtomicU64,
    last_error: Mutex<Option<service::error::Error>>,
}

impl EndpointStats {
    pub(crate) fn record(&self, elapsed: Duration, error: Option<&RpcError>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(err) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let last = service::error::Error { status: err.message.clone(), code: usize::from(err.status) };
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
        }
    }
}

/// What `$SRV` requests are answered from.
pub(crate) struct Registry {
    pub(crate) id: String,
    pub(crate) config: ServiceConfig,
    pub(crate) started: async_nats::datetime::DateTime,
    /// `(subject, counters)` per endpoint, in subject order.
    pub(crate) endpoints: Vec<(String, std::sync::Arc<EndpointStats>)>,
}

impl Registry {
    fn endpoint_name(subject: &str) -> String {
        subject.replace('.', "-")
    }

    fn ping(&self) -> PingResponse {
        PingResponse {
            kind: "io.nats.micro.v1.ping_response".into(),
            name: self.config.name.clone(),
            id: self.id.clone(),
            version: self.config.version.clone(),
            metadata: HashMap::new(),
        }
    }

    fn info(&self) -> Info {
        let endpoints = self
            .endpoints
            .iter()
            .map(|(subject, _)| endpoint::Info {
                name: Self::endpoint_name(subject),
                subject: subject.clone(),
                queue_group: self.config.queue_group.clone(),
                metadata: HashMap::new(),
            })
            .collect();
        Info {
            kind: "io.nats.micro.v1.info_response".into(),
            name: self.config.name.clone(),
            id: self.id.clone(),
            description: self.config.description.clone(),
            version: self.config.version.clone(),
            metadata: HashMap::new(),
            endpoints,
        }
    }

    fn stats(&self) -> Stats {
        let endpoints = self
            .endpoints
            .iter()
            .map(|(subject, stats)| {
                let requests = stats.requests.load(Ordering::Relaxed) as usize;
                let processing_time = Duration::from_nanos(stats.processing_nanos.load(Ordering::Relaxed));
                endpoint::Stats {
                    name: Self::endpoint_name(subject),
                    subject: subject.clone(),
                    requests,
                    errors: stats.errors.load(Ordering::Relaxed) as usize,
                    processing_time,
                    average_processing_time: processing_time / u32::try_from(requests.max(1)).unwrap_or(u32::MAX),
                    last_error: stats.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                    data: None,
                    queue_group: self.config.queue_group.clone(),
                }
            })
            .collect();
        Stats {
            kind: "io.nats.micro.v1.stats_response".into(),
            name: self.config.name.clone(),
            id: self.id.clone(),
            version: self.config.version.clone(),
            started: self.started,
            endpoints,
        }
    }
}

/// Subscribes `$SRV.<VERB>`, `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.<id>` for each verb and
/// answers until `stop` is cancelled. These are plain (not queue) subscriptions: every instance
/// answers, which is how `nats micro` discovers all of them.
pub(crate) async fn serve(
    client: Client,
    registry: std::sync::Arc<Registry>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, async_nats::SubscribeError> {
    let mut subscriptions = Vec::new();
    for verb in ["PING", "INFO", "STATS"] {
        let name = &registry.config.name;
        for subject in
            [format!("$SRV.{verb}"), format!("$SRV.{verb}.{name}"), format!("$SRV.{verb}.{name}.{}", registry.id)]
        {
            subscriptions.push(client.subscribe(subject).await?);
        }
    }
    let mut requests = futures_util::stream::select_all(subscriptions);
    Ok(tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                message = requests.next() => match message { Some(m) => m, None => break },
            };
            let Some(reply) = message.reply else { continue };
            if !crate::service::is_inbox(&reply) {
                tracing::warn!(%reply, "service API request with a reply subject that is not an inbox: dropped");
                continue;
            }
            if let Err(e) = respond(&client, &registry, &message.subject, reply).await {
                tracing::warn!(error = %e, "could not answer the NATS service API");
            }
        }
    }))
}

async fn respond(
    client: &Client,
    registry: &Registry,
    subject: &Subject,
    reply: Subject,
) -> Result<(), async_nats::Error> {
    let body = match subject.split('.').nth(1) {
        Some("PING") => serde_json::to_vec(&registry.ping())?,
        Some("INFO") => serde_json::to_vec(&registry.info())?,
        _ => serde_json::to_vec(&registry.stats())?,
    };
    client.publish(reply, body.into()).await?;
    Ok(())
}
