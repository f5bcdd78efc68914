//! NATS users and permissions (nats/permissions.conf), enforced by a real nats-server: each
//! service's user may do only what it needs. The services' own suites run them as these users, so
//! they show the permissions suffice; this file shows they refuse the rest.
//!
//! A refusal is observed two ways: the server's `-ERR 'Permissions Violation ...'`, which
//! async-nats reports as `Event::ServerError`, and for publishes, the message never reaching a
//! full-rights observer that does receive a marker published after it on the same connection.

use std::time::Duration;

use async_nats::{Client, Event, Subscriber};
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
