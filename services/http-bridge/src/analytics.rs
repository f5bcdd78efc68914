//! View and download counts (DESIGN §14), gathered off the content path.
//!
//! Serving bytes records a hit in memory ([`Analytics::record`]: one short mutex section, no
//! I/O); a background task sends everything gathered every [`FLUSH_INTERVAL`] (and on shutdown,
//! [`Analytics::flush`]) to the media service as one `media.analytics {counts:[{id, views,
//! downloads}]}` request per [`MAX_ANALYTICS_BATCH`] ids, which adds them to the stored counters.
//!
//! What counts (from the blob key the bridge serves and the first byte sent):
//! - a **download**: the original's bytes, whole or from byte 0 (a player's follow-up ranges do
//!   not count again);
//! - a **view**: a `thumb` or `preview` variant, or the HLS master playlist;
//! - nothing else (renditions' playlists, init sections, segments).
//!
//! Durability: a crash of the bridge loses the counts of the last interval, at most
//! [`FLUSH_INTERVAL`] (2 s); a flush the media service does not answer is kept and sent again with
//! the next one (so a batch applied but answered too late could count twice). Memory is bounded:
//! past [`MAX_PENDING_IDS`] distinct ids waiting, hits of new ids are dropped (and logged).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mediabus_contracts::lifecycle::{AnalyticsBatch, MAX_ANALYTICS_BATCH, MediaStats};
use mediabus_contracts::{subjects, variants};
use mediabus_rpc::RpcClient;
use serde_json::Value;

/// How often gathered counts are sent: the most a bridge crash can lose.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// Most distinct media ids held between flushes (about 100 bytes each).
pub const MAX_PENDING_IDS: usize = 100_000;

/// What one served response counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    View,
    Download,
}

/// The kind of hit serving blob `key` from byte `first_byte` is, if any (see the module doc).
pub fn classify(key: &str, first_byte: u64) -> Option<Hit> {
    match key.strip_prefix("variants/") {
        Some(rest) => {
            let file = rest.split_once('/')?.1;
            let counted = [variants::THUMB, variants::PREVIEW, variants::HLS]
                .iter()
                .filter_map(|name| variants::file_name(name))
                .any(|name| name == file);
            counted.then_some(Hit::View)
        }
        None => (first_byte == 0).then_some(Hit::Download),
    }
}

/// The in-memory counters and their flusher. Cheap to clone (shared).
#[derive(Clone)]
pub struct Analytics {
    pending: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    rpc: RpcClient,
}

impl Analytics {
    /// Counters flushed through `rpc`; call [`Analytics::spawn_flusher`] to flush periodically.
    pub fn new(rpc: RpcClient) -> Self {
        Self { pending: Arc::default(), rpc }
    }

    /// Starts the task that flushes every [`FLUSH_INTERVAL`]; it ends when every clone of this
    /// `Analytics` is gone.
    pub fn spawn_flusher(&self) {
        let weak = Arc::downgrade(&self.pending);
        let rpc = self.rpc.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pending) = weak.upgrade() else { return };
                Self { pending, rpc: rpc.clone() }.flush().await;
            }
        });
    }

    /// Counts the serving of blob `key` of media `id` from byte `first_byte` ([`classify`]).
    pub fn record(&self, id: &str, key: &str, first_byte: u64) {
        let Some(hit) = classify(key, first_byte) else { return };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let len = pending.len();
        let counts = match pending.get_mut(id) {
            Some(counts) => counts,
            None if len >= MAX_PENDING_IDS => {
                tracing::warn!(%id, "analytics: too many media pending a flush; hit dropped");
                return;
            }
            None => pending.entry(id.to_owned()).or_default(),
        };
        match hit {
            Hit::View => counts.0 += 1,
            Hit::Download => counts.1 += 1,
        }
    }

    /// Sends everything gathered so far, in batches of at most [`MAX_ANALYTICS_BATCH`] ids; a
    /// batch that fails goes back into the counters for the next flush.
    pub async fn flush(&self) {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let counts: Vec<MediaStats> =
            taken.into_iter().map(|(id, (views, downloads))| MediaStats { id, views, downloads }).collect();
        for chunk in counts.chunks(MAX_ANALYTICS_BATCH) {
            let batch = AnalyticsBatch { counts: chunk.to_vec() };
            if let Err(e) = self.rpc.call::<_, Value>(subjects::MEDIA_ANALYTICS, &batch).await {
                tracing::warn!(error = %e, ids = chunk.len(), "analytics flush failed; kept for the next one");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                for c in batch.counts {
                    let counts = pending.entry(c.id).or_default();
                    counts.0 += c.views;
                    counts.1 += c.downloads;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn originals_from_byte_zero_are_downloads_and_variants_views() {
        assert_eq!(classify("ab/cd/xyz", 0), Some(Hit::Download));
        assert_eq!(classify("ab/cd/xyz", 1024), None, "a follow-up range");
        assert_eq!(classify("variants/m1/thumb.webp", 0), Some(Hit::View));
        assert_eq!(classify("variants/m1/preview.jpg", 100), Some(Hit::View));
        assert_eq!(classify("variants/m1/hls/master.m3u8", 0), Some(Hit::View));
        assert_eq!(classify("variants/m1/hls/720p/index.m3u8", 0), None);
        assert_eq!(classify("variants/m1/hls/720p/seg_1.m4s", 0), None);
        assert_eq!(classify("variants/m1", 0), None);
    }
}
