//! The local filesystem backend: one file per object under a root directory.
//!
//! Layout under `root`:
//! - `<key>`: the object (keys may contain `/`, which become directories);
//! - `.tmp/`: files being written, renamed into place when complete;
//! - `.uploads/<upload id>/`: a multipart upload: `key` (the object key it belongs to) and one file
//!   per part named by its number.
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

use crate::{
    BlobStore, ByteRange, ByteStream, ObjectMeta, PartReceipt, StorageError, Stored, check_part_number, hex_digest,
    validate_key, validate_part_list,
};

const TMP_DIR: &str = ".tmp";
const UPLOADS_DIR: &str = ".uploads";
/// The file in an upload directory naming the key the upload belongs to.
const UPLOAD_KEY_FILE: &str = "key";
/// Read/write buffer: big enough to keep syscalls (each a blocking-pool hop in tokio) rare.
const IO_BUF: usize = 256 * 1024;
/// Buffer of the blocking part assembly: one per completion in progress.
const ASSEMBLE_BUF: usize = 1024 * 1024;

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
            std::io::Write::write_all(&mut file, &data)?;
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
        Ok(PartReceipt { part_number, etag, size })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<PartReceipt>, StorageError> {
        let dir = self.upload_dir(key, upload_id).await?;
        let mut entries = fs::read_dir(&dir).await.map_err(not_found_or_io)?;
        let mut parts = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let Some(part_number) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue; // the key file
            };
            let meta = match entry.metadata().await {
                Ok(meta) => meta,
                Err(e) if is_not_found(&e) => continue, // replaced or removed meanwhile
                Err(e) => return Err(e.into()),
            };
            parts.push(PartReceipt { part_number, etag: etag_of(&meta), size: meta.len() });
        }
        parts.sort_by_key(|p| p.part_number);
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
        let tmp = TempPath(Some(self.tmp_path("complete")));
        let (out_path, parts_dir, receipts) = (tmp.path().to_owned(), dir.clone(), parts.to_vec());
        let min_part = self.min_part_size();
        // Read, hash and write in one blocking task (tokio::fs would hop per buffer).
        let (size, digest) = tokio::task::spawn_blocking(move || assemble(&parts_dir, &receipts, min_part, &out_path))
            .await
            .map_err(io::Error::other)??;
        publish(tmp.path(), &dest).await?;
        tmp.keep();
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
    Ok(Stored { size, sha256_hex: hex_digest(hasher.finalize()) })
}

/// Writes `data` to a new file at `path` and fsyncs it; returns the open file.
/// Concatenates `parts` of the upload in `dir` into a new file at `out`, hashing as it goes, and
/// fsyncs it. Returns (size, sha256 hex). Refuses a part that is missing or changed since its
/// receipt, and a non-last part under `min_part` bytes.
fn assemble(dir: &Path, parts: &[PartReceipt], min_part: u64, out: &Path) -> Result<(u64, String), StorageError> {
    use std::io::{Read, Write};
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(out)?;
    let mut writer = std::io::BufWriter::with_capacity(ASSEMBLE_BUF, file);
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut buf = vec![0; ASSEMBLE_BUF];
    for (i, part) in parts.iter().enumerate() {
        let n = part.part_number;
        let mut file = match std::fs::File::open(dir.join(n.to_string())) {
            Ok(file) => file,
            Err(e) if is_not_found(&e) => {
                // Either the whole upload went away (aborted, or completed by another worker)
                // or this one part was never stored.
                return Err(match std::fs::metadata(dir.join(UPLOAD_KEY_FILE)) {
                    Err(e) if is_not_found(&e) => StorageError::NotFound,
                    _ => StorageError::InvalidPart(format!("part {n} was not uploaded")),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if etag_of(&meta) != part.etag {
            return Err(StorageError::InvalidPart(format!("part {n} changed since its receipt")));
        }
        if i + 1 < parts.len() && meta.len() < min_part {
            return Err(StorageError::InvalidPart(format!("part {n} is empty")));
        }
        loop {
            let read = file.read(&mut buf)?;
            if read == 0 {
                break;
            }
            hasher.update(&buf[..read]);
            writer.write_all(&buf[..read])?;
            size += read as u64;
        }
    }
    writer.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok((size, hex_digest(hasher.finalize())))
}

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
