//! One contract, two backends: every check in `contract` runs against a `LocalStore` in a temp dir
//! and an `S3Store` on a real SeaweedFS (one server for this test binary, one bucket per test).
//! Backend-specific checks (no temp file left, no multipart upload left) follow in `local_fs` and
//! `s3`.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mediabus_storage::{
    BlobStore, ByteRange, ByteStream, DIGEST_PREFIX, LocalStore, S3Config, S3Store, StorageError, body_from_bytes,
    new_key,
};
use mediabus_testkit::SeaweedS3;
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;
const SHA256_EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// ---------------------------------------------------------------------------------------------
// Test data: a deterministic pseudo-random byte source, so big bodies are generated chunk by
// chunk on both sides (put and check) instead of being held in memory.

/// xorshift64* bytes; `seed` picks the sequence.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    Pattern::new(seed).fill(&mut buf);
    buf
}

/// `total` pattern bytes as a stream of `chunk`-sized chunks (the last one shorter).
fn pattern_stream(seed: u64, total: usize, chunk: usize) -> ByteStream {
    let state = (Pattern::new(seed), total);
    Box::pin(futures_util::stream::unfold(state, move |(mut pattern, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0; left.min(chunk)];
        pattern.fill(&mut buf);
        let left = left - buf.len();
        Some((Ok(Bytes::from(buf)), (pattern, left)))
    }))
}

/// The size and SHA-256 of what `pattern_stream(seed, total, chunk)` yields, computed apart.
async fn pattern_digest(seed: u64, total: usize, chunk: usize) -> (u64, String) {
    digest_stream(pattern_stream(seed, total, chunk)).await
}

fn chunks(parts: &[&'static [u8]]) -> ByteStream {
    Box::pin(futures_util::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>()))
}

/// `ok_bytes` pattern bytes in 1 MiB chunks, then an I/O error, as a client that goes away.
fn failing_stream(ok_bytes: usize) -> ByteStream {
    let failure = futures_util::stream::iter([Err(io::Error::other("client went away"))]);
    Box::pin(pattern_stream(9, ok_bytes, MIB).chain(failure))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    out
}

async fn digest_stream(mut body: ByteStream) -> (u64, String) {
    let (mut size, mut hasher) = (0, Sha256::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("body chunk");
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (size, hex::encode(hasher.finalize()))
}

async fn get_bytes(store: &dyn BlobStore, key: &str) -> Vec<u8> {
    let (meta, body) = store.get(key, None).await.expect("get");
    let data = read_all(body).await;
    assert_eq!(meta.size, data.len() as u64, "meta.size of {key}");
    data
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StorageError>, what: &str) {
    assert!(matches!(result, Err(StorageError::NotFound)), "{what}: expected NotFound, got {result:?}");
}

// The contract: what every BlobStore does.
mod contract;
// The local filesystem backend.
mod local_fs;
// The S3 backend on SeaweedFS.
mod s3;
