//! The S3 backend: one bucket of any S3-compatible endpoint (AWS, SeaweedFS, MinIO, Garage, ...).
//!
//! The client is configured by hand, without `aws-config`: credentials, region and endpoint come
//! from our own config, never from the environment or instance metadata, and the crate stays small.

mod digest;

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as AwsBody;
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

pub use self::digest::DIGEST_PREFIX;
use self::digest::{MAX_ENCODED, PartsDigest, digest_key};
use crate::{
    BlobStore, ByteRange, ByteStream, IncompleteUpload, ListedObject, ObjectMeta, PartReceipt, StorageError, Stored,
    check_part_number, clamp_list_limit, validate_key, validate_part_list, validate_prefix,
};

/// Size of the parts `put` uploads a large body in: the one buffer it holds per put.
const PUT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3's minimum for every part but the last.
const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Where and as whom to reach the bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:8333`; `None` for AWS's own endpoint of `region`.
    pub endpoint: Option<String>,
    /// Region name, e.g. `us-east-1` (S3-compatible servers mostly ignore it, but it is signed).
    pub region: String,
    /// Bucket holding every object of this store.
    pub bucket: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key; never printed by `Debug`.
    pub secret_key: String,
    /// Bucket in the path (`endpoint/bucket/key`), not the host name: what most S3-compatible
    /// servers need.
    pub force_path_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

/// Blob store in one S3 bucket. Objects are S3 objects under their key; multipart uploads are S3
/// multipart uploads, so any process holding the upload id can add parts or complete.
///
/// Cheap to clone (the client is shared). Needs a Tokio runtime.
///
/// # Examples
///
/// ```
/// use mediabus_storage::{BlobStore, S3Config, S3Store};
///
/// let store = S3Store::new(S3Config {
///     endpoint: Some("http://127.0.0.1:8333".into()),
///     region: "us-east-1".into(),
///     bucket: "media".into(),
///     access_key: "key".into(),
///     secret_key: "secret".into(),
///     force_path_style: true,
/// });
/// assert_eq!(store.min_part_size(), 5 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    region: String,
}

impl S3Store {
    /// A store for `config.bucket`; makes no request (see [`ensure_bucket`](Self::ensure_bucket)
    /// and [`BlobStore::health_check`]).
    pub fn new(config: S3Config) -> Self {
        let credentials = Credentials::new(&config.access_key, &config.secret_key, None, None, "mediabus-config");
        // rustls on ring: ring is already in the workspace (async-nats), unlike the SDK's default
        // aws-lc, a long C build. Plain http:// endpoints work with it too.
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .credentials_provider(credentials)
            .region(Region::new(config.region.clone()))
            .force_path_style(config.force_path_style)
            // The newer default (CRC checksums on every upload, in aws-chunked trailers) is not
            // understood by every S3-compatible server; we hash with SHA-256 ourselves anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self { client: Client::from_conf(builder.build()), bucket: config.bucket, region: config.region }
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The underlying SDK client, for what the trait does not cover (tests, admin tasks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the bucket unless it exists (idempotent; safe if several processes race).
    /// Errors: `Backend` (unreachable, denied, name invalid or taken by another account).
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await.map_err(map_err) {
            Ok(_) => return Ok(()),
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // AWS rejects an explicit us-east-1 constraint and requires one for every other region.
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
            Err(e) => Err(backend(&e)),
        }
    }

    /// Uploads `first` and the rest of `body` as a multipart upload; aborts it on any error.
    async fn put_multipart(&self, key: &str, first: Bytes, body: &mut PartCutter) -> Result<(), StorageError> {
        let upload_id = self.create_multipart(key).await?;
        // If this future is dropped mid-upload, the guard aborts in the background.
        let guard = AbortOnDrop { store: self.clone(), key: key.to_owned(), upload_id: Some(upload_id) };
        let upload_id = guard.upload_id.as_deref().expect("set above");
        let result = self.upload_parts(key, upload_id, first, body).await;
        if result.is_err() {
            // Best effort: the upload holds storage until aborted; the error that matters is ours.
            let _ = self.abort_multipart(key, upload_id).await;
        }
        guard.disarm();
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut PartCutter,
    ) -> Result<(), StorageError> {
        let mut parts = vec![self.put_part(key, upload_id, 1, first).await?];
        while let Some(part) = body.next_part().await? {
            let number = parts.len() as u32 + 1;
            parts.push(self.put_part(key, upload_id, number, part).await?);
        }
        self.complete(key, upload_id, &parts).await?;
        Ok(())
    }

    /// Hashes `data`, part `receipt.part_number` starting at byte `offset`, into the upload's
    /// running digest if it continues it (part 1 starts one); drops the digest if the part was
    /// sent again over bytes already hashed with other content. Errors: the store's.
    async fn advance_digest(
        &self,
        upload_id: &str,
        offset: u64,
        receipt: &PartReceipt,
        data: Bytes,
    ) -> Result<(), StorageError> {
        let key = digest_key(upload_id);
        let mut digest = match self.load_digest(&key).await? {
            Some(d) if d.len == offset && d.parts + 1 == receipt.part_number => d,
            None if offset == 0 && receipt.part_number == 1 => PartsDigest::new(),
            Some(d) if offset < d.len => return self.delete(&key).await,
            _ => return Ok(()),
        };
        let etag = receipt.etag.clone();
        // Hashing a part (megabytes) is CPU work: off the async threads.
        digest = tokio::task::spawn_blocking(move || {
            digest.push(&data, &etag);
            digest
        })
        .await
        .map_err(|e| StorageError::Backend(format!("hashing a part: {e}")))?;
        let put = self.client.put_object().bucket(&self.bucket).key(&key).body(AwsBody::from(digest.encode()));
        put.send().await.map_err(map_err)?;
        Ok(())
    }

    /// The running digest stored under `key`; `None` if there is none or it does not parse.
    async fn load_digest(&self, key: &str) -> Result<Option<PartsDigest>, StorageError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(map_err) {
            Ok(out) => out,
            Err(StorageError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut body = out.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(io::Error::from)?);
            if bytes.len() > MAX_ENCODED {
                return Ok(None);
            }
        }
        Ok(PartsDigest::decode(&bytes))
    }

    /// CompleteMultipartUpload; returns the new object's ETag.
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<Option<String>, StorageError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| CompletedPart::builder().part_number(p.part_number as i32).e_tag(&p.etag).build())
                    .collect(),
            ))
            .build();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(map_err)?;
        Ok(out.e_tag)
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put(&self, key: &str, body: ByteStream) -> Result<Stored, StorageError> {
        validate_key(key)?;
        let mut body = PartCutter::new(body);
        // A body that fits in one part goes up in one PutObject; a larger one becomes a multipart
        // upload, so memory stays at one part whatever the body's size.
        match body.next_part().await? {
            Some(first) if first.len() == PUT_PART_SIZE => {
                self.put_multipart(key, first, &mut body).await?;
            }
            small => {
                let data = small.unwrap_or_default();
                let put = self.client.put_object().bucket(&self.bucket).key(key);
                put.body(AwsBody::from(data)).send().await.map_err(map_err)?;
            }
        }
        Ok(body.stored())
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        validate_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| r.to_http()))
            .send()
            .await
            .map_err(map_err)?;
        // Ranged: the whole size is the part after '/' of `Content-Range: bytes 0-9/1234`.
        let total = out.content_range().and_then(|r| r.rsplit('/').next()?.parse().ok());
        let meta = ObjectMeta {
            size: total.or(out.content_length().and_then(|n| u64::try_from(n).ok())).unwrap_or(0),
            last_modified: system_time(out.last_modified()),
            etag: out.e_tag().unwrap_or_default().to_owned(),
        };
        Ok((meta, body_stream(out.body)))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        validate_key(key)?;
        let out = self.client.head_object().bucket(&self.bucket).key(key).send().await.map_err(map_err)?;
        Ok(ObjectMeta {
            size: out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            last_modified: system_time(out.last_modified()),
            etag: out.e_tag().unwrap_or_default().to_owned(),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        // S3 answers 204 for a missing key too; some compatible servers answer 404.
        match self.client.delete_object().bucket(&self.bucket).key(key).send().await.map_err(map_err) {
            Ok(_) | Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        let out = self.client.create_multipart_upload().bucket(&self.bucket).key(key).send().await.map_err(map_err)?;
        out.upload_id.ok_or_else(|| StorageError::Backend("CreateMultipartUpload: no upload id".into()))
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError> {
        validate_key(key)?;
        validate_upload_id(upload_id)?;
        check_part_number(part_number)?;
        let size = data.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part_number as i32)
            .body(AwsBody::from(data))
            .send()
            .await
            .map_err(map_err)?;
        let etag = out.e_tag.ok_or_else(|| StorageError::Backend("UploadPart: no ETag".into()))?;
        Ok(PartReceipt { part_number, etag, size })
    }

    /// Stores the part, then advances the upload's running digest if the part continues it.
    async fn put_part_at(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        offset: u64,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError> {
        let receipt = self.put_part(key, upload_id, part_number, data.clone()).await?;
        // The part is stored either way: a digest not advanced only means completion reads more.
        let _ = self.advance_digest(upload_id, offset, &receipt, data).await;
        Ok(receipt)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, StorageError> {
        validate_key(key)?;
        validate_upload_id(upload_id)?;
        let mut parts = Vec::new();
        let mut marker = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker)
                .send()
                .await
                .map_err(map_err)?;
            parts.extend(out.parts().iter().filter_map(|p| {
                let receipt = PartReceipt {
                    part_number: u32::try_from(p.part_number?).ok()?,
                    etag: p.e_tag()?.to_owned(),
                    size: u64::try_from(p.size?).ok()?,
                };
                Some((receipt, p.last_modified))
            }));
            marker = out.next_part_number_marker().map(str::to_owned);
            if out.is_truncated() != Some(true) || marker.is_none() {
                break;
            }
        }
        latest_per_part(parts)
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartReceipt],
    ) -> Result<Stored, StorageError> {
        validate_key(key)?;
        validate_upload_id(upload_id)?;
        validate_part_list(parts)?;
        let etag = self.complete(key, upload_id, parts).await?;
        let total: u64 = parts.iter().map(|p| p.size).sum();
        let state = digest_key(upload_id);
        let digest = self.load_digest(&state).await.ok().flatten().filter(|d| d.matches(parts));
        let _ = self.delete(&state).await;
        let PartsDigest { mut hasher, len: mut size, .. } = digest.unwrap_or_else(PartsDigest::new);
        // Only what the running digest does not cover is read back (all of it if no part
        // continued the digest). If-Match pins the reads to the object just completed: a
        // concurrent overwrite fails instead of hashing someone else's bytes.
        if size < total {
            let range = (size > 0).then(|| format!("bytes={size}-"));
            let get = self.client.get_object().bucket(&self.bucket).key(key).set_if_match(etag).set_range(range);
            let mut body = get.send().await.map_err(map_err)?.body;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(io::Error::from)?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
            }
        } else {
            let head = self.client.head_object().bucket(&self.bucket).key(key).set_if_match(etag);
            let out = head.send().await.map_err(map_err)?;
            size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        }
        if size != total {
            return Err(StorageError::Backend(format!("completed object holds {size} bytes, its parts {total}")));
        }
        Ok(Stored { size, sha256_hex: hex::encode(hasher.finalize()) })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        validate_key(key)?;
        validate_upload_id(upload_id)?;
        self.delete(&digest_key(upload_id)).await?;
        let sent = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(map_err);
        match sent {
            Ok(_) | Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn health_check(&self) -> Result<(), StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await.map_err(map_err) {
            Ok(_) => Ok(()),
            // A missing bucket is an outage of this store, not a missing object.
            Err(StorageError::NotFound) => {
                Err(StorageError::Backend(format!("bucket {:?} does not exist", self.bucket)))
            }
            Err(e) => Err(e),
        }
    }

    fn min_part_size(&self) -> u64 {
        S3_MIN_PART_SIZE
    }

    /// Removes running digests ([`DIGEST_PREFIX`]) not written for `older_than`: each part of a
    /// live upload rewrites its digest, so these belong to uploads abandoned or crashed.
    async fn sweep_temp(&self, older_than: Duration) -> Result<usize, StorageError> {
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        let mut after = None;
        loop {
            let page = self.list(DIGEST_PREFIX, after.as_deref(), crate::MAX_LIST_LIMIT).await?;
            let Some(last) = page.last() else { return Ok(removed) };
            after = Some(last.key.clone());
            for object in page.iter().filter(|o| o.last_modified <= cutoff) {
                self.delete(&object.key).await?;
                removed += 1;
            }
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ListedObject>, StorageError> {
        validate_prefix(prefix)?;
        let limit = clamp_list_limit(limit) as usize;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let want = i32::try_from(limit - out.len()).unwrap_or(i32::MAX);
            let mut request = self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).max_keys(want);
            request = match &token {
                Some(token) => request.continuation_token(token),
                None => request.set_start_after(start_after.map(str::to_owned)),
            };
            let page = request.send().await.map_err(map_err)?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                out.push(ListedObject {
                    key: key.to_owned(),
                    size: object.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    last_modified: system_time(object.last_modified()),
                });
            }
            token = page.next_continuation_token().map(str::to_owned);
            if out.len() >= limit || page.is_truncated() != Some(true) || token.is_none() {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn list_incomplete_uploads(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<IncompleteUpload>, StorageError> {
        let limit = clamp_list_limit(limit) as usize;
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(map_err)?;
            for upload in page.uploads() {
                let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) else { continue };
                let last_active = system_time(upload.initiated());
                if last_active <= cutoff && out.len() < limit {
                    out.push(IncompleteUpload { key: key.to_owned(), upload_id: upload_id.to_owned(), last_active });
                }
            }
            key_marker = page.next_key_marker().filter(|m| !m.is_empty()).map(str::to_owned);
            id_marker = page.next_upload_id_marker().filter(|m| !m.is_empty()).map(str::to_owned);
            if out.len() >= limit || page.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

/// Cuts a body into parts of exactly `PUT_PART_SIZE` bytes (the last one shorter), hashing and
/// counting the bytes as they pass. Holds at most one part, in a buffer that never grows past it.
struct PartCutter {
    /// Fused: asked again after the short last part, it must keep answering "ended".
    body: futures_util::stream::Fuse<ByteStream>,
    /// Bytes of the current chunk not yet moved into `part`.
    pending: Bytes,
    part: Vec<u8>,
    hasher: Sha256,
    size: u64,
}

impl PartCutter {
    fn new(body: ByteStream) -> Self {
        let body = body.fuse();
        Self { body, pending: Bytes::new(), part: Vec::new(), hasher: Sha256::new(), size: 0 }
    }

    /// The next part: `PUT_PART_SIZE` bytes, or fewer (not none) if the body ended; `None` once
    /// it has all been handed out. Errors: what the body yields.
    async fn next_part(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if !self.pending.is_empty() {
                let take = (PUT_PART_SIZE - self.part.len()).min(self.pending.len());
                let needed = self.part.len() + take;
                if self.part.capacity() < needed {
                    // Amortized doubling, capped at one part.
                    let target = (2 * self.part.capacity()).clamp(needed, PUT_PART_SIZE);
                    self.part.reserve_exact(target - self.part.len());
                }
                self.part.extend_from_slice(&self.pending.split_to(take));
                if self.part.len() == PUT_PART_SIZE {
                    return Ok(Some(Bytes::from(std::mem::take(&mut self.part))));
                }
            }
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    self.hasher.update(&chunk);
                    self.size += chunk.len() as u64;
                    self.pending = chunk;
                }
                None if self.part.is_empty() => return Ok(None),
                None => return Ok(Some(Bytes::from(std::mem::take(&mut self.part)))),
            }
        }
    }

    /// Size and SHA-256 of everything read so far.
    fn stored(self) -> Stored {
        Stored { size: self.size, sha256_hex: hex::encode(self.hasher.finalize()) }
    }
}

/// Aborts a multipart upload in the background if dropped armed (the `put` future was dropped
/// mid-upload): the upload would otherwise hold its parts' storage until a lifecycle rule runs.
struct AbortOnDrop {
    store: S3Store,
    key: String,
    upload_id: Option<String>,
}

impl AbortOnDrop {
    fn disarm(mut self) {
        self.upload_id = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key) = (self.store.clone(), std::mem::take(&mut self.key));
            runtime.spawn(async move {
                let _ = store.abort_multipart(&key, &upload_id).await;
            });
        }
    }
}

/// One receipt per part number, ascending.
///
/// SeaweedFS lists every upload of a re-sent part, not just the latest as S3 does, with
/// LastModified in whole seconds: keep the newest; if two with different content share the newest
/// second, which one is current cannot be told, so refuse rather than guess (its
/// CompleteMultipartUpload picks parts by ETag, so completing with `put_part`'s receipts is exact).
fn latest_per_part(
    mut listed: Vec<(PartReceipt, Option<aws_sdk_s3::primitives::DateTime>)>,
) -> Result<Vec<PartReceipt>, StorageError> {
    listed.sort_by_key(|(part, _)| part.part_number);
    let mut parts = Vec::with_capacity(listed.len());
    for same in listed.chunk_by(|a, b| a.0.part_number == b.0.part_number) {
        let newest = same.iter().map(|(_, modified)| *modified).max().flatten();
        let mut candidates = same.iter().filter(|(_, modified)| *modified == newest);
        let (part, _) = candidates.next().expect("a group has at least one part");
        if candidates.any(|(other, _)| other.etag != part.etag) {
            return Err(StorageError::Backend(format!(
                "part {} was stored twice with different content within one second; \
                 complete with the receipts from put_part",
                part.part_number
            )));
        }
        parts.push(part.clone());
    }
    Ok(parts)
}

/// S3 upload ids are opaque server strings; refuse only what cannot be one.
fn validate_upload_id(upload_id: &str) -> Result<(), StorageError> {
    if upload_id.is_empty() || upload_id.len() > 1024 || upload_id.chars().any(char::is_control) {
        return Err(StorageError::InvalidKey(format!("upload id {upload_id:?}")));
    }
    Ok(())
}

fn body_stream(body: AwsBody) -> ByteStream {
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        let next = body.next().await?;
        Some((next.map_err(io::Error::from), body))
    }))
}

fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Folds an SDK error into ours: missing key or upload → `NotFound`, 416 → `InvalidRange`, bad
/// part lists → `InvalidPart`, anything else (including a missing bucket) → `Backend`.
fn map_err<E, R>(err: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + HasStatus,
{
    let status = err.raw_response().map(HasStatus::status);
    match err.code() {
        Some("NoSuchKey" | "NotFound" | "NoSuchUpload") => StorageError::NotFound,
        Some("InvalidRange") => StorageError::InvalidRange,
        Some("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall") => {
            StorageError::InvalidPart(err.message().unwrap_or("refused by the server").to_owned())
        }
        Some("NoSuchBucket") => backend(&err),
        // HEAD answers have no body, hence no code: the status is all there is.
        _ if status == Some(404) => StorageError::NotFound,
        _ if status == Some(416) => StorageError::InvalidRange,
        _ => backend(&err),
    }
}

fn backend<E, R>(err: &SdkError<E, R>) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    StorageError::Backend(DisplayErrorContext(err).to_string())
}

/// The HTTP status of a raw SDK response.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::DateTime;

    fn listed(n: u32, etag: &str, secs: i64) -> (PartReceipt, Option<DateTime>) {
        let part = PartReceipt { part_number: n, etag: etag.into(), size: 1 };
        (part, Some(DateTime::from_secs(secs)))
    }

    #[test]
    fn one_receipt_per_part_the_newest() {
        let parts = latest_per_part(vec![
            listed(2, "b-old", 10),
            listed(1, "a", 10),
            listed(2, "b-new", 11),
            listed(2, "b-new", 11), // the same bytes sent twice: not ambiguous
            listed(3, "c", 9),
        ])
        .unwrap();
        let etags: Vec<_> = parts.iter().map(|p| (p.part_number, p.etag.as_str())).collect();
        assert_eq!(etags, [(1, "a"), (2, "b-new"), (3, "c")]);
    }

    #[test]
    fn different_parts_in_the_same_second_are_refused() {
        let r = latest_per_part(vec![listed(1, "x", 10), listed(1, "y", 10), listed(1, "z", 9)]);
        assert!(matches!(r, Err(StorageError::Backend(_))), "{r:?}");
        // A newer upload settles it.
        let r = latest_per_part(vec![listed(1, "x", 10), listed(1, "y", 10), listed(1, "z", 11)]);
        assert_eq!(r.unwrap()[0].etag, "z");
    }
}

#[cfg(test)]
mod cutter_tests {
    use super::*;

    async fn cut(chunks: &[usize]) -> (Vec<usize>, Stored) {
        let chunks: Vec<io::Result<Bytes>> = chunks.iter().map(|&n| Ok(Bytes::from(vec![7u8; n]))).collect();
        let mut cutter = PartCutter::new(Box::pin(futures_util::stream::iter(chunks)));
        let mut parts = Vec::new();
        while let Some(part) = cutter.next_part().await.unwrap() {
            assert!(cutter.part.capacity() <= PUT_PART_SIZE);
            parts.push(part.len());
        }
        assert_eq!(cutter.next_part().await.unwrap(), None, "stays ended");
        (parts, cutter.stored())
    }

    #[tokio::test]
    async fn cuts_exact_parts_whatever_the_chunks() {
        const P: usize = PUT_PART_SIZE;
        assert_eq!(cut(&[]).await.0, Vec::<usize>::new());
        assert_eq!(cut(&[0, 10, 0]).await.0, [10]);
        assert_eq!(cut(&[P]).await.0, [P]);
        assert_eq!(cut(&[P - 1, 2]).await.0, [P, 1]);
        assert_eq!(cut(&[3 * P + 5]).await.0, [P, P, P, 5]);
        let (parts, stored) = cut(&[100_000; 200]).await;
        assert_eq!(parts, [P, P, 20_000_000 - 2 * P]);
        assert_eq!(stored.size, 20_000_000);
    }
}
