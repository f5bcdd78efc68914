//! The job runtime (DESIGN §9): the JetStream work-queue stream `MEDIA_JOBS`, the one durable
//! pull consumer every processor shares, and the loop that pulls jobs and runs them
//! ([`crate::worker`]).
//!
//! - Explicit ack: a job is acked once its media is finished (or the job is stale).
//! - While a job runs it sends `AckKind::Progress` every third of `ack_wait`, so a transcode of
//!   many minutes is not redelivered; a worker that dies stops sending them, and after
//!   `ack_wait` the job goes to another worker.
//! - A transient failure naks with a delay that doubles with each delivery
//!   ([`crate::config::JobSettings::backoff`]); on the last of `max_deliver` deliveries the job
//!   is written to the dead-letter stream `MEDIA_JOBS_DLQ` (a [`DeadJob`] an operator lists with
//!   `nats stream view MEDIA_JOBS_DLQ`), its media ends `FAILED`, and the job is acked.
//! - A job whose last delivery is never acked (its processor was SIGKILLed, ran out of memory,
//!   or hung) is not seen by any handler: JetStream then publishes the advisory
//!   [`jobs::EXHAUSTED_SUBJECT`]. The stream [`jobs::EXHAUSTED_STREAM`] (limits retention, kept
//!   [`jobs::MAX_AGE`], like the job itself) stores it even when no processor is connected (the
//!   only one may be the one that died), and a durable pull consumer shared by the processors
//!   hands each advisory to one of them ([`watch_exhausted`]): it reads the job from
//!   `MEDIA_JOBS` by sequence, writes the same dead letter, marks the media `FAILED`
//!   ([`GiveUp::Abandoned`]), deletes the job from the work queue (which keeps a message that ran
//!   out of deliveries until `max_age`), and only then acks the advisory. A step that fails
//!   transiently naks the advisory with the jobs' backoff, and the handling starts over. Nothing
//!   is done twice: a media no longer `PROCESSING` with the job's checksum gets no dead letter and
//!   no event (only the job's deletion), and the dead letter carries a `Nats-Msg-Id` so a retry
//!   within the dead-letter stream's duplicate window (2 min) writes no second one.
//! - `max_ack_pending` bounds the jobs in flight across all workers; each worker runs at most
//!   `jobs.concurrency` at once and pulls only when it has room.
//! - Shutdown ([`Runtime::shutdown`]): stop pulling, let the jobs in hand finish for
//!   `shutdown_grace_secs`, then hand the rest back (nak without delay) for another worker. A
//!   job handed back on its last delivery has none left: the advisory above then gives it up.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, stream};
use futures_util::StreamExt;
use mediabus_contracts::Timestamp;
use mediabus_contracts::jobs::{self, DeadJob, ProcessJob};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{JobSettings, Settings};
use crate::worker::{GiveUp, Outcome, Worker};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DevSecret(#[from] mediabus_config::DevSecretError),
    #[error("document store: {0}")]
    Store(#[from] mediabus_store::StoreError),
    #[error("file store: {0}")]
    Storage(#[from] mediabus_storage::StorageError),
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// The stream of jobs, as the media service creates it (whichever starts first): work-queue
/// retention, one subject, [`jobs::MAX_AGE`], [`jobs::DUPLICATE_WINDOW`].
pub fn stream_config() -> stream::Config {
    stream::Config {
        name: jobs::STREAM.into(),
        subjects: vec![jobs::SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        max_age: jobs::MAX_AGE,
        duplicate_window: jobs::DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The dead-letter stream: limits retention (kept for `days`, listed by operators).
pub fn dead_letter_config(days: u64) -> stream::Config {
    stream::Config {
        name: jobs::DLQ_STREAM.into(),
        subjects: vec![jobs::DLQ_SUBJECT.into()],
        max_age: Duration::from_secs(days.max(1) * 24 * 3600),
        ..Default::default()
    }
}

/// The shared durable consumer, configured from `settings` (created, or updated to these
/// settings if it exists: the last worker started sets them).
pub fn consumer_config(settings: &JobSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(jobs::CONSUMER.into()),
        description: Some("media-processor workers (mediabus)".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait(),
        max_deliver: settings.max_deliver(),
        max_ack_pending: settings.max_ack_pending.max(1),
        ..Default::default()
    }
}

/// The stream of max-deliveries advisories ([`jobs::EXHAUSTED_STREAM`]): limits retention, one
/// subject, kept [`jobs::MAX_AGE`] (past that the job it names has left `MEDIA_JOBS` too). Handled
/// advisories stay until then (acked, so not delivered again): `nats stream view` shows the
/// history.
pub fn exhausted_config() -> stream::Config {
    stream::Config {
        name: jobs::EXHAUSTED_STREAM.into(),
        subjects: vec![jobs::EXHAUSTED_SUBJECT.into()],
        max_age: jobs::MAX_AGE,
        ..Default::default()
    }
}

/// The durable consumer of [`jobs::EXHAUSTED_STREAM`] the processors share (named
/// [`jobs::CONSUMER`] too): explicit ack, every advisory from the start of the stream, no
/// delivery limit (a handling that fails is retried after a nak delay until it succeeds or the
/// advisory ages out), [`EXHAUSTED_ACK_WAIT`].
pub fn exhausted_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(jobs::CONSUMER.into()),
        description: Some("media-processor workers: jobs out of deliveries (mediabus)".into()),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: EXHAUSTED_ACK_WAIT,
        ..Default::default()
    }
}

/// Ack wait of [`exhausted_consumer_config`]: a handling takes a few round trips; a processor that
/// dies in the middle of one leaves the advisory to another after this long.
pub const EXHAUSTED_ACK_WAIT: Duration = Duration::from_secs(30);

/// The fields of the max-deliveries advisory (`io.nats.jetstream.advisory.v1.max_deliver`) used here.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    /// Sequence of the job in [`jobs::STREAM`].
    stream_seq: u64,
    /// Deliveries made (the consumer's `max_deliver`).
    deliveries: u64,
}

/// A started runtime: pulling and running jobs until [`Runtime::shutdown`].
pub struct Runtime {
    stop: CancellationToken,
    hand_back: CancellationToken,
    tasks: TaskTracker,
    puller: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
    grace: Duration,
    nats: async_nats::Client,
}

/// Opens the stores, creates the streams and the consumer, and starts pulling.
///
/// Errors: development secrets outside `env = dev`, a store that cannot be opened, JetStream
/// unavailable or refusing the configuration.
pub async fn start(settings: Settings, nats: async_nats::Client) -> Result<Runtime, StartError> {
    settings.refuse_dev_secrets()?;
    let store = mediabus_store::open(&settings.store).await?;
    let processing = mediabus_store::open_processing(&settings.store).await?;
    let blobs = settings.storage.open().await?;
    let js = jetstream::new(nats.clone());
    let jet = |e: &dyn std::fmt::Display| StartError::JetStream(e.to_string());
    let replicas = settings.jetstream.replicas;
    let stream = mediabus_rpc::streams::ensure_stream(&js, stream_config(), replicas).await.map_err(|e| jet(&e))?;
    mediabus_rpc::streams::ensure_stream(&js, dead_letter_config(settings.jobs.dead_letter_days), replicas)
        .await
        .map_err(|e| jet(&e))?;
    // Created before the first pull, so no job this worker takes can run out unrecorded.
    let exhausted =
        mediabus_rpc::streams::ensure_stream(&js, exhausted_config(), replicas).await.map_err(|e| jet(&e))?;
    let advisories: PullConsumer = exhausted.create_consumer(exhausted_consumer_config()).await.map_err(|e| jet(&e))?;
    let consumer: PullConsumer = stream.create_consumer(consumer_config(&settings.jobs)).await.map_err(|e| jet(&e))?;
    tokio::spawn(report_pending(consumer.clone()));
    let settings = Arc::new(settings);
    let worker = Worker::new(store, processing, blobs, nats.clone(), settings.clone());
    let (stop, hand_back, tasks) = (CancellationToken::new(), CancellationToken::new(), TaskTracker::new());
    let watcher = tokio::spawn(watch_exhausted(
        advisories,
        Exhausted { stream, js: js.clone(), worker: worker.clone() },
        settings.clone(),
        stop.clone(),
    ));
    let puller = tokio::spawn(pull_loop(Pull {
        consumer,
        js,
        worker,
        settings: settings.clone(),
        stop: stop.clone(),
        hand_back: hand_back.clone(),
        tasks: tasks.clone(),
    }));
    tracing::info!(concurrency = settings.jobs.concurrency.max(1), "processing jobs");
    Ok(Runtime {
        stop,
        hand_back,
        tasks,
        puller,
        watcher,
        grace: Duration::from_secs(settings.jobs.shutdown_grace_secs),
        nats,
    })
}

impl Runtime {
    /// Stops pulling, waits up to the grace period for the jobs in hand, hands back (naks) the
    /// ones still running, and flushes the acks.
    pub async fn shutdown(self) {
        self.stop.cancel();
        // The grace period starts now, not once the loops have ended: a loop may be waiting for
        // its pull to expire (`pull_expires_ms`), and a job must not outlive a zero grace by that.
        let hand_back = self.hand_back.clone();
        let grace = self.grace;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            tracing::info!("grace period over: handing the jobs in hand back");
            hand_back.cancel();
        });
        let _ = self.puller.await;
        // The advisory in hand is handled (and acked) first; the next ones wait in their stream.
        let _ = self.watcher.await;
        self.tasks.close();
        self.tasks.wait().await;
        timer.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.nats.flush()).await;
        tracing::info!("stopped");
    }
}

/// What the pull loop needs.
struct Pull {
    consumer: PullConsumer,
    js: jetstream::Context,
    worker: Worker,
    settings: Arc<Settings>,
    stop: CancellationToken,
    hand_back: CancellationToken,
    tasks: TaskTracker,
}

/// `mediabus_jobs_pending`: the consumer's `num_pending` (jobs not yet delivered to any worker),
/// polled every 5 s for as long as the process runs (a no-op gauge without `metrics.listen`).
async fn report_pending(mut consumer: PullConsumer) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        match consumer.info().await {
            Ok(info) => metrics::gauge!("mediabus_jobs_pending").set(info.num_pending as f64),
            Err(e) => tracing::debug!(error = %e, "cannot read the job consumer's info"),
        }
    }
}

/// `mediabus_jobs_total{kind,outcome}` and `mediabus_job_duration_seconds{kind}`: `kind` is the
/// media type in lowercase (`image`, `video`, ...; `unknown` when the job ended before the media
/// was read), `outcome` one of `ready`, `failed`, `skipped`, `retry`, `dead_letter`.
fn record_job(kind: &str, outcome: &'static str, seconds: f64) {
    metrics::counter!("mediabus_jobs_total", "kind" => kind.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!("mediabus_job_duration_seconds", "kind" => kind.to_owned()).record(seconds);
}

/// Pulls one job whenever a slot is free and runs it on its own task, until `stop`.
async fn pull_loop(pull: Pull) {
    let slots = Arc::new(Semaphore::new(pull.settings.jobs.concurrency.max(1)));
    let expires = Duration::from_millis(pull.settings.jobs.pull_expires_ms.max(100));
    loop {
        let permit = tokio::select! {
            // Stop first: `select!` otherwise picks at random among the ready branches.
            biased;
            () = pull.stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
        };
        let Some(message) = next_message(&pull.consumer, expires, &pull.stop, "jobs").await else { return };
        let job = Job {
            js: pull.js.clone(),
            worker: pull.worker.clone(),
            settings: pull.settings.clone(),
            hand_back: pull.hand_back.clone(),
        };
        // The job continues the trace of the upload that queued it (its `traceparent`): every log
        // line of the job carries that trace id.
        let trace = mediabus_telemetry::trace::TraceContext::from_headers(message.headers.as_ref())
            .unwrap_or_else(mediabus_telemetry::trace::TraceContext::new_root);
        let span = tracing::info_span!("job", trace_id = %trace.trace_id_hex());
        trace.attach_to(&span);
        pull.tasks.spawn(
            async move {
                job.handle(message).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// The next message of `consumer`, pulled one at a time (each pull ends within `expires`), or
/// `None` once `stop` is cancelled. A pull that fails is retried after a second; `what` names the
/// messages in the log. A message that arrives after `stop` is handed back at once (nak without
/// delay) rather than left to time out: the pull itself is not raced with `stop`, since it ends
/// by itself within `expires`.
async fn next_message(
    consumer: &PullConsumer,
    expires: Duration,
    stop: &CancellationToken,
    what: &str,
) -> Option<jetstream::Message> {
    loop {
        let batch = tokio::select! {
            // Stop first: a new pull started after it would hold the shutdown for `expires`.
            biased;
            () = stop.cancelled() => return None,
            batch = consumer.batch().max_messages(1).expires(expires).messages() => batch,
        };
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull {what}; retrying");
                backoff_or_stop(stop).await;
                continue;
            }
        };
        let message = match batch.next().await {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pull of {what} ended");
                continue;
            }
        };
        if stop.is_cancelled() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return None;
        }
        return Some(message);
    }
}

/// One second, or less if `stop` comes first.
async fn backoff_or_stop(stop: &CancellationToken) {
    tokio::select! { () = tokio::time::sleep(Duration::from_secs(1)) => {}, () = stop.cancelled() => {} }
}

/// What handling one message needs.
struct Job {
    js: jetstream::Context,
    worker: Worker,
    settings: Arc<Settings>,
    hand_back: CancellationToken,
}

impl Job {
    /// Runs one delivered job to an ack, a nak, or a dead letter. Never panics on bad input.
    async fn handle(self, message: jetstream::Message) {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let job: ProcessJob = match serde_json::from_slice(&message.payload) {
            Ok(job) => job,
            Err(e) => {
                // It can never succeed: terminate it (no redelivery).
                tracing::error!(error = %e, "malformed job, dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let traceparent = message.headers.as_ref().and_then(|h| h.get("traceparent")).map(|v| v.as_str().to_owned());
        let started = std::time::Instant::now();
        let run = self.worker.run(&job, traceparent.as_deref());
        tokio::pin!(run);
        let mut heartbeat = tokio::time::interval(self.settings.jobs.heartbeat());
        heartbeat.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = heartbeat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(id = %job.media_id, error = %e, "heartbeat failed");
                    }
                }
                () = self.hand_back.cancelled() => {
                    // Dropping `run` kills its ffmpeg (kill_on_drop) and removes its temp files.
                    tracing::info!(id = %job.media_id, "handing the job back");
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return;
                }
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(outcome) => {
                match &outcome {
                    Outcome::Finished(media) => {
                        let kind = media.media_type.as_str().to_ascii_lowercase();
                        let done =
                            if media.status == mediabus_contracts::MediaStatus::Ready { "ready" } else { "failed" };
                        record_job(&kind, done, seconds);
                        tracing::info!(id = %job.media_id, status = media.status.as_str(), seconds, "job done")
                    }
                    Outcome::Skipped(why) => {
                        record_job("unknown", "skipped", seconds);
                        tracing::info!(id = %job.media_id, why, "job skipped")
                    }
                }
                ack(&message, &job).await;
            }
            Err(e) if delivered >= self.settings.jobs.max_deliver() => {
                tracing::error!(id = %job.media_id, delivered, error = %e, "job failed on its last delivery");
                record_job("unknown", "dead_letter", seconds);
                let dead = DeadJob {
                    job: job.clone(),
                    deliveries: delivered.max(0) as u64,
                    error: e.to_string(),
                    failed_at: Timestamp::now(),
                };
                dead_letter(&self.js, &dead, None).await;
                match self.worker.give_up(&job, GiveUp::Failing, traceparent.as_deref()).await {
                    Ok(_) => ack(&message, &job).await,
                    Err(e) => {
                        // The dead letter is written; the media stays PROCESSING until reprocessed.
                        tracing::error!(id = %job.media_id, error = %e, "could not mark the media FAILED");
                        ack(&message, &job).await;
                    }
                }
            }
            Err(e) => {
                let delay = self.settings.jobs.backoff(delivered);
                record_job("unknown", "retry", seconds);
                tracing::warn!(id = %job.media_id, delivered, retry_in = ?delay, error = %e, "job failed; will retry");
                if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(id = %job.media_id, error = %e, "nak failed (redelivered after ack_wait)");
                }
            }
        }
    }
}

/// Writes `dead` to the dead-letter stream (with JetStream's ack; three tries), with `msg_id` as
/// its `Nats-Msg-Id` when given (the stream drops a second letter with the same id within its
/// duplicate window). A dead letter that cannot be written is logged with its job, so the
/// operator still finds it. Returns whether it was written (or already was).
async fn dead_letter(js: &jetstream::Context, dead: &DeadJob, msg_id: Option<&str>) -> bool {
    let id = &dead.job.media_id;
    let Ok(body) = serde_json::to_vec(dead) else { return false };
    for attempt in 1..=3 {
        let mut publish = PublishMessage::build().payload(body.clone().into());
        if let Some(msg_id) = msg_id {
            publish = publish.message_id(msg_id);
        }
        let result = match js.send_publish(jobs::DLQ_SUBJECT, publish).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => return true,
            Err(e) => tracing::warn!(id = %id, attempt, error = %e, "dead letter not written"),
        }
    }
    tracing::error!(id = %id, checksum = %dead.job.checksum, "dead letter not written after 3 tries");
    false
}

/// What handling a max-deliveries advisory needs.
struct Exhausted {
    /// [`jobs::STREAM`]: the job is read from it by sequence and then deleted.
    stream: stream::Stream,
    js: jetstream::Context,
    worker: Worker,
}

/// A step of a give-up that failed and may succeed later: the advisory is nak'ed and handled again.
#[derive(Debug)]
struct Retry(String);

/// Pulls the advisories of [`jobs::EXHAUSTED_STREAM`] one at a time and handles each, until
/// `stop`: ack when handled (or unreadable: terminated), nak with the jobs' backoff when a step
/// failed. They are rare (one per crashed last delivery) and each takes a few round trips, so one
/// at a time is enough.
async fn watch_exhausted(
    consumer: PullConsumer,
    exhausted: Exhausted,
    settings: Arc<Settings>,
    stop: CancellationToken,
) {
    let expires = Duration::from_millis(settings.jobs.pull_expires_ms.max(100));
    loop {
        let Some(message) = next_message(&consumer, expires, &stop, "max-deliveries advisories").await else {
            return;
        };
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let advisory = match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
            Ok(advisory) => advisory,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable max-deliveries advisory, dropped");
                let _ = message.ack_with(AckKind::Term).await;
                continue;
            }
        };
        let seq = advisory.stream_seq;
        match exhausted.handle(advisory).await {
            Ok(()) => {
                if let Err(e) = message.double_ack().await {
                    // Delivered again later: every step is idempotent.
                    tracing::warn!(seq, error = %e, "advisory ack not confirmed");
                }
            }
            Err(Retry(e)) => {
                let delay = settings.jobs.backoff(delivered);
                tracing::warn!(seq, delivered, retry_in = ?delay, error = %e, "job out of deliveries not given up yet; will retry");
                if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                    tracing::warn!(seq, error = %e, "advisory nak failed (redelivered after ack_wait)");
                }
            }
        }
    }
}

impl Exhausted {
    /// Gives up the job at `advisory.stream_seq`: dead letter, media `FAILED`
    /// ([`GiveUp::Abandoned`]), job deleted from the stream. A job already gone (an earlier
    /// handling deleted it) is done. Never panics.
    ///
    /// Errors: [`Retry`] when a step failed (NATS, JetStream or the document store unavailable);
    /// handling the same advisory again is safe.
    async fn handle(&self, advisory: MaxDeliveries) -> Result<(), Retry> {
        let seq = advisory.stream_seq;
        let Some(message) = self.read(seq).await? else { return Ok(()) };
        let traceparent = message.headers.get("traceparent").map(|v| v.as_str().to_owned());
        let trace = mediabus_telemetry::trace::TraceContext::from_headers(Some(&message.headers))
            .unwrap_or_else(mediabus_telemetry::trace::TraceContext::new_root);
        let span = tracing::info_span!("job", trace_id = %trace.trace_id_hex());
        trace.attach_to(&span);
        self.give_up(seq, &message, advisory.deliveries, traceparent.as_deref()).instrument(span).await
    }

    /// The job at `seq`, or `None` when it is gone (deleted by an earlier handling, or acked).
    async fn read(&self, seq: u64) -> Result<Option<jetstream::message::StreamMessage>, Retry> {
        use jetstream::stream::RawMessageErrorKind;
        match self.stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                tracing::debug!(seq, "job out of deliveries is already gone");
                Ok(None)
            }
            Err(e) => Err(Retry(format!("cannot read job {seq}: {e}"))),
        }
    }

    /// Dead letter and `FAILED` for a job still pending, then the job's deletion.
    async fn give_up(
        &self,
        seq: u64,
        message: &jetstream::message::StreamMessage,
        deliveries: u64,
        tp: Option<&str>,
    ) -> Result<(), Retry> {
        match serde_json::from_slice::<ProcessJob>(&message.payload) {
            Err(e) => tracing::error!(seq, error = %e, "malformed job out of deliveries, deleted"),
            Ok(job) => match self.worker.is_pending(&job).await {
                Ok(false) => tracing::info!(id = %job.media_id, seq, "job out of deliveries was already finished"),
                Err(e) => return Err(Retry(format!("cannot read media {}: {e}", job.media_id))),
                Ok(true) => {
                    tracing::error!(id = %job.media_id, seq, deliveries, "job abandoned on its last delivery");
                    let error = format!(
                        "delivery {deliveries} of {deliveries} was never acked: the processor running it stopped \
                         (killed, out of memory, or handed it back on shutdown) or hung past ack_wait"
                    );
                    let dead = DeadJob { job: job.clone(), deliveries, error, failed_at: Timestamp::now() };
                    // One id per job of the work queue: a retried handling writes no second letter.
                    let msg_id = format!("exhausted:{}:{seq}", jobs::STREAM);
                    if !dead_letter(&self.js, &dead, Some(&msg_id)).await {
                        return Err(Retry(format!("dead letter for media {} not written", job.media_id)));
                    }
                    if let Err(e) = self.worker.give_up(&job, GiveUp::Abandoned, tp).await {
                        return Err(Retry(format!("could not mark media {} FAILED: {e}", job.media_id)));
                    }
                    // Counted, not timed: how long the dead processor ran is not known here.
                    metrics::counter!("mediabus_jobs_total", "kind" => "unknown", "outcome" => "dead_letter")
                        .increment(1);
                }
            },
        }
        // A work queue keeps a message that ran out of deliveries (no consumer will take it again).
        match self.stream.delete_message(seq).await {
            Ok(_) => Ok(()),
            Err(e) if is_no_message(&e) => Ok(()),
            Err(e) => Err(Retry(format!("could not delete job {seq}: {e}"))),
        }
    }
}

/// Whether deleting a message failed because it is already gone (deleted by an earlier handling).
fn is_no_message(e: &jetstream::stream::DeleteMessageError) -> bool {
    matches!(e.kind(), jetstream::stream::DeleteMessageErrorKind::JetStream(js)
        if js.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND)
}

/// Acks `message` and waits for the server to confirm, so a finished job is not redelivered.
async fn ack(message: &jetstream::Message, job: &ProcessJob) {
    if let Err(e) = message.double_ack().await {
        // Redelivered later: the run then finds the media finished and acks again.
        tracing::warn!(id = %job.media_id, error = %e, "ack not confirmed");
    }
}
