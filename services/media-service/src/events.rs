//! Domain events: NestJS event packets (`{"pattern":"media.created","data":Media}`, no id) on core
//! NATS, captured by the JetStream stream [`STREAM`] so consumers can replay them.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use mediabus_contracts::{Media, subjects};
use mediabus_rpc::RpcClient;

/// JetStream stream holding every media event for [`MAX_AGE`].
pub const STREAM: &str = "MEDIA_EVENTS";
/// How long events are kept: 7 days.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Publishes media events.
#[derive(Clone)]
pub struct Events {
    rpc: RpcClient,
}

impl Events {
    pub fn new(nats: async_nats::Client) -> Self {
        Self { rpc: RpcClient::new(nats) }
    }

    /// Creates the stream if it does not exist (every worker may race to; the server settles it).
    ///
    /// Errors: JetStream disabled or refusing the configuration.
    pub async fn ensure_stream(&self) -> Result<(), String> {
        let js = jetstream::new(self.rpc.nats().clone());
        let config = stream::Config {
            name: STREAM.into(),
            subjects: [
                subjects::MEDIA_CREATED,
                subjects::MEDIA_UPDATED,
                subjects::MEDIA_REMOVED,
                subjects::MEDIA_PROCESSED,
            ]
            .map(String::from)
            .to_vec(),
            max_age: MAX_AGE,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Emits `subject` with `media` as data. A failure is logged, not returned: the change it
    /// reports is already stored.
    pub async fn emit(&self, subject: &str, media: &Media, headers: HeaderMap) {
        if let Err(e) = self.rpc.emit(subject, media, headers).await {
            tracing::warn!(%subject, id = %media.id, error = %e, "could not publish event");
        }
    }
}
