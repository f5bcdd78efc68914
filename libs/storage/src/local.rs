//! The local filesystem backend: one file per object under a root directory.
//!
//! Layout under `root`:
//! - `<key>`: the object (keys may contain `/`, which become directories);
//! - `.tmp/`: files being written, renamed into place when complete;
//! - `.uploads/<upload id>/`: a multipart upload: `key` (the object key it belongs to); `data`,
//!   the file parts put with their offset ([`BlobStore::put_part_at`]) are written into in place,
//!   each recorded by a marker `<n>.span` holding its receipt's etag; `sha256`, the running
//!   digest of `data`'s first bytes ([`RunningDigest`]); and one file per part put without
//!   offset, named by its number.
//!
//! Completing an upload whose parts all sit in `data`, back to back, renames `data` into place:
//! no copy. Parts are written with `O_DIRECT` where the file system allows it, and those that
//! arrive in order are hashed from memory as they are written, so completion hashes only what is
//! left, usually nothing. Parts are not fsynced; completion fsyncs the object once (the
//! durability point).
//!
//! Every change becomes visible through one `rename(2)` within the root's file system, so readers,
//! and other processes sharing the directory, see a whole file or none, never a partial one.
//! Temp names are random, so processes never collide on them. Directories are never removed
//! (except an upload's own), because another process may be about to rename a file into one.

use std::io::{self, ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use crate::{
    BlobStore, ByteRange, ByteStream, IncompleteUpload, ListedObject, ObjectMeta, PartReceipt, StorageError, Stored,
    check_part_number, clamp_list_limit, validate_key, validate_part_list, validate_prefix,
};

const TMP_DIR: &str = ".tmp";
const UPLOADS_DIR: &str = ".uploads";
/// The file in an upload directory naming the key the upload belongs to.
const UPLOAD_KEY_FILE: &str = "key";
/// Read/write buffer: big enough to keep syscalls (each a blocking-pool hop in tokio) rare.
const IO_BUF: usize = 256 * 1024;
/// Buffer of the blocking reads of parts (assembly, hashing parts read back).
const ASSEMBLE_BUF: usize = 1024 * 1024;
/// Largest single write(2) of a part through the page cache (where `O_DIRECT` is not taken, see
/// [`write_part`]). Measured on Linux 6.18 / ext4 (a VM), http-bench (512 MiB uploads, two
/// workers): 1 MiB calls cost the workers 1.95–1.97 CPU-s per upload, 128–256 KiB calls
/// 1.39–1.41 s, 16–64 KiB 1.46–1.74 s (more calls). 5 MiB calls were slower still: the page cache
/// allocates folios as large as the write, and large ones are slow to come by.
const WRITE_CHUNK: usize = 256 * 1024;
/// `O_DIRECT` writes need offsets, lengths and buffer addresses aligned to the device's logical
/// block size: 4 KiB covers common devices (a larger one makes the write fall back, see
/// [`write_part`]).
const DIRECT_ALIGN: usize = 4096;
/// Bytes per `O_DIRECT` write(2): 1 MiB went at ~800–900 MiB/s on this VM's disk, 256 KiB at ~650.
const DIRECT_CHUNK: usize = 1024 * 1024;
/// In an upload directory: the file parts put with an offset are written into.
const UPLOAD_DATA_FILE: &str = "data";
/// In an upload directory: the running digest of the data file ([`RunningDigest`]), and the temp
/// name it is rewritten under (one name is enough: only the holder of the data file's lock
/// writes it).
const DIGEST_FILE: &str = "sha256";
const DIGEST_TMP: &str = "sha256.tmp";
/// Suffix of the marker of part `<n>` in the data file: `<n>.span`, holding the part's etag.
const SPAN_SUFFIX: &str = ".span";
/// Etag of a part in the data file: `span-<offset hex>-<size hex>-<random>`. A part file's etag
/// (`<size hex>-<mtime hex>`) never starts with `s`.
const SPAN_ETAG_PREFIX: &str = "span-";

/// Blob store in a local directory, safe to share between processes on one machine.
///
/// ETags are `<size hex>-<mtime ns hex>` of the file: cheap (no re-hash) and new for every write,
/// since every write is a new file.
///
/// Limitation: a key cannot be both an object and a "directory" of other keys (`a` and `a/b`);
/// the second write fails with `Io`. Keys from [`new_key`](crate::new_key) all have the same depth.
///
/// # Examples
///
/// ```
/// use mediabus_storage::{BlobStore, LocalStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = LocalStore::new(dir.path()).unwrap();
/// assert_eq!(store.min_part_size(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if missing) a store rooted at `root`, with its `.tmp` and `.uploads`
    /// directories. Errors: `Io` if they cannot be created.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR))?;
        std::fs::create_dir_all(root.join(UPLOADS_DIR))?;
        Ok(Self { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes temp files and directories not modified for `older_than`: leftovers of processes
    /// that crashed mid-write (a live write touches its file with every chunk). Returns how many
    /// entries it removed. Run it now and then, with an age well above any stalled upload's.
    pub async fn sweep_tmp(&self, older_than: Duration) -> Result<usize, StorageError> {
        let mut removed = 0;
        let mut entries = fs::read_dir(self.root.join(TMP_DIR)).await?;
        while let Some(entry) = entries.next_entry().await? {
            let Ok(meta) = entry.metadata().await else { continue };
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if age < older_than {
                continue;
            }
            let gone = if meta.is_dir() {
                fs::remove_dir_all(entry.path()).await
            } else {
                fs::remove_file(entry.path()).await
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn object_path(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// A fresh, unique temp path; `what` only helps whoever looks at a leftover.
    fn tmp_path(&self, what: &str) -> PathBuf {
        self.root.join(TMP_DIR).join(format!("{}.{what}", cuid2::create_id()))
    }

    /// The directory of upload `upload_id` if it exists and belongs to `key`; else `NotFound`.
    async fn upload_dir(&self, key: &str, upload_id: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        validate_upload_id(upload_id)?;
        let dir = self.root.join(UPLOADS_DIR).join(upload_id);
        match fs::read(dir.join(UPLOAD_KEY_FILE)).await {
            Ok(owner) if owner == key.as_bytes() => Ok(dir),
            // Another key's upload: to this caller it does not exist (S3's NoSuchUpload).
            Ok(_) => Err(StorageError::NotFound),
            Err(e) => Err(not_found_or_io(e)),
        }
    }

    /// Moves an upload directory out of `.uploads` (so no part can land in it any more), then
    /// deletes it. `Ok` if it is already gone.
    async fn remove_upload_dir(&self, dir: &Path) -> Result<(), StorageError> {
        let trash = self.tmp_path("trash");
        match fs::rename(dir, &trash).await {
            Ok(()) => Ok(fs::remove_dir_all(&trash).await?),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put(&self, key: &str, body: ByteStream) -> Result<Stored, StorageError> {
        let dest = self.object_path(key)?;
        let tmp = TempPath(Some(self.tmp_path("put")));
        let stored = write_stream(tmp.path(), body).await?;
        publish(tmp.path(), &dest).await?;
        tmp.keep();
        Ok(stored)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let path = self.object_path(key)?;
        // Reading through the open handle stays consistent even if the object is replaced or
        // deleted meanwhile: the old inode lives until we close it.
        let mut file = File::open(&path).await.map_err(not_found_or_io)?;
        let meta = file_meta(&file.metadata().await?)?;
        let (start, len) = match range {
            None => (0, meta.size),
            Some(range) => {
                let (start, end) = range.resolve(meta.size).ok_or(StorageError::InvalidRange)?;
                (start, end - start + 1)
            }
        };
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        let body = ReaderStream::with_capacity(file.take(len), IO_BUF);
        Ok((meta, Box::pin(body)))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        let path = self.object_path(key)?;
        file_meta(&fs::metadata(&path).await.map_err(not_found_or_io)?)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.object_path(key)?;
        match fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            // A directory under the key holds other keys, not an object: nothing to delete.
            Err(e) if is_not_found(&e) || e.kind() == ErrorKind::IsADirectory => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_multipart(&self, key: &str) -> Result<String, StorageError> {
        validate_key(key)?;
        let upload_id = cuid2::create_id();
        // Built in .tmp, then renamed in whole: a visible upload always has its key file.
        let staging = TempPath(Some(self.tmp_path("upload")));
        fs::create_dir(staging.path()).await?;
        write_synced(&staging.path().join(UPLOAD_KEY_FILE), key.as_bytes()).await?;
        new_file(&staging.path().join(UPLOAD_DATA_FILE)).await?;
        fs::rename(staging.path(), self.root.join(UPLOADS_DIR).join(&upload_id)).await?;
        staging.keep();
        Ok(upload_id)
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError> {
        check_part_number(part_number)?;
        let dir = self.upload_dir(key, upload_id).await?;
        let size = data.len() as u64;
        let tmp = TempPath(Some(self.tmp_path("part")));
        // Parts are scratch, so not fsynced: only the assembled object must survive a crash
        // (complete_multipart syncs it), and a part a crash truncated no longer matches its
        // receipt, so completion refuses it rather than assemble it. One blocking task for the
        // whole write: tokio::fs would hop to the blocking pool per buffer.
        let path = tmp.path().to_owned();
        // The etag is taken before the rename, which keeps the mtime: the receipt describes
        // exactly this file even if the same part is re-sent concurrently.
        let etag = tokio::task::spawn_blocking(move || -> io::Result<String> {
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
            for chunk in data.chunks(WRITE_CHUNK) {
                std::io::Write::write_all(&mut file, chunk)?;
            }
            Ok(etag_of(&file.metadata()?))
        })
        .await
        .map_err(io::Error::other)??;
        match fs::rename(tmp.path(), dir.join(part_number.to_string())).await {
            Ok(()) => tmp.keep(),
            // The upload was completed or aborted meanwhile.
            Err(e) if is_not_found(&e) => return Err(StorageError::NotFound),
            Err(e) => return Err(e.into()),
        }
        // This file supersedes the part's copy in the data file, if it had one.
        let _ = fs::remove_file(dir.join(span_name(part_number))).await;
        Ok(PartReceipt { part_number, etag, size })
    }

    async fn put_part_at(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        offset: u64,
        data: Bytes,
    ) -> Result<PartReceipt, StorageError> {
        check_part_number(part_number)?;
        let size = data.len() as u64;
        if offset.checked_add(size).is_none_or(|end| i64::try_from(end).is_err()) {
            return Err(StorageError::InvalidPart(format!("part {part_number} at offset {offset} is too far")));
        }
        let dir = self.upload_dir(key, upload_id).await?;
        let etag = format!("{SPAN_ETAG_PREFIX}{offset:x}-{size:x}-{}", cuid2::create_id());
        let marker = TempPath(Some(self.tmp_path("span")));
        let (dir_path, marker_path, tag) = (dir.clone(), marker.path().to_owned(), etag.clone());
        // One blocking task for the whole write, as in `put_part`. The bytes come back if the
        // upload has no data file (created before parts were placed in place).
        let unplaced =
            tokio::task::spawn_blocking(move || write_span(&dir_path, part_number, offset, data, &marker_path, &tag))
                .await
                .map_err(io::Error::other)??;
        if let Some(data) = unplaced {
            drop(marker);
            return self.put_part(key, upload_id, part_number, data).await;
        }
        marker.keep();
        // The data file now holds this part: a part file put earlier for it is superseded.
        let _ = fs::remove_file(dir.join(part_number.to_string())).await;
        Ok(PartReceipt { part_number, etag, size })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, StorageError> {
        let dir = self.upload_dir(key, upload_id).await?;
        let mut entries = fs::read_dir(&dir).await.map_err(not_found_or_io)?;
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(part_number) = name.strip_suffix(SPAN_SUFFIX).and_then(|n| n.parse().ok()) {
                let etag = match fs::read_to_string(entry.path()).await {
                    Ok(etag) => etag,
                    Err(e) if is_not_found(&e) => continue, // superseded meanwhile
                    Err(e) => return Err(e.into()),
                };
                // A marker that does not parse (cut short by a crash) records no part.
                if let Some((_, size)) = parse_span_etag(&etag) {
                    parts.push(PartReceipt { part_number, etag, size });
                }
                continue;
            }
            let Some(part_number) = name.parse().ok() else {
                continue; // the key and data files
            };
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                Err(e) if is_not_found(&e) => continue, // replaced or removed meanwhile
                Err(e) => return Err(e.into()),
            };
            parts.push(PartReceipt { part_number, etag: etag_of(&meta), size: meta.len() });
        }
        // Should a part briefly have both forms (being re-sent the other way), list the span.
        parts.sort_by_key(|p| (p.part_number, !p.etag.starts_with(SPAN_ETAG_PREFIX)));
        parts.dedup_by_key(|p| p.part_number);
        Ok(parts)
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
        let dir = self.upload_dir(key, upload_id).await?;
        let dest = self.object_path(key)?;
        let staged = TempPath(Some(self.tmp_path("data")));
        let assembled = TempPath(Some(self.tmp_path("complete")));
        let job = Completion {
            dir: dir.clone(),
            staged: staged.path().to_owned(),
            assembled: assembled.path().to_owned(),
            parts: parts.to_vec(),
            min_part: self.min_part_size(),
        };
        // Check, hash and fsync in one blocking task (tokio::fs would hop per buffer).
        let (size, digest, in_place) =
            tokio::task::spawn_blocking(move || job.run()).await.map_err(io::Error::other)??;
        let (finished, unused) = if in_place { (staged, assembled) } else { (assembled, staged) };
        drop(unused);
        if let Err(e) = publish(finished.path(), &dest).await {
            if in_place {
                // Give the parts back to the upload, so a retry can still complete it.
                let _ = fs::rename(finished.path(), dir.join(UPLOAD_DATA_FILE)).await;
            }
            return Err(e.into());
        }
        finished.keep();
        // The object is in place; failing to tidy the parts must not fail the upload.
        let _ = self.remove_upload_dir(&dir).await;
        Ok(Stored { size, sha256_hex: digest })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StorageError> {
        match self.upload_dir(key, upload_id).await {
            Ok(dir) => self.remove_upload_dir(&dir).await,
            Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn health_check(&self) -> Result<(), StorageError> {
        let probe = TempPath(Some(self.tmp_path("health")));
        write_synced(probe.path(), b"ok").await?;
        drop(probe); // removes it
        Ok(())
    }

    fn min_part_size(&self) -> u64 {
        1
    }

    /// A depth-first walk of the root in key order (names compared with a `/` after directory
    /// names, so the order is that of the whole keys), skipping subtrees wholly before
    /// `start_after` or outside `prefix`; each directory is read once per call, so a page costs the
    /// directories on its path, not the whole tree. `.tmp` and `.uploads` are never entered.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ListedObject>, StorageError> {
        validate_prefix(prefix)?;
        let walk = Walk {
            prefix: prefix.to_owned(),
            start_after: start_after.map(str::to_owned),
            limit: clamp_list_limit(limit) as usize,
        };
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk.visit(&root, "", &mut out)?;
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Io(io::Error::other(e)))?
    }

    async fn list_incomplete_uploads(
        &self,
        older_than: Duration,
        limit: u32,
    ) -> Result<Vec<IncompleteUpload>, StorageError> {
        let limit = clamp_list_limit(limit) as usize;
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        let mut entries = fs::read_dir(self.root.join(UPLOADS_DIR)).await?;
        while let Some(entry) = entries.next_entry().await? {
            if out.len() == limit {
                break;
            }
            let dir = entry.path();
            let Some(upload_id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            // An upload being completed or aborted may vanish under us: skip it.
            let Ok(key) = fs::read_to_string(dir.join(UPLOAD_KEY_FILE)).await else { continue };
            // Parts written in place touch `data`; parts and markers added touch the directory.
            let mut last_active = match entry.metadata().await.and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if let Ok(t) = fs::metadata(dir.join(UPLOAD_DATA_FILE)).await.and_then(|m| m.modified()) {
                last_active = last_active.max(t);
            }
            if last_active <= cutoff {
                out.push(IncompleteUpload { key, upload_id, last_active });
            }
        }
        Ok(out)
    }

    async fn sweep_temp(&self, older_than: Duration) -> Result<usize, StorageError> {
        self.sweep_tmp(older_than).await
    }
}

/// One [`LocalStore::list`] call's walk.
struct Walk {
    prefix: String,
    start_after: Option<String>,
    limit: usize,
}

impl Walk {
    /// Lists `dir` (whose keys start with `rel`, empty or ending in `/`) into `out`, in key order.
    fn visit(&self, dir: &Path, rel: &str, out: &mut Vec<ListedObject>) -> Result<(), StorageError> {
        let read = match std::fs::read_dir(dir) {
            Ok(read) => read,
            // A directory removed meanwhile (never by this store, but by an operator) lists nothing.
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut entries: Vec<(String, bool)> = Vec::new();
        for entry in read {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            // `.tmp`, `.uploads` and anything else no key can name.
            if name.starts_with('.') {
                continue;
            }
            let Ok(kind) = entry.file_type() else { continue };
            entries.push(if kind.is_dir() { (format!("{rel}{name}/"), true) } else { (format!("{rel}{name}"), false) });
        }
        entries.sort_unstable();
        for (path, is_dir) in entries {
            if out.len() >= self.limit {
                return Ok(());
            }
            let after = self.start_after.as_deref();
            if is_dir {
                let in_prefix = path.starts_with(&self.prefix) || self.prefix.starts_with(&path);
                // Every key under `path` is before `start_after` when `path` is and is not its prefix.
                let passed = after.is_some_and(|a| path.as_str() < a && !a.starts_with(&path));
                if in_prefix && !passed {
                    self.visit(&dir.join(&path[rel.len()..path.len() - 1]), &path, out)?;
                }
            } else if path.starts_with(&self.prefix)
                && after.is_none_or(|a| path.as_str() > a)
                && validate_key(&path).is_ok()
            {
                let Ok(meta) = std::fs::metadata(dir.join(&path[rel.len()..])) else { continue };
                out.push(ListedObject { key: path, size: meta.len(), last_modified: meta.modified()? });
            }
        }
        Ok(())
    }
}

/// Upload ids become directory names: only what [`cuid2`] generates (1..=64 of `[a-z0-9]`).
fn validate_upload_id(upload_id: &str) -> Result<(), StorageError> {
    let ok =
        (1..=64).contains(&upload_id.len()) && upload_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok { Ok(()) } else { Err(StorageError::InvalidKey(format!("upload id {upload_id:?}: 1..=64 of a-z 0-9"))) }
}

/// A temp file or directory removed on drop unless [`keep`](Self::keep) was called: covers error
/// returns and futures dropped mid-write alike.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("TempPath used after keep")
    }

    /// The path was renamed away (or should stay): do not remove it.
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Synchronous on purpose: Drop cannot await, and it is one unlink.
            if std::fs::remove_file(&path).is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Creates `path` (which must not exist: temp names are unique, a clash is a bug).
async fn new_file(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path).await
}

/// Streams `body` into a new file at `path`, hashing and counting, then fsyncs it.
async fn write_stream(path: &Path, mut body: ByteStream) -> Result<Stored, StorageError> {
    let mut out = BufWriter::with_capacity(IO_BUF, new_file(path).await?);
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    out.into_inner().sync_all().await?;
    Ok(Stored { size, sha256_hex: hex::encode(hasher.finalize()) })
}

/// `<n>.span`: the marker of part `n` in an upload's data file.
fn span_name(part_number: u32) -> String {
    format!("{part_number}{SPAN_SUFFIX}")
}

/// `(offset, size)` of a part in the data file, from its etag; `None` for other etags.
fn parse_span_etag(etag: &str) -> Option<(u64, u64)> {
    let mut fields = etag.strip_prefix(SPAN_ETAG_PREFIX)?.splitn(3, '-');
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let size = u64::from_str_radix(fields.next()?, 16).ok()?;
    fields.next().filter(|nonce| !nonce.is_empty())?;
    Some((offset, size))
}

/// Writes part `part_number` into the data file of the upload in `dir` at `offset`, then records
/// it: `etag` written to `marker_tmp`, renamed to `<n>.span`. Returns the bytes back, unwritten,
/// if the upload has no data file (made before parts were written in place).
///
/// A part that continues the upload's [`RunningDigest`] (part 1 starts it) is hashed from memory,
/// then the parts after it already written are read back and hashed; a part written over hashed
/// bytes (sent again) drops the digest first.
///
/// Completion first moves the data file out of `dir`, then locks it exclusively: a writer holding
/// the lock on a file that is still at its path cannot race a completion, and a file that moved
/// is closed to parts (its upload is being completed). Writers lock exclusively too: the kernel
/// serialises writes to one file anyway (the inode lock), and a writer waiting on `flock` sleeps,
/// where one waiting on the inode lock spins a core (measured: a fifth less worker CPU per upload
/// with two workers writing one file).
fn write_span(
    dir: &Path,
    part_number: u32,
    offset: u64,
    data: Bytes,
    marker_tmp: &Path,
    etag: &str,
) -> Result<Option<Bytes>, StorageError> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let path = dir.join(UPLOAD_DATA_FILE);
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if is_not_found(&e) => {
            return match std::fs::metadata(dir.join(UPLOAD_KEY_FILE)) {
                Ok(_) => Ok(Some(data)),
                Err(e) => Err(not_found_or_io(e)),
            };
        }
        Err(e) => return Err(e.into()),
    };
    file.lock()?;
    let open = file.metadata()?;
    match std::fs::metadata(&path) {
        Ok(now) if (now.dev(), now.ino()) == (open.dev(), open.ino()) => {}
        Ok(_) => return Err(StorageError::NotFound),
        Err(e) => return Err(not_found_or_io(e)),
    }
    let mut digest = RunningDigest::load(dir)?;
    if digest.as_ref().is_some_and(|d| offset < d.len) {
        RunningDigest::forget(dir)?;
        digest = None;
    }
    write_part(&file, offset, &data)?;
    let mut marker = std::fs::OpenOptions::new().write(true).create_new(true).open(marker_tmp)?;
    marker.write_all(etag.as_bytes())?;
    drop(marker);
    if let Err(e) = std::fs::rename(marker_tmp, dir.join(span_name(part_number))) {
        // The upload was aborted meanwhile.
        return Err(not_found_or_io(e));
    }
    if let Some(mut digest) = digest.or_else(|| (offset == 0).then(RunningDigest::new)).filter(|d| d.len == offset) {
        digest.hasher.update(&data);
        digest.len += data.len() as u64;
        // The part is stored either way: a digest not advanced is still true, and completion
        // hashes whatever it does not cover.
        let _ = digest.catch_up(dir, &file, part_number + 1).and_then(|()| digest.save(dir));
    }
    Ok(None)
}

/// Writes `data` at `offset`: its block-aligned stretch with `O_DIRECT` where the file system
/// takes it, the rest through the page cache.
///
/// A part is written once and not read again before completion (it is hashed from memory, see
/// [`RunningDigest`]), so the page cache only costs here: copying into it was half the workers'
/// CPU per upload (perf, http-bench), and an upload would push served media out of it. Object
/// stores such as MinIO write objects with `O_DIRECT` for the same reasons.
fn write_part(file: &std::fs::File, offset: u64, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    if offset.is_multiple_of(DIRECT_ALIGN as u64) && aligned > 0 && set_direct(file, true).is_ok() {
        let written = write_direct(file, offset, &data[..aligned], &mut done);
        set_direct(file, false)?;
        match written {
            // The device wants a larger alignment: the page cache takes the rest.
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            other => other?,
        }
    }
    for (i, chunk) in data[done..].chunks(WRITE_CHUNK).enumerate() {
        file.write_all_at(chunk, offset + (done + i * WRITE_CHUNK) as u64)?;
    }
    Ok(())
}

/// Writes `data` (a multiple of [`DIRECT_ALIGN`] long) at `offset` through an aligned buffer,
/// [`DIRECT_CHUNK`] at a time; `done` counts the bytes written.
fn write_direct(file: &std::fs::File, offset: u64, data: &[u8], done: &mut usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    // Allocated per part, not kept per thread: a worker's memory stays parts in flight.
    let size = DIRECT_CHUNK.min(data.len());
    let mut buffer = vec![0; size + DIRECT_ALIGN];
    let start = buffer.as_ptr().align_offset(DIRECT_ALIGN);
    let aligned = &mut buffer[start..start + size];
    while *done < data.len() {
        let n = (data.len() - *done).min(aligned.len());
        aligned[..n].copy_from_slice(&data[*done..*done + n]);
        file.write_all_at(&aligned[..n], offset + *done as u64)?;
        *done += n;
    }
    Ok(())
}

/// Turns `O_DIRECT` on or off for `file` (`fcntl(F_SETFL)`); fails where the file system does not
/// support it (e.g. tmpfs before Linux 6.6).
#[cfg(target_os = "linux")]
fn set_direct(file: &std::fs::File, on: bool) -> io::Result<()> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(file)?;
    Ok(fcntl_setfl(file, if on { flags | OFlags::DIRECT } else { flags - OFlags::DIRECT })?)
}

#[cfg(not(target_os = "linux"))]
fn set_direct(_: &std::fs::File, _: bool) -> io::Result<()> {
    Err(ErrorKind::Unsupported.into())
}

/// The SHA-256 state of an upload data file's first `len` bytes, kept as parts arrive in order,
/// so that completion hashes only the rest instead of reading the whole file back.
///
/// Stored in the upload directory as [`DIGEST_FILE`]: `len` (u64, little-endian), then the
/// hasher's state as sha2 serializes it (`SerializableState`, stable within sha2 0.11; a file
/// that does not parse counts as no digest). Read and written only under the data file's lock.
/// Invariant: bytes `[0, len)` of the data file have not changed since they were hashed, because a
/// write below `len` removes the file first.
struct RunningDigest {
    hasher: Sha256,
    len: u64,
}

impl RunningDigest {
    fn new() -> Self {
        Self { hasher: Sha256::new(), len: 0 }
    }

    /// The digest recorded in `dir`, if there is one.
    fn load(dir: &Path) -> io::Result<Option<Self>> {
        let bytes = match std::fs::read(dir.join(DIGEST_FILE)) {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((len, state)) = bytes.split_first_chunk::<8>() else { return Ok(None) };
        let Ok(state) = SerializedState::<Sha256>::try_from(state) else { return Ok(None) };
        Ok(Sha256::deserialize(&state).ok().map(|hasher| Self { hasher, len: u64::from_le_bytes(*len) }))
    }

    /// Records the digest in `dir`: written aside, then renamed over the old one, so a crash
    /// leaves one or the other.
    fn save(&self, dir: &Path) -> io::Result<()> {
        let mut bytes = self.len.to_le_bytes().to_vec();
        bytes.extend_from_slice(&self.hasher.serialize());
        std::fs::write(dir.join(DIGEST_TMP), bytes)?;
        std::fs::rename(dir.join(DIGEST_TMP), dir.join(DIGEST_FILE))
    }

    /// Removes the digest recorded in `dir`, if any.
    fn forget(dir: &Path) -> io::Result<()> {
        match std::fs::remove_file(dir.join(DIGEST_FILE)) {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Hashes, from the data file, the parts from `next` on that are already written and
    /// continue the digest (parts that arrived before the one that joined them up).
    fn catch_up(&mut self, dir: &Path, data: &std::fs::File, mut next: u32) -> io::Result<()> {
        loop {
            let etag = match std::fs::read_to_string(dir.join(span_name(next))) {
                Ok(etag) => etag,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(e),
            };
            match parse_span_etag(&etag) {
                Some((offset, size)) if offset == self.len => self.read(data, offset + size)?,
                _ => return Ok(()),
            }
            next += 1;
        }
    }

    /// Hashes bytes `[len, end)` of `file`, read back.
    fn read(&mut self, file: &std::fs::File, end: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; end.saturating_sub(self.len).min(ASSEMBLE_BUF as u64) as usize];
        while self.len < end {
            let want = (end - self.len).min(buf.len() as u64) as usize;
            let read = file.read_at(&mut buf[..want], self.len)?;
            if read == 0 {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "file shorter than its parts"));
            }
            self.hasher.update(&buf[..read]);
            self.len += read as u64;
        }
        Ok(())
    }
}

/// The blocking work of [`LocalStore::complete_multipart`].
struct Completion {
    /// The upload directory.
    dir: PathBuf,
    /// Where the upload's data file is moved while it is completed (in `.tmp`).
    staged: PathBuf,
    /// Where the parts are concatenated when they cannot be used in place (in `.tmp`).
    assembled: PathBuf,
    parts: Vec<PartReceipt>,
    min_part: u64,
}

/// Where a listed part's bytes are.
enum Source {
    /// A part file.
    File(std::fs::File),
    /// A range of the data file.
    Span { offset: u64, size: u64 },
}

impl Completion {
    /// Checks the receipts and produces the object, fsynced: in the data file itself (now at
    /// `staged`) if the parts lie in it back to back from offset 0, else concatenated at
    /// `assembled`. Returns (size, sha256 hex, whether in place). Unless the object is the data
    /// file, the data file goes back into the upload directory (so a refused completion leaves
    /// the upload as it was).
    fn run(self) -> Result<(u64, String, bool), StorageError> {
        let data_path = self.dir.join(UPLOAD_DATA_FILE);
        let data = match std::fs::rename(&data_path, &self.staged) {
            Ok(()) => match self.lock_staged() {
                Ok(file) => Some(file),
                Err(e) => {
                    let _ = std::fs::rename(&self.staged, &data_path);
                    return Err(e.into());
                }
            },
            // No data file: an upload from before parts were written in place, or one that is
            // being completed or aborted (the receipts check below tells which).
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        let result = self.finish(data.as_ref());
        if data.is_some() && !matches!(result, Ok((_, _, true))) {
            let _ = std::fs::rename(&self.staged, &data_path);
        }
        result
    }

    /// Opens the staged data file and waits for the parts being written into it (see
    /// [`write_span`]). Marks it as touched, so `sweep_tmp` does not take it for a leftover.
    fn lock_staged(&self) -> io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&self.staged)?;
        file.lock()?;
        file.set_modified(SystemTime::now())?;
        Ok(file)
    }

    fn finish(&self, data: Option<&std::fs::File>) -> Result<(u64, String, bool), StorageError> {
        let mut sources = Vec::with_capacity(self.parts.len());
        let mut in_place = data.is_some();
        let mut total = 0u64;
        for (i, part) in self.parts.iter().enumerate() {
            let n = part.part_number;
            let (source, size) = match parse_span_etag(&part.etag) {
                Some((offset, size)) => {
                    match std::fs::read_to_string(self.dir.join(span_name(n))) {
                        Ok(marker) if marker == part.etag => {}
                        Ok(_) => return Err(changed(n)),
                        Err(e) if is_not_found(&e) => return Err(self.missing(n)),
                        Err(e) => return Err(e.into()),
                    }
                    if data.is_none() {
                        // Recorded, but the data file went away: being completed or aborted.
                        return Err(StorageError::NotFound);
                    }
                    in_place &= offset == total;
                    (Source::Span { offset, size }, size)
                }
                None => {
                    let file = match std::fs::File::open(self.dir.join(n.to_string())) {
                        Ok(file) => file,
                        Err(e) if is_not_found(&e) => return Err(self.missing(n)),
                        Err(e) => return Err(e.into()),
                    };
                    let meta = file.metadata()?;
                    if etag_of(&meta) != part.etag {
                        return Err(changed(n));
                    }
                    in_place = false;
                    (Source::File(file), meta.len())
                }
            };
            if i + 1 < self.parts.len() && size < self.min_part {
                return Err(StorageError::InvalidPart(format!("part {n} is empty")));
            }
            total += size;
            sources.push(source);
        }
        match data {
            Some(file) if in_place => {
                if file.metadata()?.len() < total {
                    // Only a crash loses bytes written before their marker.
                    return Err(StorageError::InvalidPart("the parts' bytes are not all there".into()));
                }
                // Drops whatever lies past the last part (e.g. a longer last part sent earlier).
                file.set_len(total)?;
                let digest = RunningDigest::load(&self.dir)?.filter(|d| d.len <= total);
                Ok((total, hash_and_sync(file, digest.unwrap_or_else(RunningDigest::new), total)?, true))
            }
            _ => {
                let (size, digest) = self.concatenate(sources, data)?;
                Ok((size, digest, false))
            }
        }
    }

    /// Either the whole upload went away (aborted, or completed by another worker) or part `n`
    /// was never stored.
    fn missing(&self, n: u32) -> StorageError {
        match std::fs::metadata(self.dir.join(UPLOAD_KEY_FILE)) {
            Err(e) if is_not_found(&e) => StorageError::NotFound,
            _ => StorageError::InvalidPart(format!("part {n} was not uploaded")),
        }
    }

    /// Copies `sources` in order into a new file at `assembled`, hashing as it goes, and fsyncs
    /// it. Returns (size, sha256 hex).
    fn concatenate(&self, sources: Vec<Source>, data: Option<&std::fs::File>) -> Result<(u64, String), StorageError> {
        use std::io::{Read, Write};
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&self.assembled)?;
        let mut writer = std::io::BufWriter::with_capacity(ASSEMBLE_BUF, file);
        let mut hasher = Sha256::new();
        let mut size = 0;
        let mut buf = vec![0; ASSEMBLE_BUF];
        for source in sources {
            match (source, data) {
                (Source::File(mut file), _) => loop {
                    let read = file.read(&mut buf)?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buf[..read]);
                    writer.write_all(&buf[..read])?;
                    size += read as u64;
                },
                (Source::Span { offset, size: len }, Some(data)) => {
                    let mut done = 0;
                    while done < len {
                        let want = (len - done).min(buf.len() as u64) as usize;
                        let read = data.read_at(&mut buf[..want], offset + done)?;
                        if read == 0 {
                            return Err(StorageError::InvalidPart("the parts' bytes are not all there".into()));
                        }
                        hasher.update(&buf[..read]);
                        writer.write_all(&buf[..read])?;
                        done += read as u64;
                    }
                    size += len;
                }
                // `finish` refuses span receipts without a data file.
                (Source::Span { .. }, None) => return Err(StorageError::NotFound),
            }
        }
        writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok((size, hex::encode(hasher.finalize())))
    }
}

fn changed(part_number: u32) -> StorageError {
    StorageError::InvalidPart(format!("part {part_number} changed since its receipt"))
}

/// SHA-256 (hex) of the first `len` bytes of `file`: `digest` carried on over the bytes it does
/// not cover yet, read back, while another thread fsyncs the file (the disk write overlaps the
/// hashing).
fn hash_and_sync(file: &std::fs::File, mut digest: RunningDigest, len: u64) -> io::Result<String> {
    std::thread::scope(|scope| {
        // Without a thread to spare, the fsync runs after the hashing instead.
        let synced = std::thread::Builder::new().spawn_scoped(scope, || file.sync_all()).ok();
        digest.read(file, len)?;
        match synced {
            Some(synced) => synced.join().map_err(|_| io::Error::other("fsync thread panicked"))??,
            None => file.sync_all()?,
        }
        Ok(hex::encode(digest.hasher.finalize()))
    })
}

/// Writes `data` to a new file at `path` and fsyncs it; returns the open file.
async fn write_synced(path: &Path, data: &[u8]) -> io::Result<File> {
    let mut file = new_file(path).await?;
    file.write_all(data).await?;
    file.sync_all().await?;
    Ok(file)
}

/// Renames the finished temp file onto `dest` (creating parent directories), then fsyncs the
/// parent so the rename itself survives a crash.
async fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().expect("object paths are below the root");
    fs::create_dir_all(parent).await?;
    fs::rename(tmp, dest).await?;
    File::open(parent).await?.sync_all().await
}

fn file_meta(meta: &std::fs::Metadata) -> Result<ObjectMeta, StorageError> {
    if !meta.is_file() {
        // A directory under the key holds other keys, not an object.
        return Err(StorageError::NotFound);
    }
    Ok(ObjectMeta { size: meta.len(), last_modified: meta.modified()?, etag: etag_of(meta) })
}

fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta.modified().ok().and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok()).unwrap_or_default();
    format!("{:x}-{:x}", meta.len(), mtime.as_nanos())
}

/// "No such file", including "a path component is a file, not a directory" (key `a/b` when `a`
/// is an object).
fn is_not_found(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn not_found_or_io(e: io::Error) -> StorageError {
    if is_not_found(&e) { StorageError::NotFound } else { StorageError::Io(e) }
}
