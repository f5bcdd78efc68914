//! JetStream streams that several services create (whichever starts first): the media events,
//! the job queue and its dead letters.

use async_nats::jetstream::{self, stream};

/// Gets the stream `config.name`, or creates it from `config` with `replicas` replicas
/// (`num_replicas`, at least 1).
///
/// A stream that exists keeps its configuration: one with fewer replicas than asked for is
/// logged as a warning, not updated, because the services' NATS users may create streams but not
/// update them (nats/permissions.conf); an operator raises them (docker-compose.yml's one-shot
/// `nats-streams`, or `nats stream edit --replicas`).
///
/// Errors: JetStream disabled or refusing the configuration (more replicas than nodes, say).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    replicas: usize,
) -> Result<stream::Stream, String> {
    let config = stream::Config { num_replicas: replicas.max(1), ..config };
    let (name, wanted) = (config.name.clone(), config.num_replicas);
    let stream = js.get_or_create_stream(config).await.map_err(|e| e.to_string())?;
    let has = stream.cached_info().config.num_replicas;
    if has < wanted {
        tracing::warn!(stream = %name, replicas = has, wanted, "stream has fewer replicas than configured");
    }
    Ok(stream)
}
