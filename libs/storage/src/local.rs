//! The local filesystem backend: one file per object under a root directory.
//!
//! Layout under `root`:
//! - `<key>`: the object (keys may contain `/`, which become directories);
//! - `.tmp/`: files being written, renamed into place when complete;
//! - `.uploads/<upload id>/`: a multipart upload: `key` (the object key it belongs to); `data`,
//!   the file parts put with their offset ([`BlobStore::put_part_at`]) are written into in place,
//!   each recorded by a marker `<n>.span` holding its receipt's etag; `sha256`, the running
//!   digest of `data`'s first bytes (`parts::RunningDigest`); and one file per part put without
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
use sha2::{Digest, Sha256};
use tokio::fs::{self, File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use self::parts::{Completion, WRITE_CHUNK, parse_span_etag, span_name, write_span};
use crate::{
    BlobStore, ByteRange, ByteStream, IncompleteUpload, ListedObject, ObjectMeta, PartReceipt, StorageError, Stored,
    check_part_number, clamp_list_limit, validate_key, validate_part_list, validate_prefix,
};

// Parts written in place, their running digest, and completion.
mod parts;

const TMP_DIR: &str = ".tmp";
const UPLOADS_DIR: &str = ".uploads";
/// The file in an upload directory naming the key the upload belongs to.
const UPLOAD_KEY_FILE: &str = "key";
/// Read/write buffer: big enough to keep syscalls (each a blocking-pool hop in tokio) rare.
const IO_BUF: usize = 256 * 1024;
/// Buffer of the blocking reads of parts (assembly, hashing parts read back).
const ASSEMBLE_BUF: usize = 1024 * 1024;
/// In an upload directory: the file parts put with an offset are written into.
const UPLOAD_DATA_FILE: &str = "data";
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
