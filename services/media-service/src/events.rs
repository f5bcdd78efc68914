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

    /// Creates the stream with `replicas` replicas if it does not exist (every worker may race
    /// to; the server settles it); see [`mediabus_rpc::streams::ensure_stream`].
    ///
    /// Errors: JetStream disabled or refusing the configuration (e.g. more replicas than nodes).
    pub async fn ensure_stream(&self, replicas: usize) -> Result<(), String> {
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
        mediabus_rpc::streams::ensure_stream(&js, config, replicas).await.map(drop)
    }

    /// Emits `subject` with `media` as data. Of `headers` (a request's forwarded headers) only
    /// `traceparent` goes out: events are read by every backend and kept in the stream, so the
    /// caller's `Authorization` must never travel with them (DESIGN §10). A failure is logged,
    /// not returned: the change it reports is already stored.
    pub async fn emit(&self, subject: &str, media: &Media, headers: HeaderMap) {
        if let Err(e) = self.rpc.emit(subject, media, event_headers(&headers)).await {
            tracing::warn!(%subject, id = %media.id, error = %e, "could not publish event");
        }
    }
}

/// The headers an event carries: `traceparent` (W3C trace context) of `request`, if any, and
/// nothing else.
pub fn event_headers(request: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let traceparent = request.get("traceparent").or_else(|| {
        request
            .iter()
            .find(|(k, _)| AsRef::<str>::as_ref(k).eq_ignore_ascii_case("traceparent"))
            .and_then(|(_, v)| v.first())
    });
    if let Some(value) = traceparent {
        out.insert("traceparent", value.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_only_the_trace_context() {
        let mut request = HeaderMap::new();
        request.insert("Authorization", "Bearer secret");
        request.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        request.insert("Idempotency-Key", "k1");
        let out = event_headers(&request);
        assert_eq!(out.iter().count(), 1);
        assert_eq!(
            out.get("traceparent").map(|v| v.as_str()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        assert!(event_headers(&HeaderMap::new()).iter().next().is_none());
    }
}
