//! `GET /api/events` over real HTTP (DESIGN §10): the `http-bridge` and a `media-service` as
//! processes on a real nats-server (each as its own NATS user, so the bridge's consumer rights in
//! nats/permissions.conf are what is exercised), media uploaded through the bridge, events read as
//! a browser's EventSource would: a streamed `text/event-stream` body parsed frame by frame.
//! The first test runs the `media-processor` too: `media.processed` READY for a valid JPEG, every
//! event of another user's private media (created, processed, updated, removed) kept out of every
//! stream of Alice's, and a `backend` NATS subscriber getting all four kinds without credentials.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use mediabus_e2e::http::{Reply, call, collect, file_body, form_around, form_content_type, send};
use mediabus_e2e::{WorkerProcess, built_bin, dev_token};
use mediabus_testkit::{NatsServer, media_files};
use serde_json::Value;

/// How long any expected event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// nats-server, a media worker and the bridge as processes, sharing a temp dir; optionally the
/// processor and the auth service.
pub(crate) struct ProcStack {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _media: WorkerProcess,
    pub bridge: WorkerProcess,
    _processor: Option<WorkerProcess>,
    _auth: Option<WorkerProcess>,
    pub nats: NatsServer,
}

impl ProcStack {
    /// Starts the stack; with `processor`, also a `media-processor` if that binary is built.
    pub fn start(processor: bool) -> Self {
        Self::start_with(processor, &[])
    }

    /// [`ProcStack::start`] with extra environment for the bridge.
    pub fn start_with(processor: bool, bridge_extra: &[(&'static str, &str)]) -> Self {
        Self::start_all(processor, false, bridge_extra)
    }

    /// The stack with the `auth-service` too (real `/api/auth/*`; the lowest bcrypt cost, so
    /// signing up and in stays quick), and the processor when `processor`.
    pub fn with_auth(processor: bool) -> Self {
        Self::start_all(processor, true, &[])
    }

    fn start_all(processor: bool, auth: bool, bridge_extra: &[(&'static str, &str)]) -> Self {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files").to_str().unwrap().to_owned();
        let db = dir.path().join("media.db").to_str().unwrap().to_owned();
        let url = nats.url();
        let env = |user: &'static str, password: &str| -> Vec<(&'static str, String)> {
            vec![
                ("MEDIABUS__ENV", "dev".into()),
                ("MEDIABUS__NATS__URL", url.clone()),
                ("MEDIABUS__NATS__USER", user.into()),
                ("MEDIABUS__NATS__PASSWORD", password.into()),
                ("MEDIABUS__STORAGE__ROOT", files.clone()),
                ("MEDIABUS__STORE__PATH", db.clone()),
                ("RUST_LOG", "warn".into()),
            ]
        };
        let spawn = |binary: &str, env: &[(&'static str, String)]| {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            WorkerProcess::spawn_with_env(binary, &env, &[])
        };
        let media = spawn(&built_bin("media-service"), &env("media", &nats.password("media")));
        let mut bridge_env = env("bridge", &nats.password("bridge"));
        // Port 0: the bridge binds a port of the system's choosing and prints it (no race).
        bridge_env.push(("MEDIABUS__HTTP__LISTEN", "127.0.0.1:0".into()));
        bridge_env.extend(bridge_extra.iter().map(|(k, v)| (*k, v.to_string())));
        let bridge = spawn(&built_bin("http-bridge"), &bridge_env);
        let port = bridge.ready_port();
        let processor =
            processor.then(|| spawn(&built_bin("media-processor"), &env("processor", &nats.password("processor"))));
        let auth = auth.then(|| {
            let mut env = env("auth", &nats.password("auth"));
            env.push(("MEDIABUS__AUTH__BCRYPT_COST", "4".into()));
            spawn(&built_bin("auth-service"), &env)
        });
        Self { dir, port, _media: media, bridge, _processor: processor, _auth: auth, nats }
    }

    /// The bridge's SSE consumers (`sse_*`) on the stream MEDIA_EVENTS now (asked as the harness
    /// user, through the JetStream API; other services may have consumers there too).
    pub async fn event_consumers(&self) -> usize {
        let harness = async_nats::connect(self.nats.url()).await.unwrap();
        let reply = harness.request("$JS.API.CONSUMER.NAMES.MEDIA_EVENTS", Bytes::new()).await.unwrap();
        let names: Value = serde_json::from_slice(&reply.payload).unwrap();
        let names = names["consumers"].as_array().unwrap_or_else(|| panic!("consumer names: {names}"));
        names.iter().filter(|n| n.as_str().is_some_and(|n| n.starts_with("sse_"))).count()
    }

    /// The file store's root directory.
    pub fn files_root(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// `method path` with a bearer `token` and extra headers, read whole.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(bearer) = &bearer {
            all.push(("authorization", bearer));
        }
        call(self.port, method, path, &all, Bytes::new()).await
    }

    /// `PATCH /api/media/{id}` with a JSON body; the reply.
    pub async fn patch(&self, token: &str, id: &str, body: &Value) -> Reply {
        let bearer = format!("Bearer {token}");
        let headers = [("authorization", bearer.as_str()), ("content-type", "application/json")];
        call(self.port, "PATCH", &format!("/api/media/{id}"), &headers, body.to_string()).await
    }

    /// Uploads `path` with form `fields`; the created Media (asserts 201).
    pub async fn upload(&self, token: &str, path: &Path, fields: &[(&str, &str)]) -> Value {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (prefix, suffix) = form_around(fields, name, "application/octet-stream", &[]);
        let length = prefix.len() as u64 + std::fs::metadata(path).unwrap().len() + suffix.len() as u64;
        let request = Request::post("/api/media/upload")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, form_content_type())
            .header(CONTENT_LENGTH, length)
            .body(file_body(path, prefix, suffix).0)
            .unwrap();
        let reply = collect(send(self.port, request).await).await;
        assert_eq!(reply.status, 201, "upload {}: {:?}", path.display(), reply.json());
        reply.json()
    }

    /// Opens `GET path` as an event stream with `headers`: the status, and the stream when 200.
    pub async fn events(&self, path: &str, headers: &[(&str, &str)]) -> (u16, Option<EventStream>, Reply) {
        let mut request = Request::get(path).header("accept", "text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = send(self.port, request.body(Empty::<Bytes>::new()).unwrap()).await;
        let status = response.status().as_u16();
        if status != 200 {
            return (status, None, collect(response).await);
        }
        let content_type = response.headers().get(CONTENT_TYPE).unwrap().to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let empty = Reply { status: response.status(), headers: response.headers().clone(), body: Bytes::new() };
        let mut stream = EventStream { body: response.into_body(), buffer: String::new() };
        // The bridge opens every stream with a comment, once its consumer exists: from here on, no
        // event is missed.
        stream.next_frame(EVENT_WAIT).await.expect("the opening comment");
        (status, Some(stream), empty)
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// A `text/event-stream` response body, parsed incrementally (WHATWG HTML §9.2.6).
pub(crate) struct EventStream {
    body: Incoming,
    buffer: String,
}

impl EventStream {
    /// The next frame (text up to a blank line), within `limit`; `None` when the stream ended or
    /// the time ran out.
    async fn next_frame(&mut self, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(frame);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await.ok()??.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).expect("UTF-8 events"));
            }
        }
    }

    /// The next event (comments skipped), within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + limit;
        loop {
            let frame = self.next_frame(deadline.saturating_duration_since(Instant::now())).await?;
            let (mut event, mut id, mut data) = (String::from("message"), String::new(), String::new());
            for line in frame.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event = value.to_owned(),
                    "id" => id = value.to_owned(),
                    "data" => data.push_str(value),
                    _ => {}
                }
            }
            if !data.is_empty() {
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is JSON ({e}): {data}"));
                return Some(SseEvent { event, id, data });
            }
        }
    }

    /// Events until one satisfies `wanted` (returned last), failing after [`EVENT_WAIT`].
    pub async fn until(&mut self, what: &str, wanted: impl Fn(&SseEvent) -> bool) -> Vec<SseEvent> {
        let deadline = Instant::now() + EVENT_WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.next_event(left).await else {
                panic!("no {what} within {EVENT_WAIT:?}; saw {seen:?}");
            };
            let done = wanted(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

/// `(event, media id)` of each event.
fn summary(events: &[SseEvent]) -> Vec<(String, String)> {
    events.iter().map(|e| (e.event.clone(), e.data["id"].as_str().unwrap_or_default().to_owned())).collect()
}

/// An access token for `user` with `roles`, signed with the development key the binaries accept.
fn token_with_roles(user: &str, roles: &[mediabus_auth::Role], ttl: Duration) -> String {
    let key = mediabus_auth::SigningKeyConfig::hs256("dev", "dev-only-secret-change-me-0123456789abcdef");
    let signer = mediabus_auth::Signer::new(&key, "mediabus", "mediabus-api").unwrap();
    signer.sign(user, roles, ttl).unwrap().0
}

/// Asserts that every event of a stream opened by `user` (no entity filter) is about `user`'s own
/// media: another user's private media must never show, whatever the event.
fn only_own(user: &str, events: &[SseEvent]) {
    for e in events {
        assert_eq!(e.data["userId"], user, "{user}'s stream got {} of someone else: {}", e.event, e.data);
    }
}

/// A backend service following the media events over NATS, as the `backend` user.
struct BackendEvents {
    _client: async_nats::Client,
    messages: futures_util::stream::SelectAll<async_nats::Subscriber>,
}

/// One event as a backend receives it: subject, NATS headers, payload.
type NatsEvent = (String, async_nats::HeaderMap, Bytes);

impl BackendEvents {
    /// Subscribes to each media event subject (nats/permissions.conf lets `backend` read the
    /// events, not `media.*`, which would also carry other callers' requests and their tokens).
    async fn subscribe(nats: &NatsServer) -> Self {
        let client = async_nats::ConnectOptions::new()
            .user_and_password("backend".into(), nats.password("backend"))
            .connect(nats.url())
            .await
            .unwrap();
        let mut subscribers = Vec::new();
        for subject in ["media.created", "media.updated", "media.removed", "media.processed"] {
            subscribers.push(client.subscribe(subject).await.unwrap());
        }
        client.flush().await.unwrap();
        Self { _client: client, messages: futures_util::stream::select_all(subscribers) }
    }

    /// Events until each `(media id, subject)` of `wanted` has arrived, failing after
    /// [`EVENT_WAIT`]; every event is a NestJS event packet named after its subject.
    async fn until(&mut self, wanted: &[(&str, &str)]) -> Vec<NatsEvent> {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        let mut missing: Vec<(&str, &str)> = wanted.to_vec();
        let mut seen = Vec::new();
        while !missing.is_empty() {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.messages.next()).await else {
                panic!(
                    "the backend missed {missing:?}; got {:?}",
                    seen.iter().map(|e: &NatsEvent| &e.0).collect::<Vec<_>>()
                );
            };
            let packet: Value = serde_json::from_slice(&message.payload).expect("an event packet");
            let subject = message.subject.to_string();
            assert_eq!(packet["pattern"], subject.as_str(), "{packet}");
            let id = packet["data"]["id"].as_str().unwrap_or_default();
            missing.retain(|(want_id, want_subject)| !(*want_id == id && *want_subject == subject));
            seen.push((subject, message.headers.clone().unwrap_or_default(), message.payload.clone()));
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_follow_their_own_media_and_resume_without_loss() {
    let stack = ProcStack::start(true);
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let bearer = format!("Bearer {alice}");
    let files = media_files();
    let mut backend = BackendEvents::subscribe(&stack.nats).await;

    // No token, a forged one, a non-Bearer scheme: 401 in the contract's shape.
    for headers in [vec![], vec![("authorization", "Bearer not.a.jwt")], vec![("authorization", "Basic YTpi")]] {
        let (status, _, reply) = stack.events("/api/events", &headers).await;
        assert_eq!(status, 401, "{headers:?}");
        assert_eq!(reply.json()["code"], "UNAUTHENTICATED", "{headers:?}");
    }
    let (status, _, _) = stack.events("/api/events?token=forged", &[]).await;
    assert_eq!(status, 401);
    let (status, _, reply) = stack.events("/api/events", &[("authorization", &bearer), ("last-event-id", "x")]).await;
    assert_eq!((status, reply.json()["status"].as_u64()), (400, Some(400)));

    let (_, alice_stream, _) = stack.events("/api/events", &[("authorization", &bearer)]).await;
    let mut alice_stream = alice_stream.unwrap();
    // An admin sees everything.
    let admin = token_with_roles("root", &[mediabus_auth::Role::Admin], Duration::from_secs(3600));
    let (_, admin_stream, _) = stack.events(&format!("/api/events?token={admin}"), &[]).await;
    let mut admin_stream = admin_stream.unwrap();

    // Bob's private upload comes first in the stream: Alice's stream, which then shows her own
    // upload first, skipped it.
    let bobs = stack.upload(&bob, &files.png, &[("entityType", "user"), ("entityId", "bob")]).await;
    let bobs_id = bobs["id"].as_str().unwrap();
    let mine = stack.upload(&alice, &files.jpeg, &[]).await;
    let mine_id = mine["id"].as_str().unwrap();
    let seen = alice_stream.until("alice's media.created", |e| e.event == "media.created").await;
    only_own("alice", &seen);
    assert_eq!(summary(&seen), [("media.created".to_owned(), mine_id.to_owned())], "only her own media");
    let created = &seen[0];
    assert_eq!(created.data["userId"], "alice");
    assert_eq!(created.data["checksum"], mine["checksum"]);
    let created_seq: u64 = created.id.parse().expect("the id is the stream sequence");
    let seen = admin_stream.until("alice's upload, for the admin", |e| e.data["id"] == mine_id).await;
    assert_eq!(summary(&seen)[0], ("media.created".to_owned(), bobs_id.to_owned()));

    // An update reaches her live; ids grow with the stream.
    let reply = stack.patch(&alice, mine_id, &serde_json::json!({"metadata": {"v": 1}})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let seen =
        alice_stream.until("media.updated", |e| e.event == "media.updated" && e.data["metadata"]["v"] == 1).await;
    only_own("alice", &seen);
    let updated = seen.last().unwrap();
    assert_eq!(updated.data["metadata"], serde_json::json!({"v": 1}));
    let updated_seq: u64 = updated.id.parse().unwrap();
    assert!(updated_seq > created_seq);

    // Disconnected, she misses two updates; reconnecting with Last-Event-ID brings exactly those.
    drop(alice_stream);
    for v in [2, 3] {
        let reply = stack.patch(&alice, mine_id, &serde_json::json!({"metadata": {"v": v}})).await;
        assert_eq!(reply.status, 200);
    }
    let last = updated_seq.to_string();
    let (_, resumed, _) = stack.events("/api/events", &[("authorization", &bearer), ("last-event-id", &last)]).await;
    let mut resumed = resumed.unwrap();
    let seen = resumed.until("the missed updates", |e| e.data["metadata"]["v"] == 3).await;
    only_own("alice", &seen);
    let updates: Vec<&Value> =
        seen.iter().filter(|e| e.event == "media.updated").map(|e| &e.data["metadata"]["v"]).collect();
    assert_eq!(updates, [2, 3], "{:?}", summary(&seen));
    assert!(seen.iter().all(|e| e.id.parse::<u64>().unwrap() > updated_seq), "nothing before the resume point");
    // The query form resumes the same way (a first EventSource connection cannot set the header).
    let (_, again, _) = stack.events(&format!("/api/events?token={alice}&lastEventId={updated_seq}"), &[]).await;
    let again = again.unwrap().until("the first missed update", |e| e.data["metadata"]["v"] == 2).await;
    only_own("alice", &again);
    assert!(again.iter().all(|e| e.id.parse::<u64>().unwrap() > updated_seq), "{:?}", summary(&again));

    // Her valid JPEG ends with media.processed READY (replayed from her upload on, wherever it
    // falls relative to the updates).
    let (_, replay, _) = stack.events(&format!("/api/events?token={alice}&lastEventId={created_seq}"), &[]).await;
    let is_processed = |e: &SseEvent| e.event == "media.processed" && e.data["id"] == mine_id;
    let seen = replay.unwrap().until("media.processed", is_processed).await;
    only_own("alice", &seen);
    let processed = seen.last().unwrap();
    assert_eq!(processed.data["status"], "READY", "{}", processed.data);
    assert_eq!(processed.data["failureReason"], Value::Null);

    // Bob's private media goes through every other event while her resumed stream stays open:
    // processed (seen by the admin), updated, removed.
    let seen =
        admin_stream.until("bob's media.processed", |e| e.event == "media.processed" && e.data["id"] == bobs_id).await;
    assert_eq!(seen.last().unwrap().data["status"], "READY");
    let reply = stack.patch(&bob, bobs_id, &serde_json::json!({"metadata": {"bob": true}})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let reply = stack.call("DELETE", &format!("/api/media/{bobs_id}"), Some(&bob), &[]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    let seen =
        admin_stream.until("bob's media.removed", |e| e.event == "media.removed" && e.data["id"] == bobs_id).await;
    assert!(summary(&seen).contains(&("media.updated".to_owned(), bobs_id.to_owned())), "{:?}", summary(&seen));
    // Then one more event of hers: every stream of hers that reaches it has passed Bob's events,
    // live (the resumed one) and replayed from the very first event.
    let reply = stack.patch(&alice, mine_id, &serde_json::json!({"metadata": {"v": "end"}})).await;
    assert_eq!(reply.status, 200);
    let is_end = |e: &SseEvent| e.data["metadata"]["v"] == "end";
    only_own("alice", &resumed.until("her last update, live", is_end).await);
    let (_, everything, _) = stack.events(&format!("/api/events?token={alice}&lastEventId=0"), &[]).await;
    let everything = everything.unwrap().until("her last update, replayed from the start", is_end).await;
    only_own("alice", &everything);
    let kinds: std::collections::BTreeSet<&str> = everything.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["media.created", "media.processed", "media.updated"].into(), "{:?}", summary(&everything));

    // A backend following the events over NATS got every kind, about both users, with the trace
    // context as the only header (DESIGN §10): never the caller's Authorization, nor any token in
    // a header value or the payload.
    let seen = backend
        .until(&[
            (bobs_id, "media.created"),
            (bobs_id, "media.processed"),
            (bobs_id, "media.updated"),
            (bobs_id, "media.removed"),
            (mine_id, "media.created"),
            (mine_id, "media.updated"),
            (mine_id, "media.processed"),
        ])
        .await;
    for (subject, headers, payload) in &seen {
        for (name, values) in headers.iter() {
            let name = name.to_string().to_ascii_lowercase();
            assert!(["traceparent", "tracestate"].contains(&name.as_str()), "{subject} carries a {name} header");
            for value in values {
                assert!(!value.as_str().contains(&alice) && !value.as_str().contains(&bob), "{subject}: a token");
            }
        }
        let text = String::from_utf8_lossy(payload);
        assert!(!text.contains(&alice) && !text.contains(&bob), "{subject}: a token in the payload");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_an_entity_see_its_public_media_only() {
    let stack = ProcStack::start(false);
    let (alice, bob) = (dev_token("alice"), dev_token("bob"));
    let files = media_files();
    // EventSource style: the access token in the query, plus the entity to follow.
    let (status, stream, _) =
        stack.events(&format!("/api/events?token={alice}&entityType=user&entityId=bob"), &[]).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let (status, _, reply) = stack.events(&format!("/api/events?token={alice}&entityType=user"), &[]).await;
    assert_eq!((status, reply.json()["code"].as_str()), (400, Some("INVALID_PAYLOAD")));

    let entity = [("entityType", "user"), ("entityId", "bob")];
    let private = stack.upload(&bob, &files.png, &entity).await;
    let other_entity =
        stack.upload(&bob, &files.png, &[("entityType", "user"), ("entityId", "carol"), ("isPublic", "true")]).await;
    let public = stack.upload(&bob, &files.jpeg, &[entity[0], entity[1], ("isPublic", "true")]).await;
    let seen = stream.until("bob's public avatar", |e| e.data["id"] == public["id"]).await;
    assert_eq!(summary(&seen), [("media.created".to_owned(), public["id"].as_str().unwrap().to_owned())]);
    assert_eq!(seen[0].data["isPublic"], true);

    // Made private, it disappears from the followers' stream: the next event they get is a later
    // public one.
    assert_eq!(
        stack.patch(&bob, private["id"].as_str().unwrap(), &serde_json::json!({"metadata": {}})).await.status,
        200
    );
    let reply = stack.patch(&bob, public["id"].as_str().unwrap(), &serde_json::json!({"isPublic": false})).await;
    assert_eq!(reply.status, 200);
    let later = stack.upload(&bob, &files.png, &[entity[0], entity[1], ("isPublic", "true")]).await;
    let seen = stream.until("a later public upload", |e| e.data["id"] == later["id"]).await;
    assert_eq!(summary(&seen), [("media.created".to_owned(), later["id"].as_str().unwrap().to_owned())]);
    let _ = other_entity;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_bounded_kept_alive_and_release_their_consumer() {
    let extra = [("MEDIABUS__EVENTS__MAX_CONNECTIONS", "1"), ("MEDIABUS__EVENTS__KEEP_ALIVE_SECS", "1")];
    let stack = ProcStack::start_with(false, &extra);
    let path = format!("/api/events?token={}", dev_token("alice"));
    let (status, first, _) = stack.events(&path, &[]).await;
    assert_eq!(status, 200);
    let mut first = first.unwrap();
    assert_eq!(stack.event_consumers().await, 1, "one ordered consumer per stream");
    // An idle stream carries keep-alive comments.
    let comment = first.next_frame(Duration::from_secs(5)).await.expect("a keep-alive within 5 s");
    assert!(comment.starts_with(':'), "{comment:?}");

    // The only slot is taken.
    let (status, _, reply) = stack.events(&path, &[]).await;
    assert_eq!((status, reply.json()["code"].as_str()), (503, Some("UNAVAILABLE")));

    // The client goes away: its consumer is deleted and its slot freed.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.event_consumers().await != 0 {
        assert!(Instant::now() < deadline, "the consumer outlived its client");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, again, _) = stack.events(&path, &[]).await;
    assert_eq!(status, 200, "the slot is free again");
    drop(again);

    // A stream lives no longer than the access token that opened it.
    let short = token_with_roles("alice", &[mediabus_auth::Role::User], Duration::from_secs(2));
    let (mut stream, deadline) = (None, Instant::now() + Duration::from_secs(10));
    while stream.is_none() {
        // The slot of the stream just dropped frees once the bridge notices (next keep-alive).
        assert!(Instant::now() < deadline, "no free slot");
        stream = stack.events(&format!("/api/events?token={short}"), &[]).await.1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = stream.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream.next_frame(Duration::from_secs(10)).await.is_some() {
        assert!(Instant::now() < deadline, "the stream outlived its token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_bridge_ends_its_streams_at_once() {
    let mut stack = ProcStack::start(false);
    let (_, stream, _) = stack.events(&format!("/api/events?token={}", dev_token("alice")), &[]).await;
    let mut stream = stream.unwrap();
    let asked = Instant::now();
    stack.bridge.terminate();
    // Well before the 30 s the bridge grants requests in flight on SIGTERM.
    while stream.next_frame(Duration::from_secs(10)).await.is_some() {}
    let status = tokio::task::block_in_place(|| stack.bridge.wait());
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(10), "stopped after {:?}", asked.elapsed());
}
