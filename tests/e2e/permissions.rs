//! NATS users and permissions (nats/permissions.conf), enforced by a real nats-server: each
//! service's user may do only what it needs. The services' own suites run them as these users, so
//! they show the permissions suffice; this file shows they refuse the rest.
//!
//! A refusal is observed two ways: the server's `-ERR 'Permissions Violation ...'`, which
//! async-nats reports as `Event::ServerError`, and for publishes, the message never reaching a
//! full-rights observer that does receive a marker published after it on the same connection.

use std::time::Duration;

use async_nats::{Client, Event, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_testkit::{NatsServer, repo_root, server_bin};
use tokio::sync::mpsc;

/// A connection as one user, with the server errors it received.
struct Conn {
    nats: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Conn {
    /// Connects as `user`, with replies to its requests on `inbox_prefix` (the services use
    /// `_INBOX_<user>`; NestJS clients `_INBOX`).
    async fn connect(server: &NatsServer, user: &str, inbox_prefix: &str) -> Self {
        let (tx, errors) = mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::with_user_and_password(user.into(), server.password(user))
            .custom_inbox_prefix(inbox_prefix)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        Self { nats, errors }
    }

    /// Waits for the server to refuse `what` (e.g. `Subscription to "media.>"`).
    async fn refused(&mut self, what: &str) {
        let want = format!("Permissions Violation for {what}");
        let wait = async {
            while let Some(error) = self.errors.recv().await {
                if error.contains(&want) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap_or_else(|_| panic!("not refused: {want}"));
    }

    /// Subscribes to `subject` and expects the server to refuse it.
    async fn subscribe_refused(&mut self, subject: &str) {
        let _subscriber = self.nats.subscribe(subject.to_owned()).await.unwrap();
        self.refused(&format!("Subscription to \"{subject}\"")).await;
    }

    /// Publishes to `subject` and expects the server to refuse it.
    async fn publish_refused(&mut self, subject: &str) {
        self.nats.publish(subject.to_owned(), "forged".into()).await.unwrap();
        self.refused(&format!("Publish to \"{subject}\"")).await;
    }

    /// Checks the server refused nothing so far (its errors arrive before the reply to a later
    /// request on the same connection, and the callback runs shortly after).
    async fn nothing_refused(&mut self) {
        self.nats.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(error) = self.errors.try_recv() {
            panic!("unexpected server error: {error}");
        }
    }
}

/// A full-rights (harness) subscriber on everything but the service API and inboxes.
async fn observer(server: &NatsServer) -> Subscriber {
    let nats = async_nats::connect(server.url()).await.unwrap();
    let all = nats.subscribe(">").await.unwrap();
    nats.flush().await.unwrap();
    all
}

/// Receives from `observer` up to the message on `marker`; returns the subjects seen before it.
async fn subjects_until(observer: &mut Subscriber, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), observer.next())
            .await
            .unwrap_or_else(|_| panic!("marker {marker} not delivered"))
            .unwrap();
        if message.subject.as_str() == marker {
            return seen;
        }
        seen.push(message.subject.to_string());
    }
}

#[tokio::test]
async fn the_bridge_may_call_public_subjects_only() {
    let server = NatsServer::start();
    let mut all = observer(&server).await;
    let mut bridge = Conn::connect(&server, "bridge", "_INBOX_bridge").await;

    // Allowed: a public request subject reaches the worker side.
    bridge.nats.publish("media.findOne", "{}".into()).await.unwrap();
    bridge.nats.publish("auth.login", "{}".into()).await.unwrap();
    bridge.nats.flush().await.unwrap();
    assert_eq!(subjects_until(&mut all, "auth.login").await, ["media.findOne"]);
    bridge.nothing_refused().await;

    // Refused: JetStream, forging an event, a backend-only subject; none reaches anyone.
    bridge.publish_refused("$JS.API.STREAM.DELETE.MEDIA_EVENTS").await;
    bridge.publish_refused("media.created").await;
    bridge.publish_refused("auth.serviceToken").await;
    bridge.nats.publish("media.findAll", "marker".into()).await.unwrap();
    assert_eq!(subjects_until(&mut all, "media.findAll").await, Vec::<String>::new(), "refused publishes leaked");

    // Refused: serving or snooping on subjects (only its own inbox is readable).
    bridge.subscribe_refused("media.>").await;
    bridge.subscribe_refused("auth.login").await;
    bridge.subscribe_refused("_INBOX.>").await;
}

#[tokio::test]
async fn the_bridge_reaches_workers_and_their_service_api_on_its_own_inbox() {
    let server = NatsServer::start();
    let mut auth = Conn::connect(&server, "auth", "_INBOX_auth").await;
    let mut worker = auth.nats.subscribe("auth.login").await.unwrap();
    let mut srv = auth.nats.subscribe("$SRV.PING.auth").await.unwrap();
    auth.nothing_refused().await;
    let responder = auth.nats.clone();
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                Some(m) = worker.next() => m,
                Some(m) = srv.next() => m,
                else => break,
            };
            // Replies go out through allow_responses: the auth user has no publish right on inboxes.
            if let Some(reply) = message.reply {
                responder.publish(reply, "pong".into()).await.unwrap();
            }
        }
    });

    let mut bridge = Conn::connect(&server, "bridge", "_INBOX_bridge").await;
    for subject in ["auth.login", "$SRV.PING.auth"] {
        let reply = tokio::time::timeout(Duration::from_secs(5), bridge.nats.request(subject, "{}".into()))
            .await
            .expect("reply in time")
            .unwrap_or_else(|e| panic!("{subject}: {e}"));
        assert!(reply.subject.starts_with("_INBOX_bridge."), "{}", reply.subject);
        assert_eq!(&reply.payload[..], b"pong");
    }
    bridge.nothing_refused().await;
    auth.nothing_refused().await;

    // A worker answers only what it was asked: no publishing elsewhere, not even to inboxes.
    auth.publish_refused("_INBOX_bridge.forged").await;
    auth.publish_refused("media.created").await;
}

#[tokio::test]
async fn a_worker_serves_only_its_own_subjects() {
    let server = NatsServer::start();
    let mut media = Conn::connect(&server, "media", "_INBOX_media").await;
    let _serving = media.nats.queue_subscribe("media.findOne", "media".into()).await.unwrap();
    let _content = media.nats.queue_subscribe("media.content", "media".into()).await.unwrap();
    let _parts = media.nats.queue_subscribe("upload.part", "media".into()).await.unwrap();
    media.nothing_refused().await;

    media.subscribe_refused("auth.>").await;
    media.subscribe_refused("auth.login").await;
    media.subscribe_refused("_INBOX_bridge.>").await;
    media.publish_refused("auth.login").await;
    media.publish_refused("$JS.API.STREAM.DELETE.MEDIA_EVENTS").await;
}

#[tokio::test]
async fn a_backend_calls_and_follows_events_but_cannot_impersonate_a_worker() {
    let server = NatsServer::start();
    // As a NestJS client: replies on the default `_INBOX` prefix.
    let mut backend = Conn::connect(&server, "backend", "_INBOX").await;
    let mut events = backend.nats.subscribe("media.created").await.unwrap();
    let inbox = backend.nats.new_inbox();
    assert!(inbox.starts_with("_INBOX."), "{inbox}");
    let _replies = backend.nats.subscribe(inbox).await.unwrap();
    backend.nothing_refused().await;

    let media = Conn::connect(&server, "media", "_INBOX_media").await;
    media.nats.publish("media.created", "{\"pattern\":\"media.created\",\"data\":{}}".into()).await.unwrap();
    media.nats.flush().await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("event delivered").unwrap();
    assert_eq!(event.subject.as_str(), "media.created");

    backend.subscribe_refused("media.findOne").await;
    backend.subscribe_refused("upload.>").await;
    backend.subscribe_refused("$SRV.PING.media").await;
    backend.subscribe_refused("_INBOX_bridge.>").await;
    backend.publish_refused("media.created").await;
    backend.publish_refused("$JS.API.STREAM.DELETE.MEDIA_EVENTS").await;
}

/// The cascade events (`user.deleted`, `entity.deleted`) carry no token: NATS permissions alone
/// decide who may trigger a mass removal. A backend may publish them; the bridge, the processor
/// and the media workers themselves may not (none reaches a subscriber).
#[tokio::test]
async fn only_a_backend_may_publish_the_cascade_events() {
    let server = NatsServer::start();
    let mut all = observer(&server).await;
    let cascades = ["user.deleted", "entity.deleted"];

    let mut backend = Conn::connect(&server, "backend", "_INBOX").await;
    for subject in cascades {
        backend.nats.publish(subject, "{\"pattern\":\"x\",\"data\":{}}".into()).await.unwrap();
    }
    backend.nats.publish("media.findAll", "marker".into()).await.unwrap();
    assert_eq!(subjects_until(&mut all, "media.findAll").await, cascades, "the backend's events arrive");
    backend.nothing_refused().await;

    for (user, inbox) in [("bridge", "_INBOX_bridge"), ("processor", "_INBOX_processor"), ("media", "_INBOX_media")] {
        let mut conn = Conn::connect(&server, user, inbox).await;
        for subject in cascades {
            conn.publish_refused(subject).await;
        }
        // A marker the user may publish, after the refused ones on the same connection.
        let marker = match user {
            "bridge" => "media.findAll",
            "processor" => "media.processed",
            _ => "media.created",
        };
        conn.nats.publish(marker, "marker".into()).await.unwrap();
        assert_eq!(subjects_until(&mut all, marker).await, Vec::<String>::new(), "{user}'s refused events leaked");
    }
}

#[test]
fn the_dev_config_binds_every_permission_set() {
    let status = std::process::Command::new(server_bin("NATS_SERVER_BIN", "nats-server"))
        .arg("-t")
        .arg("-c")
        .arg(repo_root().join("nats/dev.conf"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run nats-server -t");
    assert!(status.success(), "nats/dev.conf does not parse");
    let dev = std::fs::read_to_string(repo_root().join("nats/dev.conf")).unwrap();
    for (user, set) in mediabus_testkit::NATS_USERS {
        // The password scripts/dev passes.
        let entry = format!("{{user: {user}, password: \"{user}-dev-only\", permissions: ${set}}}");
        assert!(dev.contains(&entry), "nats/dev.conf lacks {entry}");
    }
}

/// A JetStream API request as `nats`; the JSON reply, asserted error-free.
async fn js_api(nats: &Client, subject: &str, body: serde_json::Value) -> serde_json::Value {
    let reply = tokio::time::timeout(Duration::from_secs(5), nats.request(subject.to_owned(), body.to_string().into()))
        .await
        .unwrap_or_else(|_| panic!("{subject}: no reply"))
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert!(reply.get("error").is_none(), "{subject}: {reply}");
    reply
}

/// Issue 12 item 21 (confused deputy): a caller naming a non-inbox reply subject (an event
/// subject, the JetStream API) gets no reply there and its request is not run, on the media
/// subjects and on the service API; replies to the NestJS `_INBOX.` and the private
/// `_INBOX_backend.` still arrive.
#[tokio::test]
async fn workers_reply_only_to_inboxes() {
    let stack = crate::stack::Stack::start(false, &[]).await;
    let harness = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut forged = harness.subscribe("media.created").await.unwrap();
    harness.flush().await.unwrap();
    let request = r#"{"pattern":"media.findOne","data":{"id":"000000000000000000000000"},"id":"req-1"}"#;

    let mut attacker = Conn::connect(&stack.nats, "backend", "_INBOX").await;
    for reply in ["media.created", "$JS.API.STREAM.DELETE.MEDIA_EVENTS", "$JS.API.STREAM.PURGE.MEDIA_EVENTS"] {
        attacker.nats.publish_with_reply("media.findOne", reply, request.into()).await.unwrap();
        attacker.nats.publish_with_reply("$SRV.PING.media", reply, Bytes::new()).await.unwrap();
    }
    attacker.nothing_refused().await;

    // Inbox replies work, and come after the forged requests on the same subjects were taken.
    for prefix in ["_INBOX", "_INBOX_backend"] {
        let conn = Conn::connect(&stack.nats, "backend", prefix).await;
        for (subject, body) in [("media.findOne", Bytes::from(request)), ("$SRV.PING.media", Bytes::new())] {
            let reply = tokio::time::timeout(Duration::from_secs(5), conn.nats.request(subject, body))
                .await
                .unwrap_or_else(|_| panic!("{subject} on {prefix}: no reply"))
                .unwrap();
            assert!(reply.subject.starts_with(&format!("{prefix}.")), "{}", reply.subject);
            assert!(!reply.payload.is_empty(), "{subject}");
        }
    }

    // Nothing reached the event subject (bounded wait for a reply that must not come) ...
    if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(500), forged.next()).await {
        panic!("forged reply published on media.created: {:?}", message.payload);
    }
    // ... nor the stream, which still exists (not deleted or purged by a forged reply).
    let info = js_api(&harness, "$JS.API.STREAM.INFO.MEDIA_EVENTS", serde_json::json!({})).await;
    assert_eq!(info["state"]["messages"], 0, "{info}");
}

/// Issue 12 item 22: a backend reads the events through its own durable consumer (`backend`),
/// pull and ack included, but cannot touch other consumers: the processor's on MEDIA_JOBS, the
/// bridge's on MEDIA_EVENTS, or create one under another name.
#[tokio::test]
async fn a_backend_uses_its_own_consumer_and_no_other() {
    let server = NatsServer::start();
    let harness = async_nats::connect(server.url()).await.unwrap();
    let events = ["media.created", "media.updated", "media.removed", "media.processed"];
    js_api(
        &harness,
        "$JS.API.STREAM.CREATE.MEDIA_EVENTS",
        serde_json::json!({"name": "MEDIA_EVENTS", "subjects": events}),
    )
    .await;
    let jobs = serde_json::json!({"name": "MEDIA_JOBS", "subjects": ["jobs.media.process"], "retention": "workqueue"});
    js_api(&harness, "$JS.API.STREAM.CREATE.MEDIA_JOBS", jobs).await;
    let durable = |stream: &str, name: &str| serde_json::json!({"stream_name": stream, "config": {"durable_name": name, "ack_policy": "explicit"}});
    js_api(&harness, "$JS.API.CONSUMER.CREATE.MEDIA_JOBS.media-processor", durable("MEDIA_JOBS", "media-processor"))
        .await;
    js_api(&harness, "$JS.API.CONSUMER.CREATE.MEDIA_EVENTS.sse_other", durable("MEDIA_EVENTS", "sse_other")).await;

    let mut backend = Conn::connect(&server, "backend", "_INBOX_backend").await;
    backend.publish_refused("$JS.API.CONSUMER.DELETE.MEDIA_JOBS.media-processor").await;
    backend.publish_refused("$JS.API.CONSUMER.DELETE.MEDIA_EVENTS.sse_other").await;
    backend.publish_refused("$JS.API.CONSUMER.MSG.NEXT.MEDIA_EVENTS.sse_other").await;
    backend.publish_refused("$JS.API.CONSUMER.CREATE.MEDIA_EVENTS.sse_mine").await;
    backend.publish_refused("$JS.API.CONSUMER.CREATE.MEDIA_JOBS.backend").await;
    for consumer in ["MEDIA_JOBS.media-processor", "MEDIA_EVENTS.sse_other"] {
        js_api(&harness, &format!("$JS.API.CONSUMER.INFO.{consumer}"), serde_json::json!({})).await;
    }

    // Its own durable consumer: create, pull, ack.
    js_api(&backend.nats, "$JS.API.CONSUMER.CREATE.MEDIA_EVENTS.backend", durable("MEDIA_EVENTS", "backend")).await;
    js_api(&harness, "media.created", serde_json::json!({"pattern": "media.created", "data": {"id": "m1"}})).await;
    let next = serde_json::json!({"batch": 1, "expires": 5_000_000_000u64}).to_string();
    // A subscription of its own, not `request`: a pulled message keeps its stream subject
    // (`media.created`), which the request muxer would not route to the waiting request.
    let inbox = backend.nats.new_inbox();
    let mut pulled = backend.nats.subscribe(inbox.clone()).await.unwrap();
    backend
        .nats
        .publish_with_reply("$JS.API.CONSUMER.MSG.NEXT.MEDIA_EVENTS.backend", inbox, next.into())
        .await
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), pulled.next()).await.expect("pulled in time").unwrap();
    assert_eq!(message.subject.as_str(), "media.created");
    let ack = message.reply.expect("ack subject");
    assert!(ack.starts_with("$JS.ACK.MEDIA_EVENTS.backend."), "{ack}");
    backend.nats.publish(ack, "+ACK".into()).await.unwrap();
    backend.nothing_refused().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let info = js_api(&harness, "$JS.API.CONSUMER.INFO.MEDIA_EVENTS.backend", serde_json::json!({})).await;
        if info["num_ack_pending"] == 0 && info["ack_floor"]["stream_seq"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ack not recorded: {info}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /api/users/{userId}/usage` (issue 12 item 20): the bridge may call `media.usage` and the
/// media workers serve it; another user gets 403.
#[tokio::test]
async fn the_bridge_serves_a_users_usage() {
    let stack = crate::stack::Stack::start(false, &[]).await;
    let alice = crate::stack::token("alice", "user");
    let (status, usage) = stack.send("GET", "/api/users/alice/usage", Some(&alice), None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!((usage["bytes"].as_u64(), usage["count"].as_u64()), (Some(0), Some(0)), "{usage}");
    let bob = crate::stack::token("bob", "user");
    let (status, error) = stack.send("GET", "/api/users/alice/usage", Some(&bob), None).await;
    assert_eq!((status.as_u16(), error["code"].as_str()), (403, Some("FORBIDDEN")), "{error}");
}
