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
//!   [`max_deliveries_subject`]. Every processor listens on one queue group, so exactly one takes
//!   it ([`watch_exhausted`]): it reads the job from the stream by sequence, writes the same dead
//!   letter, marks the media `FAILED` ([`GiveUp::Abandoned`]), and deletes the job from the
//!   stream (a work queue keeps a message that ran out of deliveries until `max_age`). Nothing is
//!   done twice: a media no longer `PROCESSING` with the job's checksum gets no dead letter and
//!   no event. A core NATS advisory is lost when no processor is connected at that moment; the
//!   job then stays in the stream and its media `PROCESSING` until `media.reprocess`.
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

/// Subject of the JetStream advisory published when a job of the shared consumer runs out of
/// deliveries without being acked: `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.MEDIA_JOBS.media-processor`.
pub fn max_deliveries_subject() -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}", jobs::STREAM, jobs::CONSUMER)
}

/// Queue group of the advisory subscription: one processor handles each advisory.
const ADVISORY_QUEUE: &str = "media-processor";

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
    let consumer: PullConsumer = stream.create_consumer(consumer_config(&settings.jobs)).await.map_err(|e| jet(&e))?;
    // Subscribed before the first pull, so no job this worker takes can run out unseen.
    let advisories =
        nats.queue_subscribe(max_deliveries_subject(), ADVISORY_QUEUE.into()).await.map_err(|e| jet(&e))?;
    tokio::spawn(report_pending(consumer.clone()));
    let settings = Arc::new(settings);
    let worker = Worker::new(store, processing, blobs, nats.clone(), settings.clone());
    let (stop, hand_back, tasks) = (CancellationToken::new(), CancellationToken::new(), TaskTracker::new());
    let watcher = tokio::spawn(watch_exhausted(
        advisories,
        Exhausted { stream, js: js.clone(), worker: worker.clone() },
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
        let _ = self.puller.await;
        // Advisories from now on go to the processors still running (the subscription ends here).
        let _ = self.watcher.await;
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait()).await.is_err() {
            tracing::info!("grace period over: handing the jobs in hand back");
            self.hand_back.cancel();
            self.tasks.wait().await;
        }
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
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            () = pull.stop.cancelled() => return,
        };
        let batch = tokio::select! {
            batch = pull.consumer.batch().max_messages(1).expires(expires).messages() => batch,
            () = pull.stop.cancelled() => return,
        };
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull jobs; retrying");
                backoff_or_stop(&pull.stop).await;
                continue;
            }
        };
        // Not raced with `stop`: a pull ends by itself within `expires`, and a job it brings is
        // then handed back rather than left to time out.
        let message = match batch.next().await {
            None => continue,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pull ended");
                continue;
            }
        };
        if pull.stop.is_cancelled() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
            return;
        }
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
                dead_letter(&self.js, &dead).await;
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

/// Writes `dead` to the dead-letter stream (with JetStream's ack; three tries). A dead letter
/// that cannot be written is logged with its job, so the operator still finds it.
async fn dead_letter(js: &jetstream::Context, dead: &DeadJob) {
    let id = &dead.job.media_id;
    let Ok(body) = serde_json::to_vec(dead) else { return };
    for attempt in 1..=3 {
        let publish = PublishMessage::build().payload(body.clone().into());
        let result = match js.send_publish(jobs::DLQ_SUBJECT, publish).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => return,
            Err(e) => tracing::warn!(id = %id, attempt, error = %e, "dead letter not written"),
        }
    }
    tracing::error!(id = %id, checksum = %dead.job.checksum, "dead letter lost");
}

/// What handling a max-deliveries advisory needs.
struct Exhausted {
    /// [`jobs::STREAM`]: the job is read from it by sequence and then deleted.
    stream: stream::Stream,
    js: jetstream::Context,
    worker: Worker,
}

/// Handles the max-deliveries advisories of this processor's queue group, one at a time, until
/// `stop`. They are rare (one per crashed last delivery) and each takes a few round trips.
async fn watch_exhausted(mut advisories: async_nats::Subscriber, exhausted: Exhausted, stop: CancellationToken) {
    loop {
        let message = tokio::select! {
            message = advisories.next() => message,
            () = stop.cancelled() => return,
        };
        let Some(message) = message else { return };
        match serde_json::from_slice::<MaxDeliveries>(&message.payload) {
            Ok(advisory) => exhausted.handle(advisory).await,
            Err(e) => tracing::warn!(error = %e, "unreadable max-deliveries advisory, ignored"),
        }
    }
}

impl Exhausted {
    /// Gives up the job at `advisory.stream_seq`: dead letter, media `FAILED`
    /// ([`GiveUp::Abandoned`]), job deleted from the stream. Never panics; failures are logged
    /// (the advisory is not sent again, so each step is tried a few times).
    async fn handle(&self, advisory: MaxDeliveries) {
        let seq = advisory.stream_seq;
        let Some(message) = self.read(seq).await else { return };
        let traceparent = message.headers.get("traceparent").map(|v| v.as_str().to_owned());
        let trace = mediabus_telemetry::trace::TraceContext::from_headers(Some(&message.headers))
            .unwrap_or_else(mediabus_telemetry::trace::TraceContext::new_root);
        let span = tracing::info_span!("job", trace_id = %trace.trace_id_hex());
        trace.attach_to(&span);
        self.give_up(seq, &message, advisory.deliveries, traceparent.as_deref()).instrument(span).await;
    }

    /// The job at `seq`, or `None` when it is gone (deleted by an earlier handling, or acked) or
    /// cannot be read.
    async fn read(&self, seq: u64) -> Option<jetstream::message::StreamMessage> {
        use jetstream::stream::RawMessageErrorKind;
        for attempt in 1..=3u64 {
            match self.stream.get_raw_message(seq).await {
                Ok(message) => return Some(message),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
                    tracing::debug!(seq, "job out of deliveries is already gone");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(seq, attempt, error = %e, "cannot read the job out of deliveries");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
            }
        }
        tracing::error!(seq, "job out of deliveries not read: its media stays PROCESSING until reprocessed");
        None
    }

    /// Dead letter and `FAILED` for a job still pending, then the job's deletion.
    async fn give_up(&self, seq: u64, message: &jetstream::message::StreamMessage, deliveries: u64, tp: Option<&str>) {
        match serde_json::from_slice::<ProcessJob>(&message.payload) {
            Err(e) => tracing::error!(seq, error = %e, "malformed job out of deliveries, deleted"),
            Ok(job) => match self.worker.is_pending(&job).await {
                Ok(false) => tracing::info!(id = %job.media_id, seq, "job out of deliveries was already finished"),
                Err(e) => {
                    // Kept in the stream: a later reprocess or an operator can still see it.
                    tracing::error!(id = %job.media_id, seq, error = %e, "cannot read the media of a job out of deliveries");
                    return;
                }
                Ok(true) => {
                    tracing::error!(id = %job.media_id, seq, deliveries, "job abandoned on its last delivery");
                    // Counted, not timed: how long the dead processor ran is not known here.
                    metrics::counter!("mediabus_jobs_total", "kind" => "unknown", "outcome" => "dead_letter")
                        .increment(1);
                    let error = format!(
                        "delivery {deliveries} of {deliveries} was never acked: the processor running it stopped \
                         (killed, out of memory, or handed it back on shutdown) or hung past ack_wait"
                    );
                    let dead = DeadJob { job: job.clone(), deliveries, error, failed_at: Timestamp::now() };
                    dead_letter(&self.js, &dead).await;
                    if let Err(e) = self.worker.give_up(&job, GiveUp::Abandoned, tp).await {
                        tracing::error!(id = %job.media_id, error = %e, "could not mark the media FAILED");
                    }
                }
            },
        }
        // A work queue keeps a message that ran out of deliveries (no consumer will take it again).
        if let Err(e) = self.stream.delete_message(seq).await {
            tracing::warn!(seq, error = %e, "could not delete the job out of deliveries");
        }
    }
}

/// Acks `message` and waits for the server to confirm, so a finished job is not redelivered.
async fn ack(message: &jetstream::Message, job: &ProcessJob) {
    if let Err(e) = message.double_ack().await {
        // Redelivered later: the run then finds the media finished and acks again.
        tracing::warn!(id = %job.media_id, error = %e, "ack not confirmed");
    }
}
