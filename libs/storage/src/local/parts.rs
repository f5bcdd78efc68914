//! Multipart uploads of the local store ([`super::LocalStore`]): parts written in place into an
//! upload's data file (`O_DIRECT` where the file system takes it), the running digest of the parts
//! that arrived in order ([`RunningDigest`]), and completion ([`Completion`]), which turns the
//! parts into the object with as little copying and re-reading as the parts allow.

use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use super::{
    ASSEMBLE_BUF, SPAN_ETAG_PREFIX, SPAN_SUFFIX, UPLOAD_DATA_FILE, UPLOAD_KEY_FILE, etag_of, is_not_found,
    not_found_or_io,
};
use crate::{PartReceipt, StorageError};

/// Largest single write(2) of a part through the page cache (where `O_DIRECT` is not taken, see
/// [`write_part`]). Measured on Linux 6.18 / ext4 (a VM), http-bench (512 MiB uploads, two
/// workers): 1 MiB calls cost the workers 1.95–1.97 CPU-s per upload, 128–256 KiB calls
/// 1.39–1.41 s, 16–64 KiB 1.46–1.74 s (more calls). 5 MiB calls were slower still: the page cache
/// allocates folios as large as the write, and large ones are slow to come by.
pub(super) const WRITE_CHUNK: usize = 256 * 1024;
/// `O_DIRECT` writes need offsets, lengths and buffer addresses aligned to the device's logical
/// block size: 4 KiB covers common devices (a larger one makes the write fall back, see
/// [`write_part`]).
const DIRECT_ALIGN: usize = 4096;
/// Bytes per `O_DIRECT` write(2): 1 MiB went at ~800–900 MiB/s on this VM's disk, 256 KiB at ~650.
const DIRECT_CHUNK: usize = 1024 * 1024;
/// In an upload directory: the running digest of the data file ([`RunningDigest`]), and the temp
/// name it is rewritten under (one name is enough: only the holder of the data file's lock
/// writes it).
const DIGEST_FILE: &str = "sha256";
const DIGEST_TMP: &str = "sha256.tmp";

/// `<n>.span`: the marker of part `n` in an upload's data file.
pub(super) fn span_name(part_number: u32) -> String {
    format!("{part_number}{SPAN_SUFFIX}")
}

/// `(offset, size)` of a part in the data file, from its etag; `None` for other etags.
pub(super) fn parse_span_etag(etag: &str) -> Option<(u64, u64)> {
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
pub(super) fn write_span(
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
pub(super) struct Completion {
    /// The upload directory.
    pub(super) dir: PathBuf,
    /// Where the upload's data file is moved while it is completed (in `.tmp`).
    pub(super) staged: PathBuf,
    /// Where the parts are concatenated when they cannot be used in place (in `.tmp`).
    pub(super) assembled: PathBuf,
    pub(super) parts: Vec<PartReceipt>,
    pub(super) min_part: u64,
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
    pub(super) fn run(self) -> Result<(u64, String, bool), StorageError> {
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

pub(super) fn changed(part_number: u32) -> StorageError {
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
