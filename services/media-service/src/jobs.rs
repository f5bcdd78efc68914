//! Processing jobs (DESIGN §9): every stored upload the media processor understands is created
//! `PROCESSING` and gets a job on the JetStream work-queue stream [`jobs::STREAM`]; the
//! processor ends it `READY` or `FAILED`. `media.reprocess` queues the job again.
//!
//! A job is published with an acknowledgement from JetStream (the stream has stored it) and a
//! `Nats-Msg-Id` (`process:<mediaId>:<checksum>`), so a publish retried within the stream's
//! duplicate window makes no second job. It carries the request's `traceparent`, never its
//! `Authorization`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use mediabus_contracts::jobs::{self, ProcessJob};
use mediabus_contracts::requests::MediaRef;
use mediabus_contracts::{Media, MediaStatus, MediaType, Timestamp, subjects};
use mediabus_rpc::Ctx;
use mediabus_store::ProcessingStore;

use crate::AppState;
use crate::access::{Caller, can_read, can_write};
use crate::error::{MediaError, Result};

/// How long a job publish waits for JetStream's acknowledgement: an upload's reply waits for it.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// `failureReason` of an upload whose job could not be queued.
pub const NOT_QUEUED: &str = "processing could not be started; retry with media.reprocess";

/// Image types the processor decodes (its `image` module); other images are stored as they are.
const PROCESSED_IMAGES: [&str; 6] = ["image/jpeg", "image/png", "image/gif", "image/webp", "image/tiff", "image/bmp"];

/// Whether media of this type and sniffed MIME type get a processing job: decodable images, every
/// video and audio (ffmpeg reads them), PDF.
pub fn needs_processing(media_type: MediaType, mime_type: &str) -> bool {
    match media_type {
        MediaType::Image => PROCESSED_IMAGES.contains(&mime_type),
        MediaType::Video | MediaType::Audio => true,
        MediaType::Document => mime_type == "application/pdf",
        MediaType::Other => false,
    }
}

/// The stream's configuration, the same in the media service and the processor (whichever starts
/// first creates it): work-queue retention (a job is deleted once a processor acks it), one
/// subject, file storage, [`jobs::MAX_AGE`] and the [`jobs::DUPLICATE_WINDOW`] of `Nats-Msg-Id`.
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

/// Queues processing jobs and settles the documents when a job cannot be queued.
#[derive(Clone)]
pub struct Jobs {
    js: jetstream::Context,
    store: Arc<dyn ProcessingStore>,
}

impl Jobs {
    /// Jobs published on `nats` (JetStream), documents settled through `store`.
    pub fn new(nats: async_nats::Client, store: Arc<dyn ProcessingStore>) -> Self {
        let mut js = jetstream::new(nats);
        js.set_timeout(PUBLISH_TIMEOUT);
        Self { js, store }
    }

    /// The conditional writes of processing (`media.reprocess` restarts through it).
    pub fn store(&self) -> &Arc<dyn ProcessingStore> {
        &self.store
    }

    /// Creates the stream [`jobs::STREAM`] with `replicas` replicas if it does not exist (every
    /// worker may race to); see [`mediabus_rpc::streams::ensure_stream`].
    ///
    /// Errors: JetStream disabled or refusing the configuration.
    pub async fn ensure_stream(&self, replicas: usize) -> Result<(), String> {
        mediabus_rpc::streams::ensure_stream(&self.js, stream_config(), replicas).await.map(drop)
    }

    /// Publishes the job of `media` with `msg_id` as `Nats-Msg-Id`, waiting for JetStream to
    /// store it.
    ///
    /// Errors: no checksum (media registered by URL), JetStream unreachable, or no ack in time.
    pub async fn publish(&self, media: &Media, msg_id: &str, traceparent: Option<&str>) -> Result<(), String> {
        let checksum = media.checksum.clone().ok_or("media without stored bytes")?;
        let job = ProcessJob { media_id: media.id.clone(), checksum };
        let body = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        if let Some(traceparent) = traceparent {
            headers.insert("traceparent", traceparent);
        }
        // `headers` replaces the builder's map: set it first, or it would drop `Nats-Msg-Id`.
        let publish = PublishMessage::build().headers(headers).payload(body.into()).message_id(msg_id);
        let ack = self.js.send_publish(jobs::SUBJECT, publish).await.map_err(|e| e.to_string())?;
        ack.await.map(drop).map_err(|e| e.to_string())
    }

    /// After an upload's document is stored: queues its job if it is `PROCESSING`, and returns
    /// the document to reply with.
    ///
    /// If the job cannot be queued, the media ends `FAILED` with [`NOT_QUEUED`] as its reason,
    /// rather than staying `PROCESSING`: nothing would ever finish it (no job exists), so a
    /// client waiting for `READY` or `FAILED` would wait forever. The bytes stay stored and
    /// served; the owner (or a retry of the operator) queues it again with `media.reprocess`.
    pub async fn after_upload(&self, media: Media, traceparent: Option<&str>) -> Media {
        if media.status != MediaStatus::Processing {
            return media;
        }
        let job_id = ProcessJob { media_id: media.id.clone(), checksum: media.checksum.clone().unwrap_or_default() };
        match self.publish(&media, &job_id.msg_id(), traceparent).await {
            Ok(()) => media,
            Err(e) => {
                tracing::error!(id = %media.id, error = %e, "could not queue the processing job");
                self.fail_unqueued(media).await
            }
        }
    }

    /// Marks `media` (`PROCESSING`, no job queued) `FAILED` with [`NOT_QUEUED`]; returns it as
    /// stored, or as it was if the store fails too (then it stays `PROCESSING` until reprocessed).
    pub async fn fail_unqueued(&self, media: Media) -> Media {
        let checksum = media.checksum.clone().unwrap_or_default();
        let failed = self
            .store
            .finish_processing(&media.id, &checksum, MediaStatus::Failed, Some(NOT_QUEUED.into()), Timestamp::now())
            .await;
        match failed {
            Ok(Some(failed)) => failed,
            Ok(None) => media,
            Err(e) => {
                tracing::error!(id = %media.id, error = %e, "could not mark an unqueued media FAILED");
                media
            }
        }
    }
}

/// `media.reprocess {id}`: owner or admin (404 for a media the caller cannot see, as
/// `media.findOne`; 403 for a public one they do not own). Sets the media `PROCESSING` (clearing
/// `failureReason`, `details` and `variants`), queues its job again with a `Nats-Msg-Id` unique
/// to this request, and returns the document. Emits `media.updated`.
///
/// Errors: 401 anonymous; 404 as above or removed; 400 `VALIDATION_FAILED` for media without
/// processing (registered by URL, or a type the processor does not handle); 503 when the job
/// cannot be queued (the media is then `FAILED` with [`NOT_QUEUED`]; retrying is safe).
pub async fn reprocess(ctx: Ctx<AppState>, input: MediaRef) -> Result<Media> {
    let caller = Caller::from_ctx(&ctx, &ctx.state.verifier)?;
    caller.require()?;
    let who = caller.acting_for(input.user_id.as_deref()).expect("signed in");
    let state = &ctx.state;
    let record = state.store.get(&input.id).await?.ok_or(MediaError::NotFound)?;
    if !can_read(Some(&who), &record.media) {
        return Err(MediaError::NotFound);
    }
    if !can_write(Some(&who), &record.media) {
        return Err(MediaError::Forbidden("only the owner or an admin may reprocess this media"));
    }
    let media = &record.media;
    if record.storage_key.is_none() || !needs_processing(media.media_type, &media.mime_type) {
        return Err(MediaError::Invalid("this media has no processing (registered by URL, or not processed)".into()));
    }
    let restarted = state.jobs.store().restart_processing(&input.id, Timestamp::now()).await?;
    let media = restarted.ok_or(MediaError::NotFound)?.media;
    let traceparent = ctx.header("traceparent");
    if let Err(e) = state.jobs.publish(&media, &reprocess_msg_id(&media), traceparent).await {
        tracing::error!(id = %media.id, error = %e, "could not queue the processing job again");
        let failed = state.jobs.fail_unqueued(media).await;
        state.events.emit(subjects::MEDIA_UPDATED, &failed, ctx.forwarded_headers()).await;
        return Err(MediaError::Store(mediabus_store::StoreError::Backend(format!("job not queued: {e}"))));
    }
    state.events.emit(subjects::MEDIA_UPDATED, &media, ctx.forwarded_headers()).await;
    Ok(media)
}

/// A `Nats-Msg-Id` unique to one `media.reprocess` request (see [`ProcessJob::reprocess_msg_id`]).
pub fn reprocess_msg_id(media: &Media) -> String {
    let job = ProcessJob { media_id: media.id.clone(), checksum: media.checksum.clone().unwrap_or_default() };
    job.reprocess_msg_id(&nuid::next().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processable_media_are_images_video_audio_and_pdf() {
        assert!(needs_processing(MediaType::Image, "image/jpeg"));
        assert!(!needs_processing(MediaType::Image, "image/avif"), "no decoder: stored as is");
        assert!(needs_processing(MediaType::Video, "video/webm"));
        assert!(needs_processing(MediaType::Audio, "audio/mpeg"));
        assert!(needs_processing(MediaType::Document, "application/pdf"));
        assert!(!needs_processing(MediaType::Document, "text/plain"));
        assert!(!needs_processing(MediaType::Other, "application/zip"));
    }
}
