//! `GET /api/events` (DESIGN §10): the media events a caller may see, as Server-Sent Events
//! (WHATWG HTML §9.2, `text/event-stream`).
//!
//! Each event of the JetStream stream [`STREAM`] (NestJS event packets
//! `{"pattern":"media.created","data":Media}` kept by the media service) becomes
//! `event: <subject>`, `id: <stream sequence>`, `data: <Media, one line of JSON>`. Every connection
//! reads through its own ordered consumer (ephemeral, no acks, in memory), starting after
//! `Last-Event-ID` (header, or `?lastEventId=` for a first connection) or, without one, at the next
//! new event; the client's `Last-Event-ID` on reconnection resumes without loss as long as the
//! stream keeps the events (7 days). Keep-alive comments flow every `events.keep_alive_secs`.
//!
//! Who sees what: the caller's own media (admins: all); with `?entityType=&entityId=`, also the
//! public media of that entity. Private media of others never appear. The caller is identified
//! here, from `Authorization: Bearer` or `?token=` (an access token; `EventSource` cannot send
//! headers), verified locally; a stream ends when that token expires, so a revoked session stops
//! receiving at the latest then (the client reconnects with a fresh token).
//!
//! Bounded: at most `events.max_connections` streams per bridge (503 beyond); a stream's consumer
//! is deleted as soon as the client goes away (and would expire on the server 30 s later anyway).
//! On SIGTERM every stream ends, so the bridge stops without waiting out its drain time; and
//! `events.max_stream_ms`, when set, ends streams after that long (clients reconnect).

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::{Stream, StreamExt, future, stream};
use mediabus_auth::{AuthError, Identity, Verifier};
use mediabus_rpc::RpcError;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::EventsSettings;
use crate::{AppState, error_response, parse_query};

/// The JetStream stream of media events, created by the media service.
pub const STREAM: &str = "MEDIA_EVENTS";

/// The event side of the bridge: JetStream access, connection slots, keep-alive period. Cheap to
/// clone.
#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    slots: Arc<Semaphore>,
    keep_alive: Duration,
    /// `events.max_stream_ms` (`None`: no limit).
    max_stream: Option<Duration>,
    /// Turns `true` on SIGTERM/SIGINT; set up with the first stream (see [`Events::closing`]).
    closing: Arc<OnceLock<watch::Receiver<bool>>>,
}

impl Events {
    /// Streams over `nats` (its user needs the consumer rights of nats/permissions.conf `BRIDGE`).
    pub fn new(nats: async_nats::Client, settings: &EventsSettings) -> Self {
        Self {
            js: jetstream::new(nats),
            slots: Arc::new(Semaphore::new(settings.max_connections)),
            keep_alive: Duration::from_secs(settings.keep_alive_secs.max(1)),
            max_stream: (settings.max_stream_ms > 0).then(|| Duration::from_millis(settings.max_stream_ms)),
            closing: Arc::default(),
        }
    }

    /// Completes when the process is asked to stop, so open streams end at once and the server's
    /// graceful shutdown is not held up by them (clients reconnect elsewhere with `Last-Event-ID`).
    /// The signal is watched from the first stream on, not at start-up: building the state (as
    /// in-process tests do) installs no signal handler.
    fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self
            .closing
            .get_or_init(|| {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(async move {
                    mediabus_rpc::shutdown_signal().await;
                    let _ = tx.send(true);
                });
                rx
            })
            .clone();
        async move {
            if closing.wait_for(|closed| *closed).await.is_err() {
                future::pending::<()>().await;
            }
        }
    }
}

/// Which events a connection forwards.
#[derive(Debug, Clone)]
struct Viewer {
    caller: Identity,
    /// `(entityType, entityId)` whose public media are wanted too.
    entity: Option<(String, String)>,
}

impl Viewer {
    /// Whether the caller may see an event about `media` (a Media document).
    fn may_see(&self, media: &Value) -> bool {
        if self.caller.is_admin() || media["userId"].as_str() == Some(self.caller.user_id.as_str()) {
            return true;
        }
        self.entity.as_ref().is_some_and(|(kind, id)| {
            media["isPublic"] == Value::Bool(true)
                && media["entityType"].as_str() == Some(kind.as_str())
                && media["entityId"].as_str() == Some(id.as_str())
        })
    }
}

/// Holds a connection slot and names the connection's consumer; deletes the consumer when the
/// stream is dropped (client gone, token expired, or the consumer failed).
struct Connection {
    js: jetstream::Context,
    consumer: String,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let (js, name) = (self.js.clone(), std::mem::take(&mut self.consumer));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // A consumer already gone (or recreated under a suffixed name, which then expires on
                // its own after 30 s of inactivity) is fine.
                if let Err(e) = js.delete_consumer_from_stream(&name, STREAM).await {
                    tracing::debug!(consumer = %name, error = %e, "event consumer not deleted");
                }
            });
        }
    }
}

/// The handler of `GET /api/events`. Errors (contract shape): 400 for a malformed `Last-Event-ID`
/// or an entity filter missing one of its two fields, 401 without a valid access token, 503 when
/// every connection slot is taken or JetStream is unavailable.
pub async fn events(State(state): State<AppState>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    match open(&state, query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(err) => error_response(err),
    }
}

async fn open(state: &AppState, query: Option<&str>, headers: &HeaderMap) -> Result<Response, RpcError> {
    let params = query.map(parse_query).unwrap_or_default();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());

    let (caller, token) = authenticate(&state.verifier, headers, param("token"))?;
    let entity = match (param("entityType"), param("entityId")) {
        (Some(kind), Some(id)) if !kind.is_empty() && !id.is_empty() => Some((kind.to_owned(), id.to_owned())),
        (None, None) => None,
        _ => return Err(RpcError::invalid_payload("entityType and entityId go together, both non-empty")),
    };
    let last_event_id = match headers.get("last-event-id").map(|v| v.to_str()) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(RpcError::invalid_payload("Last-Event-ID must be a stream sequence number")),
        None => param("lastEventId"),
    };
    let resume_after = match last_event_id.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => Some(
            value
                .parse::<u64>()
                .map_err(|_| RpcError::invalid_payload("Last-Event-ID must be a stream sequence number"))?,
        ),
        None => None,
    };

    let events = &state.events;
    let slot = events.slots.clone().try_acquire_owned().map_err(|_| {
        RpcError::unavailable("too many event streams are open on this bridge, retry later")
            .with_details(serde_json::json!({"retryAfterSecs": 5}))
    })?;
    let name = format!("sse_{}", nuid::next());
    let deliver_policy = match resume_after {
        Some(seq) => DeliverPolicy::ByStartSequence { start_sequence: seq.saturating_add(1) },
        None => DeliverPolicy::New,
    };
    let config = OrderedConfig { name: Some(name.clone()), deliver_policy, ..Default::default() };
    let consumer = events.js.create_consumer_on_stream(config, STREAM).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot create an event consumer");
        RpcError::unavailable("the event stream is unavailable, retry later")
    })?;
    // The consumer starts after `floor`. Should the client library recreate it before the first
    // message, it restarts from the stream's beginning: events at or below `floor` are skipped.
    let floor = resume_after.unwrap_or(0).max(consumer.cached_info().delivered.stream_sequence);
    let connection = Connection { js: events.js.clone(), consumer: name, _slot: slot };
    let messages = consumer.messages().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot read the event consumer");
        RpcError::unavailable("the event stream is unavailable, retry later")
    })?;

    let viewer = Viewer { caller, entity };
    let forwarded = messages
        .take_while(|message| {
            if let Err(e) = message {
                // The client reconnects (EventSource does so by itself) and resumes from its last id.
                tracing::warn!(error = %e, "event consumer failed; closing the stream");
            }
            future::ready(message.is_ok())
        })
        .filter_map(move |message| {
            let _connection = &connection;
            future::ready(message.ok().and_then(|message| to_event(&message, &viewer, floor)))
        });
    let opened = stream::once(future::ready(Event::default().comment("connected")));
    let body: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(
        opened
            .chain(forwarded)
            .take_until(until(token_expiry(&token)))
            .take_until(events.closing())
            .take_until(lifetime(events.max_stream))
            .map(Ok),
    );
    let mut response =
        Sse::new(body).keep_alive(KeepAlive::new().interval(events.keep_alive).text("keep-alive")).into_response();
    // Reverse proxies (nginx) must pass events on as they come.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The caller and its access token: `Authorization: Bearer` first, else `?token=`. Errors: 401
/// when neither is there, or the one given is not a valid access token.
fn authenticate(
    verifier: &Verifier,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(Identity, String), RpcError> {
    let unauthenticated = |e: AuthError| {
        let message = match e {
            AuthError::Missing => "an access token is required (Authorization: Bearer, or ?token=)",
            AuthError::Expired => "the access token has expired",
            AuthError::Invalid(_) => "the access token is not valid",
        };
        RpcError::new(401, "UNAUTHENTICATED", message)
    };
    let token = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().map_err(|_| unauthenticated(AuthError::Invalid("header")))?;
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                    token.trim().to_owned()
                }
                _ => return Err(unauthenticated(AuthError::Invalid("expected Bearer scheme"))),
            }
        }
        None => query_token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing).map_err(unauthenticated)?.to_owned(),
    };
    let caller = verifier.verify(&token).map_err(unauthenticated)?;
    Ok((caller, token))
}

/// `exp` of a JWT that has been verified already (Unix seconds); `None` if it has none.
fn token_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_u64()
}

/// Completes at Unix time `exp` (never without one).
async fn until(exp: Option<u64>) {
    match exp {
        Some(exp) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            tokio::time::sleep(Duration::from_secs(exp.saturating_sub(now))).await;
        }
        None => future::pending().await,
    }
}

/// Completes after `limit` (never without one).
async fn lifetime(limit: Option<Duration>) {
    match limit {
        Some(limit) => tokio::time::sleep(limit).await,
        None => future::pending().await,
    }
}

/// The SSE event of a JetStream message, if `viewer` may see it and it lies after `floor`. A
/// payload that is not a media event (not JSON, no `userId`) is skipped.
fn to_event(message: &jetstream::Message, viewer: &Viewer, floor: u64) -> Option<Event> {
    let sequence = message.info().ok()?.stream_sequence;
    if sequence <= floor {
        return None;
    }
    let media = media_of(&message.payload)?;
    if !viewer.may_see(&media) {
        return None;
    }
    // serde_json writes one line: no `data:` continuation lines.
    let data = serde_json::to_string(&media).ok()?;
    Some(Event::default().event(message.subject.as_str()).id(sequence.to_string()).data(data))
}

/// The Media document of an event body: the `data` of a NestJS packet `{"pattern":..,"data":..}`,
/// or the whole body (a raw payload, DESIGN §3). `None` unless it is a JSON object.
fn media_of(payload: &[u8]) -> Option<Value> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    let media = match body {
        Value::Object(mut packet) if packet.contains_key("pattern") && packet.contains_key("data") => {
            packet.remove("data")?
        }
        other => other,
    };
    media.is_object().then_some(media)
}

#[cfg(test)]
mod tests {
    use mediabus_auth::Role;
    use serde_json::json;

    use super::*;

    fn viewer(user: &str, roles: &[Role], entity: Option<(&str, &str)>) -> Viewer {
        Viewer {
            caller: Identity { user_id: user.into(), roles: roles.to_vec() },
            entity: entity.map(|(t, i)| (t.into(), i.into())),
        }
    }

    #[test]
    fn callers_see_their_own_media_and_public_media_of_the_entity_they_follow() {
        let private = json!({"userId": "bob", "isPublic": false, "entityType": "user", "entityId": "bob"});
        let public = json!({"userId": "bob", "isPublic": true, "entityType": "user", "entityId": "bob"});
        let alice = viewer("alice", &[Role::User], None);
        assert!(!alice.may_see(&private) && !alice.may_see(&public));
        let following = viewer("alice", &[Role::User], Some(("user", "bob")));
        assert!(following.may_see(&public));
        assert!(!following.may_see(&private), "private media of others never appear");
        assert!(!viewer("alice", &[Role::User], Some(("user", "carol"))).may_see(&public));
        assert!(viewer("bob", &[Role::User], None).may_see(&private));
        assert!(viewer("root", &[Role::Admin], None).may_see(&private));
    }

    #[test]
    fn events_are_nestjs_packets_or_raw_documents() {
        let packet = br#"{"pattern":"media.created","data":{"id":"m1","userId":"u"}}"#;
        assert_eq!(media_of(packet), Some(json!({"id": "m1", "userId": "u"})));
        assert_eq!(media_of(br#"{"id":"m1","userId":"u"}"#), Some(json!({"id": "m1", "userId": "u"})));
        assert_eq!(media_of(b"not json"), None);
        assert_eq!(media_of(br#"{"pattern":"x","data":3}"#), None);
    }

    #[test]
    fn the_expiry_of_a_token_is_read_from_its_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a","exp":1700000000}"#);
        assert_eq!(token_expiry(&format!("h.{payload}.s")), Some(1_700_000_000));
        assert_eq!(token_expiry("garbage"), None);
    }
}
