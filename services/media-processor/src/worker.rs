//! One processing job (DESIGN §9): from a [`ProcessJob`] to a media `READY` or `FAILED`.
//!
//! Steps: read the document; skip a job whose media is gone, removed, finished or holds other
//! bytes (its checksum differs); stream the original from the blob store into a temp file;
//! dispatch by type to [`crate::image`], [`crate::video`], [`crate::audio`] or [`crate::pdf`]
//! inside the per-job time limit; write the variants under `variants/<id>/` through the same blob
//! store; finish the document and emit `media.processed`.
//!
//! Documents are read and written through the media service's store directly (the same
//! `StoreConfig`), not through a subject: the writes must be conditional ("still `PROCESSING`
//! with this checksum") and atomic, which [`ProcessingStore`] gives in one step; a subject would
//! add a privileged endpoint that other NATS users must be kept from calling, and a dependency on
//! the media service being up while jobs run. The processor is as trusted as the media service
//! (it holds the same store and blob credentials), so nothing is lost.
//!
//! Idempotent: what a job produces is saved on the document as it goes (`details`, then each
//! variant, [`ProcessingStore::save_progress`]). A redelivered job (a worker died, a timeout)
//! finds those variants, checks their files still exist, and does not make them again; an HLS
//! ladder whose master playlist exists (it is written last) is not transcoded again.

use std::path::Path;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_contracts::jobs::ProcessJob;
use mediabus_contracts::{Media, MediaRecord, MediaStatus, MediaType, Timestamp, Variant, subjects, variants};
use mediabus_rpc::RpcClient;
use mediabus_storage::{BlobStore, ByteStream, StorageError, body_from_bytes};
use mediabus_store::{MediaStore, ProcessingStore, StoreError};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::config::Settings;
use crate::error::{ProcessError, Result};
use crate::image::{self as img, ImageOutput, Rendition};
use crate::{audio, pdf, video};

/// MIME type of the HLS master playlist (RFC 8216).
const HLS_MIME: &str = "application/vnd.apple.mpegurl";
/// Longer side of the PDF page-1 render the `thumb` is made from, px.
const PDF_RENDER_SIDE: u32 = 1280;
/// Chunk size when streaming files to the blob store.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// How a job ended, when it did not fail transiently.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// This job finished the media (`READY` or `FAILED`) and emitted `media.processed`.
    Finished(Box<Media>),
    /// Nothing to do; the text says why (for logs).
    Skipped(&'static str),
}

/// Why a job was given up after its last delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The handler returned an error on every delivery (a store or tool kept failing).
    Failing,
    /// The last delivery was never acked: the processor running it died (SIGKILL, out of
    /// memory) or hung past `ack_wait`, and JetStream reported the job as out of deliveries.
    Abandoned,
}

impl GiveUp {
    /// The media's `failureReason`: for the owner, so it names no host, path or internal error.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Failing => "processing failed repeatedly; try again later with media.reprocess",
            Self::Abandoned => {
                "processing stopped before it could finish (the processor was stopped or may have run out of \
                 memory); try again later with media.reprocess"
            }
        }
    }
}

/// Runs jobs. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    store: Arc<dyn MediaStore>,
    processing: Arc<dyn ProcessingStore>,
    blobs: Arc<dyn BlobStore>,
    events: RpcClient,
    settings: Arc<Settings>,
}

impl Worker {
    /// A worker on the media service's stores (`store` for reads, `processing` for the
    /// conditional writes), its file store, and `nats` for `media.processed`.
    pub fn new(
        store: Arc<dyn MediaStore>,
        processing: Arc<dyn ProcessingStore>,
        blobs: Arc<dyn BlobStore>,
        nats: async_nats::Client,
        settings: Arc<Settings>,
    ) -> Self {
        Self { store, processing, blobs, events: RpcClient::new(nats), settings }
    }

    /// Runs `job` (delivered with `traceparent`, if any).
    ///
    /// `Ok` when the media reached its final state (by this job or before) or the job is stale;
    /// a media at fault (corrupt, over a limit, over the time limit) ends `FAILED` with its
    /// reason and is `Ok` too. Errors: [`ProcessError::Transient`] only (store, blob store,
    /// tools): the caller retries the job later, or gives up ([`Worker::give_up`]).
    pub async fn run(&self, job: &ProcessJob, traceparent: Option<&str>) -> Result<Outcome> {
        let Some(record) = self.store.get(&job.media_id).await.map_err(store_error)? else {
            return Ok(Outcome::Skipped("the media no longer exists"));
        };
        let media = &record.media;
        if media.status == MediaStatus::Deleted {
            return Ok(Outcome::Skipped("the media was removed"));
        }
        if media.checksum.as_deref() != Some(job.checksum.as_str()) {
            return Ok(Outcome::Skipped("the job is for other bytes"));
        }
        if media.status != MediaStatus::Processing {
            return Ok(Outcome::Skipped("the media is already processed"));
        }
        let limit = self.settings.limits.job_timeout();
        let result = match tokio::time::timeout(limit, self.process(&record, job)).await {
            Ok(result) => result,
            Err(_) => Err(ProcessError::rejected(format!(
                "processing took longer than the {} s allowed per media",
                limit.as_secs()
            ))),
        };
        let (status, reason) = match result {
            Ok(Progress::Stale) => return Ok(Outcome::Skipped("the media changed while it was processed")),
            Err(e) if is_stale(&e) => return Ok(Outcome::Skipped("the media changed while it was processed")),
            Ok(Progress::Done) => (MediaStatus::Ready, None),
            Err(ProcessError::Rejected(reason)) => (MediaStatus::Failed, Some(reason)),
            Err(transient @ ProcessError::Transient(_)) => return Err(transient),
        };
        self.finish(job, status, reason, traceparent).await
    }

    /// Ends a job that used up its deliveries: the media becomes `FAILED` with a reason the owner
    /// can read ([`GiveUp::reason`]; the technical error stays in the logs and the dead letter),
    /// and `media.processed` is emitted. Skipped (nothing written, no event) when the media is no
    /// longer this job's: removed, finished, or holding other bytes.
    ///
    /// Errors: the store fails ([`ProcessError::Transient`]).
    pub async fn give_up(&self, job: &ProcessJob, why: GiveUp, traceparent: Option<&str>) -> Result<Outcome> {
        self.finish(job, MediaStatus::Failed, Some(why.reason().to_owned()), traceparent).await
    }

    /// Whether `job` is still its media's pending run: the media exists, is `PROCESSING`, and
    /// holds the bytes of `job.checksum`. A job for which this is false has nothing left to give
    /// up (its media was finished, removed or replaced meanwhile).
    ///
    /// Errors: the store fails ([`ProcessError::Transient`]).
    pub async fn is_pending(&self, job: &ProcessJob) -> Result<bool> {
        let record = self.store.get(&job.media_id).await.map_err(store_error)?;
        Ok(record.is_some_and(|r| {
            r.media.status == MediaStatus::Processing && r.media.checksum.as_deref() == Some(job.checksum.as_str())
        }))
    }

    /// Sets the final status (conditionally) and emits `media.processed` with the document.
    async fn finish(
        &self,
        job: &ProcessJob,
        status: MediaStatus,
        reason: Option<String>,
        traceparent: Option<&str>,
    ) -> Result<Outcome> {
        let finished = self
            .processing
            .finish_processing(&job.media_id, &job.checksum, status, reason, Timestamp::now())
            .await
            .map_err(store_error)?;
        let Some(media) = finished else { return Ok(Outcome::Skipped("the media was finished by another job")) };
        let mut headers = HeaderMap::new();
        if let Some(traceparent) = traceparent {
            headers.insert("traceparent", traceparent);
        }
        // Only the trace context travels with events, never a caller's credentials (DESIGN §10).
        if let Err(e) = self.events.emit(subjects::MEDIA_PROCESSED, &media, headers).await {
            tracing::warn!(id = %media.id, error = %e, "could not publish media.processed");
        }
        Ok(Outcome::Finished(Box::new(media)))
    }

    /// The work itself: download, dispatch, upload, save progress.
    async fn process(&self, record: &MediaRecord, job: &ProcessJob) -> Result<Progress> {
        let media = &record.media;
        let key =
            record.storage_key.as_deref().ok_or_else(|| ProcessError::rejected("the media has no stored file"))?;
        let dir = tempfile::Builder::new().prefix("mediabus-job-").tempdir()?;
        let original = dir.path().join("original");
        self.download(key, &original).await?;
        let mut run =
            Run { worker: self, job, media, details: media.details.clone(), variants: media.variants.clone() };
        match media.media_type {
            MediaType::Image => run.image(&original).await?,
            MediaType::Video => run.video(&original, dir.path()).await?,
            MediaType::Audio => run.audio(&original).await?,
            MediaType::Document if media.mime_type == "application/pdf" => run.pdf(&original, dir.path()).await?,
            // Not queued by the media service; nothing to make.
            _ => {}
        }
        run.save().await
    }

    /// Streams object `key` into a new file at `path` (never whole in memory).
    async fn download(&self, key: &str, path: &Path) -> Result<()> {
        let (_, mut body) = self.blobs.get(key, None).await.map_err(storage_error)?;
        let mut file = tokio::fs::File::create(path).await?;
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.map_err(|e| ProcessError::transient(format!("reading the original: {e}")))?).await?;
        }
        file.flush().await?;
        Ok(())
    }

    /// Whether the file of a variant (or the HLS master) exists in the blob store.
    async fn exists(&self, key: &str) -> Result<bool> {
        match self.blobs.head(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound) => Ok(false),
            Err(e) => Err(storage_error(e)),
        }
    }

    /// Uploads `bytes` under `key`.
    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<u64> {
        let stored = self.blobs.put(key, body_from_bytes(Bytes::from(bytes))).await.map_err(storage_error)?;
        Ok(stored.size)
    }

    /// Streams the file at `path` to `key`.
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64> {
        let file = tokio::fs::File::open(path).await?;
        let stored = self.blobs.put(key, file_stream(file)).await.map_err(storage_error)?;
        Ok(stored.size)
    }

    /// URL of a variant served by the bridge: `{base}/api/media/{id}/content?variant=<name>`, or
    /// `{base}/api/media/{id}/hls/master.m3u8` for `hls`.
    fn variant_url(&self, id: &str, name: &str) -> String {
        let base = self.settings.media.public_base_url.trim_end_matches('/');
        if name == variants::HLS {
            format!("{base}/api/media/{id}/hls/master.m3u8")
        } else {
            format!("{base}/api/media/{id}/content?variant={name}")
        }
    }
}

/// Whether a run got to the end while its media was still its own.
enum Progress {
    Done,
    /// The media was removed, finished or reprocessed meanwhile (a conditional write missed).
    Stale,
}

/// The state of one run: what the document holds so far.
struct Run<'a> {
    worker: &'a Worker,
    job: &'a ProcessJob,
    media: &'a Media,
    details: Option<Value>,
    variants: Vec<Variant>,
}

/// Thrown through `?` when a progress write finds the media no longer this job's.
const STALE: &str = "\u{0}stale";

impl Run<'_> {
    /// A variant already made by an earlier delivery, whose file still exists.
    async fn done(&self, name: &str) -> Result<bool> {
        if !self.variants.iter().any(|v| v.name == name) {
            return Ok(false);
        }
        let file = variants::file_name(name).expect("known variant");
        self.worker.exists(&variants::key(&self.media.id, file)).await
    }

    /// Saves `details` and `variants` on the document (conditionally).
    async fn save(&self) -> Result<Progress> {
        let saved = self
            .worker
            .processing
            .save_progress(
                &self.media.id,
                &self.job.checksum,
                self.details.clone(),
                self.variants.clone(),
                Timestamp::now(),
            )
            .await
            .map_err(store_error)?;
        Ok(if saved.is_some() { Progress::Done } else { Progress::Stale })
    }

    /// [`Run::save`], turning a stale media into an error that ends the run early.
    async fn checkpoint(&self) -> Result<()> {
        match self.save().await? {
            Progress::Done => Ok(()),
            Progress::Stale => Err(ProcessError::transient(STALE)),
        }
    }

    /// Records `variant`, replacing one of the same name.
    fn set_variant(&mut self, variant: Variant) {
        self.variants.retain(|v| v.name != variant.name);
        self.variants.push(variant);
    }

    /// Uploads a rendition as variant `name` and records it.
    async fn put_rendition(&mut self, name: &str, rendition: Rendition) -> Result<()> {
        let file = variants::file_name(name).expect("known variant");
        let (width, height, mime_type) = (rendition.width, rendition.height, rendition.mime_type);
        let size = self.worker.put_bytes(&variants::key(&self.media.id, file), rendition.bytes).await?;
        let url = self.worker.variant_url(&self.media.id, name);
        self.set_variant(Variant {
            name: name.into(),
            url,
            mime_type: mime_type.into(),
            width: Some(width),
            height: Some(height),
            size,
        });
        Ok(())
    }

    /// Decodes `path` as an image on the blocking pool.
    async fn decode(&self, path: &Path) -> Result<ImageOutput> {
        let (path, limits) = (path.to_path_buf(), self.worker.settings.limits.image());
        tokio::task::spawn_blocking(move || img::process_image(&path, &limits))
            .await
            .map_err(|e| ProcessError::transient(format!("image task: {e}")))?
    }

    /// Images: details `{width, height, orientation, thumbhash}`, `thumb` and `preview`.
    async fn image(&mut self, original: &Path) -> Result<()> {
        if self.details.is_some() && self.done(variants::THUMB).await? && self.done(variants::PREVIEW).await? {
            return Ok(());
        }
        let out = self.decode(original).await?;
        self.details = Some(json!({
            "width": out.width, "height": out.height, "orientation": out.orientation, "thumbhash": out.thumbhash,
        }));
        self.put_rendition(variants::THUMB, out.thumb).await?;
        self.put_rendition(variants::PREVIEW, out.preview).await?;
        Ok(())
    }

    /// Video: details from ffprobe (limits checked first), a poster frame as `thumb` and
    /// `preview`, then the HLS ladder (`hls`), saving progress after each.
    async fn video(&mut self, original: &Path, dir: &Path) -> Result<()> {
        let limits = self.worker.settings.limits.video();
        let details = video::probe(original, &limits).await?;
        self.details = Some(serde_json::to_value(&details).map_err(|e| ProcessError::transient(e.to_string()))?);
        if !(self.done(variants::THUMB).await? && self.done(variants::PREVIEW).await?) {
            let poster = dir.join("poster.jpg");
            video::poster_frame(original, &details, &poster).await?;
            let out = self.decode(&poster).await?;
            self.put_rendition(variants::THUMB, out.thumb).await?;
            self.put_rendition(variants::PREVIEW, out.preview).await?;
        }
        self.checkpoint().await?;
        let master_key = variants::key(&self.media.id, variants::file_name(variants::HLS).expect("hls"));
        if self.done(variants::HLS).await? {
            return Ok(());
        }
        if self.worker.exists(&master_key).await? {
            // An earlier delivery uploaded the whole ladder (the master goes last) but died
            // before saving it: describe it from the master instead of transcoding again.
            let variant = self.hls_variant_from_master(&master_key).await?;
            self.set_variant(variant);
            return Ok(());
        }
        let out_dir = dir.join("hls");
        let id = self.media.id.clone();
        let progress = move |fraction: f64| tracing::debug!(id = %id, progress = fraction, "transcoding");
        let hls = video::transcode_hls(original, &details, &out_dir, &progress).await?;
        let master = Path::new("master.m3u8");
        let mut total = 0;
        // Every rendition file first, the master last: a master in the store means a whole ladder.
        for file in hls.files.iter().filter(|f| f.as_path() != master) {
            total += self.worker.put_file(&hls_key(&self.media.id, file)?, &out_dir.join(file)).await?;
        }
        total += self.worker.put_file(&master_key, &out_dir.join(master)).await?;
        let (width, height) = hls.renditions.first().copied().unzip();
        let url = self.worker.variant_url(&self.media.id, variants::HLS);
        self.set_variant(Variant {
            name: variants::HLS.into(),
            url,
            mime_type: HLS_MIME.into(),
            width,
            height,
            size: total,
        });
        Ok(())
    }

    /// The `hls` variant of a ladder already in the store: the largest `RESOLUTION` of its master
    /// playlist; `size` is the master's (the renditions' sizes are not known without listing).
    async fn hls_variant_from_master(&self, master_key: &str) -> Result<Variant> {
        let (meta, mut body) = self.worker.blobs.get(master_key, None).await.map_err(storage_error)?;
        let mut text = Vec::new();
        while let Some(chunk) = body.next().await {
            text.extend_from_slice(&chunk.map_err(|e| ProcessError::transient(e.to_string()))?);
            if text.len() > 1 << 20 {
                break;
            }
        }
        let text = String::from_utf8_lossy(&text);
        let largest = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter_map(|field| field.strip_prefix("RESOLUTION="))
            .filter_map(|r| r.split_once('x'))
            .filter_map(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .max_by_key(|(_, h)| *h);
        Ok(Variant {
            name: variants::HLS.into(),
            url: self.worker.variant_url(&self.media.id, variants::HLS),
            mime_type: HLS_MIME.into(),
            width: largest.map(|(w, _)| w),
            height: largest.map(|(_, h)| h),
            size: meta.size,
        })
    }

    /// Audio: details only.
    async fn audio(&mut self, original: &Path) -> Result<()> {
        let details = audio::probe(original).await?;
        self.details = Some(serde_json::to_value(&details).map_err(|e| ProcessError::transient(e.to_string()))?);
        Ok(())
    }

    /// PDF: details `{pageCount, width, height}` and a `thumb` of page 1.
    async fn pdf(&mut self, original: &Path, dir: &Path) -> Result<()> {
        let details = pdf::probe(original).await?;
        self.details = Some(serde_json::to_value(&details).map_err(|e| ProcessError::transient(e.to_string()))?);
        if self.done(variants::THUMB).await? {
            return Ok(());
        }
        let page = dir.join("page1.png");
        pdf::render_first_page(original, &page, PDF_RENDER_SIDE).await?;
        let out = self.decode(&page).await?;
        self.put_rendition(variants::THUMB, out.thumb).await?;
        Ok(())
    }
}

/// Blob key of an HLS file `relative` to the ladder's directory (`720p/seg_00000.m4s` →
/// `variants/<id>/hls/720p/seg_00000.m4s`). Only plain relative paths are accepted.
fn hls_key(id: &str, relative: &Path) -> Result<String> {
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            std::path::Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ProcessError::transient(format!("unexpected HLS file {}", relative.display())))?;
    Ok(variants::key(id, &format!("hls/{}", parts.join("/"))))
}

/// A file as a [`ByteStream`] of [`UPLOAD_CHUNK`]-byte chunks.
fn file_stream(file: tokio::fs::File) -> ByteStream {
    use tokio::io::AsyncReadExt;
    Box::pin(futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0; UPLOAD_CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    }))
}

/// Store failures are the machine's, not the media's: retried.
fn store_error(e: StoreError) -> ProcessError {
    ProcessError::transient(format!("document store: {e}"))
}

/// Blob-store failures (a missing original included: a store may be catching up) are retried;
/// after the last delivery the job is given up.
fn storage_error(e: StorageError) -> ProcessError {
    ProcessError::transient(format!("file store: {e}"))
}

/// Whether `e` is the early end of a run whose media stopped being this job's.
fn is_stale(e: &ProcessError) -> bool {
    matches!(e, ProcessError::Transient(what) if what == STALE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hls_files_map_under_the_variant_prefix() {
        assert_eq!(hls_key("m1", Path::new("720p/seg_00000.m4s")).unwrap(), "variants/m1/hls/720p/seg_00000.m4s");
        assert_eq!(hls_key("m1", Path::new("master.m3u8")).unwrap(), "variants/m1/hls/master.m3u8");
        assert!(hls_key("m1", Path::new("../x")).is_err());
        assert!(hls_key("m1", Path::new("/etc/passwd")).is_err());
    }
}
