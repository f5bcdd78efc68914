//! The processing queue (DESIGN §9): what the media service puts on the JetStream work-queue
//! stream [`STREAM`] and what the media processors take from it, plus the dead letters an
//! operator reads from [`DLQ_STREAM`].
//!
//! A job names a media and the checksum of the bytes to process; the processor reads everything
//! else from the document store, so a job stays valid (or is recognised as stale) whatever
//! happened to the media since it was queued.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// JetStream work-queue stream of processing jobs (a message is removed once a processor acks it).
pub const STREAM: &str = "MEDIA_JOBS";
/// Subject of a processing job, the only subject of [`STREAM`].
pub const SUBJECT: &str = "jobs.media.process";
/// How long [`STREAM`] keeps a job no processor took: 7 days.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Within this window JetStream drops a job whose `Nats-Msg-Id` it already stored: 2 minutes.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Durable pull consumer shared by every media-processor worker.
pub const CONSUMER: &str = "media-processor";
/// Stream of dead letters: jobs that failed on every delivery (limits retention, kept for an
/// operator to list with `nats stream view MEDIA_JOBS_DLQ`).
pub const DLQ_STREAM: &str = "MEDIA_JOBS_DLQ";
/// Subject of a dead letter ([`DeadJob`]), the only subject of [`DLQ_STREAM`].
pub const DLQ_SUBJECT: &str = "jobs.media.dead";
/// Stream keeping JetStream's max-deliveries advisories of [`CONSUMER`] (jobs whose last delivery
/// was never acked) until a processor has handled them, so none is lost while no processor runs.
pub const EXHAUSTED_STREAM: &str = "MEDIA_JOBS_EXHAUSTED";
/// Subject of those advisories, the only subject of [`EXHAUSTED_STREAM`]: JetStream's
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>` for [`STREAM`] and [`CONSUMER`].
pub const EXHAUSTED_SUBJECT: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MEDIA_JOBS.media-processor";

/// Body of a job on [`SUBJECT`] (JSON).
///
/// ```json
/// {"mediaId": "k3x…", "checksum": "sha256:9f86…"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessJob {
    /// The media to process.
    pub media_id: String,
    /// `sha256:<hex>` of the bytes the job is for. A processor skips a job whose checksum is no
    /// longer the media's (the job is stale).
    pub checksum: String,
}

impl ProcessJob {
    /// `Nats-Msg-Id` of the job queued when the upload is stored: `process:<mediaId>:<checksum>`,
    /// so a retried upload within the stream's duplicate window queues no second job.
    pub fn msg_id(&self) -> String {
        format!("process:{}:{}", self.media_id, self.checksum)
    }

    /// `Nats-Msg-Id` of a job queued again by `media.reprocess`: [`ProcessJob::msg_id`] plus a
    /// `nonce` unique to the request, so deduplication never swallows a reprocess.
    pub fn reprocess_msg_id(&self, nonce: &str) -> String {
        format!("{}:reprocess:{nonce}", self.msg_id())
    }
}

/// Body of a dead letter on [`DLQ_SUBJECT`] (JSON): the job, how often it was delivered, and
/// the last error (for the operator; the owner sees the media's `failureReason`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadJob {
    pub job: ProcessJob,
    /// Deliveries made before the job was given up (the consumer's `max_deliver`).
    pub deliveries: u64,
    /// The last error, as logged.
    pub error: String,
    /// When the job was given up (RFC 3339).
    pub failed_at: crate::Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_use_contract_names_and_ids() {
        let job = ProcessJob { media_id: "m1".into(), checksum: "sha256:ab".into() };
        assert_eq!(serde_json::to_value(&job).unwrap(), serde_json::json!({"mediaId": "m1", "checksum": "sha256:ab"}));
        assert_eq!(job.msg_id(), "process:m1:sha256:ab");
        assert_ne!(job.reprocess_msg_id("n1"), job.reprocess_msg_id("n2"));
        assert_eq!(EXHAUSTED_SUBJECT, format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.{CONSUMER}"));
    }
}
