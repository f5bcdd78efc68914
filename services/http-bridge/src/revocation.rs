//! Revocation of content grants (issue 12 item 3): a media that is removed, or made private, stops
//! being served through the signed URLs issued before, on every bridge, within the delivery time
//! of one JetStream message.
//!
//! Each bridge follows `media.removed` and `media.updated` in the stream [`crate::events::STREAM`]
//! (one ordered consumer over the whole stream, in memory, no acks; several filter subjects would
//! need async-nats' `server_2_10` feature, and the other events are few and skipped) and keeps, per media id, the instant of its last
//! removal and of its last change to private. A grant issued at or before such an instant
//! (`ContentGrant::iat_ms`) is refused: after a removal every older grant; after a change to
//! private the grants issued while it was public (`public: true`), since those may have gone to
//! anyone, whereas private grants only ever went to readers the media service allowed. The check
//! is a map lookup: no NATS round trip on the bytes path.
//!
//! The instant of a change is the latest of the document's `updatedAt` (the media service's
//! clock, which also stamps `iat_ms`), the stream's storage time and, for an event stored less
//! than [`LIVE`] ago, this bridge's receipt time, so a small clock skew between machines, or a
//! grant signed from a read that raced the change, does not let an older grant through. Replayed
//! events do not take the receipt time: a media made private and public again keeps the grants
//! issued since on a bridge started later.
//!
//! Bounded: an entry matters only while grants issued before it can be unexpired, i.e. for
//! `content.token_ttl_secs`; older entries are pruned. Past `content.revocation_capacity` entries
//! the map is cleared and every grant issued until then is refused (fail closed: clients fetch a
//! fresh URL). On start, a bridge replays the last `token_ttl_secs` of the stream before it
//! serves content (waiting at most [`CATCH_UP_WAIT`]), so a bridge started after a removal knows
//! it too.
//!
//! Gap: while this bridge cannot read the stream (NATS down, JetStream unavailable), changes made
//! meanwhile reach it only when it reads again (it resumes a `token_ttl_secs` back); grants are
//! still checked against what it knows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use futures_util::StreamExt;
use mediabus_auth::ContentGrant;
use mediabus_contracts::{Timestamp, subjects};
use serde_json::Value;
use tokio::sync::watch;

use crate::config::ContentSettings;
use crate::events::STREAM;

/// An event stored less than this long ago is live: its receipt time counts as its instant too.
const LIVE: Duration = Duration::from_secs(2);

/// Longest wait at start-up for the replay of recent events before content is served anyway.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// The revocation instants of one media, Unix milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Revoked {
    /// Last `media.removed`.
    removed: Option<u64>,
    /// Last `media.updated` that left it private.
    private: Option<u64>,
}

impl Revoked {
    fn latest(&self) -> u64 {
        self.removed.max(self.private).unwrap_or(0)
    }
}

/// The map and its bounds.
#[derive(Debug)]
struct Table {
    by_id: HashMap<String, Revoked>,
    /// Grants issued at or before this instant are refused whatever their media (set when the map
    /// overflowed and was cleared).
    floor: Option<u64>,
    window_ms: u64,
    capacity: usize,
    /// Inserts since the last prune.
    since_prune: usize,
}

impl Table {
    fn new(window: Duration, capacity: usize) -> Self {
        Self {
            by_id: HashMap::new(),
            floor: None,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            since_prune: 0,
        }
    }

    fn allows(&self, grant: &ContentGrant) -> bool {
        if self.floor.is_some_and(|floor| grant.iat_ms <= floor) {
            return false;
        }
        let Some(revoked) = self.by_id.get(&grant.sub) else {
            return true;
        };
        let removed = revoked.removed.is_some_and(|at| grant.iat_ms <= at);
        let made_private = grant.public && revoked.private.is_some_and(|at| grant.iat_ms <= at);
        !(removed || made_private)
    }

    fn record(&mut self, id: &str, change: Change, at: u64, now: u64) {
        let entry = self.by_id.entry(id.to_owned()).or_default();
        let slot = match change {
            Change::Removed => &mut entry.removed,
            Change::MadePrivate => &mut entry.private,
        };
        *slot = Some(slot.map_or(at, |old| old.max(at)));
        self.since_prune += 1;
        // Pruning is linear: amortised over a fraction of the capacity, or when full.
        if self.by_id.len() > self.capacity || self.since_prune > self.capacity / 4 {
            self.prune(now);
        }
    }

    /// Drops entries no unexpired grant can predate; if still over capacity, clears the map and
    /// refuses every grant issued until `now` instead (fail closed).
    fn prune(&mut self, now: u64) {
        self.since_prune = 0;
        let oldest_relevant = now.saturating_sub(self.window_ms);
        self.by_id.retain(|_, revoked| revoked.latest() >= oldest_relevant);
        if self.floor.is_some_and(|floor| floor < oldest_relevant) {
            self.floor = None;
        }
        if self.by_id.len() > self.capacity {
            tracing::warn!(
                entries = self.by_id.len(),
                "content revocations over content.revocation_capacity: refusing every older grant"
            );
            self.by_id.clear();
            self.floor = Some(now);
        }
    }
}

/// What an event did to a media's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Removed,
    MadePrivate,
}

/// The revocations this bridge knows. Cheap to clone.
#[derive(Clone)]
pub struct Revocations {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Revocations")
    }
}

impl Revocations {
    /// An empty table for grants living up to `settings.token_ttl_secs`; nothing followed.
    pub fn new(settings: &ContentSettings) -> Self {
        let table = Table::new(Duration::from_secs(settings.token_ttl_secs), settings.revocation_capacity);
        Self { table: Arc::new(Mutex::new(table)) }
    }

    /// Starts following the stream over `nats` (its user needs the consumer rights of
    /// nats/permissions.conf `BRIDGE`) from `token_ttl_secs` ago, and waits until the replay has
    /// caught up with the stream, at most [`CATCH_UP_WAIT`]. Needs a Tokio runtime.
    pub async fn follow(&self, nats: async_nats::Client, settings: &ContentSettings) {
        let (caught_up, mut watch) = watch::channel(false);
        let window = Duration::from_secs(settings.token_ttl_secs);
        tokio::spawn(follow(self.clone(), jetstream::new(nats), window, caught_up));
        if tokio::time::timeout(CATCH_UP_WAIT, watch.wait_for(|done| *done)).await.is_err() {
            tracing::warn!("recent media events not replayed yet; serving content meanwhile");
        }
    }

    /// Whether `grant` (verified) may still be served.
    pub fn allows(&self, grant: &ContentGrant) -> bool {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner).allows(grant)
    }

    fn record(&self, id: &str, change: Change, at: u64) {
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        table.record(id, change, at, now_ms());
    }

    /// Applies one event (subject and NestJS packet or raw Media body) stored at `stored_ms`.
    fn apply(&self, subject: &str, payload: &[u8], stored_ms: u64) {
        let Some((id, change, updated_ms)) = change_of(subject, payload) else {
            return;
        };
        let now = now_ms();
        let live = now.saturating_sub(stored_ms) < u64::try_from(LIVE.as_millis()).unwrap_or(u64::MAX);
        let at = updated_ms.max(stored_ms).max(if live { now } else { 0 });
        self.record(&id, change, at);
    }
}

/// The media id, the kind of change and the document's `updatedAt` (ms) of an event that revokes
/// grants; `None` for every other event (created, processed, updated and still public, not a
/// media).
fn change_of(subject: &str, payload: &[u8]) -> Option<(String, Change, u64)> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    let media = match body.get("pattern").zip(body.get("data")) {
        Some((_, data)) => data,
        None => &body,
    };
    let id = media.get("id")?.as_str()?.to_owned();
    let change = if subject == subjects::MEDIA_REMOVED {
        Change::Removed
    } else if subject == subjects::MEDIA_UPDATED && media.get("isPublic") != Some(&Value::Bool(true)) {
        Change::MadePrivate
    } else {
        return None;
    };
    let updated = media
        .get("updatedAt")
        .and_then(Value::as_str)
        .and_then(Timestamp::parse)
        .map_or(0, |t| u64::try_from(t.unix_millis()).unwrap_or(0));
    Some((id, change, updated))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The follower: an ordered consumer from `window` ago, re-created (a `window` back again) after
/// any failure. `caught_up` turns true once the replay reached the end of the stream, or the
/// stream cannot be read (nothing to wait for).
async fn follow(revocations: Revocations, js: jetstream::Context, window: Duration, caught_up: watch::Sender<bool>) {
    let mut failures = 0u32;
    loop {
        let start = time::OffsetDateTime::now_utc() - window;
        let config = OrderedConfig {
            name: Some(format!("revocations_{}", nuid::next())),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: start },
            ..Default::default()
        };
        match js.create_consumer_on_stream(config, STREAM).await {
            Ok(consumer) => {
                if consumer.cached_info().num_pending == 0 {
                    let _ = caught_up.send(true);
                }
                match consumer.messages().await {
                    Ok(mut messages) => {
                        while let Some(message) = messages.next().await {
                            let message = match message {
                                Ok(message) => message,
                                Err(e) => {
                                    tracing::warn!(error = %e, "revocation consumer failed; re-creating it");
                                    break;
                                }
                            };
                            failures = 0;
                            let info = message.info().ok();
                            let stored = info.as_ref().map_or(0, |i| {
                                u64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
                            });
                            revocations.apply(message.subject.as_str(), &message.payload, stored);
                            if info.is_none_or(|i| i.pending == 0) {
                                let _ = caught_up.send(true);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the revocation consumer"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow media events for content revocation"),
        }
        // Nothing to wait for at start-up while the stream cannot be read.
        let _ = caught_up.send(true);
        failures = failures.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.min(20)))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, public: bool, iat_ms: u64) -> ContentGrant {
        ContentGrant {
            sub: id.into(),
            key: "k".into(),
            size: 1,
            mime: "image/png".into(),
            name: "a.png".into(),
            sha256: "00".into(),
            modified: 0,
            public,
            exp: u64::MAX,
            iat_ms,
        }
    }

    #[test]
    fn removal_refuses_every_older_grant_and_privacy_the_public_ones() {
        let mut table = Table::new(Duration::from_secs(300), 100);
        table.record("m1", Change::Removed, 1_000, 1_000);
        assert!(!table.allows(&grant("m1", false, 999)));
        assert!(!table.allows(&grant("m1", true, 1_000)));
        assert!(table.allows(&grant("m1", false, 1_001)));
        assert!(table.allows(&grant("m2", true, 1)));

        table.record("m3", Change::MadePrivate, 2_000, 2_000);
        assert!(!table.allows(&grant("m3", true, 1_999)), "a grant from its public days");
        assert!(table.allows(&grant("m3", false, 1_999)), "a reader's private grant");
        assert!(table.allows(&grant("m3", true, 2_001)));
    }

    #[test]
    fn the_table_stays_bounded_and_fails_closed() {
        let mut table = Table::new(Duration::from_secs(1), 10);
        for i in 0..10 {
            table.record(&format!("m{i}"), Change::Removed, 1_000, 1_000);
        }
        // Ten seconds on: every entry is older than any unexpired grant.
        table.record("new", Change::Removed, 11_000, 11_000);
        assert!(table.by_id.len() <= 2, "{:?}", table.by_id.keys());
        for i in 0..20 {
            table.record(&format!("n{i}"), Change::Removed, 12_000, 12_000);
        }
        assert!(table.by_id.len() <= 10);
        assert!(!table.allows(&grant("unrelated", true, 12_000)), "overflow refuses older grants");
        assert!(table.allows(&grant("unrelated", true, 12_001)));
    }

    #[test]
    fn only_removals_and_private_updates_revoke() {
        let packet = |pattern: &str, public: bool| {
            serde_json::json!({"pattern": pattern, "data": {"id": "m1", "isPublic": public,
                "updatedAt": "2026-01-01T00:00:00.123Z"}})
            .to_string()
        };
        let at = 1_767_225_600_123;
        assert_eq!(
            change_of("media.removed", packet("media.removed", true).as_bytes()),
            Some(("m1".into(), Change::Removed, at))
        );
        assert_eq!(
            change_of("media.updated", packet("media.updated", false).as_bytes()),
            Some(("m1".into(), Change::MadePrivate, at))
        );
        assert_eq!(change_of("media.updated", packet("media.updated", true).as_bytes()), None);
        assert_eq!(change_of("media.created", packet("media.created", false).as_bytes()), None);
        assert_eq!(change_of("media.removed", b"not json"), None);
    }
}
