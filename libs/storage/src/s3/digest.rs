//! The running SHA-256 of an S3 multipart upload, so that completion reads back only the bytes
//! no part handler hashed instead of downloading the whole object again.
//!
//! Parts reach different workers and S3 cannot read an incomplete upload's parts back, so the
//! hasher's state travels in a small object of its own, [`digest_key`]: the worker that stores
//! the part continuing the hashed prefix (part 1 starts it) hashes it from memory and writes the
//! state back. Writes are last-writer-wins, so the state also names what it covers: the number of
//! parts and a SHA-256 chained over their ETags (S3 gives a part new bytes a new ETag). Completion
//! uses it only if that chain matches the receipts it completes with; anything else (a lost
//! race, a part sent again with other bytes, a swept state) falls back to hashing more of the
//! object, never to a wrong checksum.

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Digest, Sha256};

use crate::PartReceipt;

/// Objects under this prefix are the store's own upload state (one per upload in flight), not
/// media: completion and abort remove them, [`crate::BlobStore::sweep_temp`] removes abandoned ones.
pub const DIGEST_PREFIX: &str = "digests/";

/// Format tag of an encoded [`PartsDigest`] (version 1).
const MAGIC: &[u8; 4] = b"MBD1";
/// Largest encoded state read back: the fixed fields and sha2's serialized state (~110 bytes).
pub(super) const MAX_ENCODED: usize = 1024;

/// The key of the digest object of upload `upload_id`. Upload ids are opaque strings that may
/// hold characters keys refuse, so a hash of the id names it.
pub(super) fn digest_key(upload_id: &str) -> String {
    format!("{DIGEST_PREFIX}{}", hex::encode(&Sha256::digest(upload_id.as_bytes())[..16]))
}

/// SHA-256 of an upload's first `len` bytes: parts `1..=parts`, in order.
#[derive(Clone)]
pub(super) struct PartsDigest {
    pub hasher: Sha256,
    /// Bytes hashed.
    pub len: u64,
    /// Parts hashed (`1..=parts`).
    pub parts: u32,
    /// `SHA-256(previous chain || ETag)` over the hashed parts, from 32 zero bytes.
    chain: [u8; 32],
}

impl PartsDigest {
    pub fn new() -> Self {
        Self { hasher: Sha256::new(), len: 0, parts: 0, chain: [0; 32] }
    }

    /// Hashes part `parts + 1`, whose receipt carries `etag`.
    pub fn push(&mut self, data: &[u8], etag: &str) {
        self.hasher.update(data);
        self.len += data.len() as u64;
        self.parts += 1;
        self.chain = chain(&self.chain, etag);
    }

    /// Whether this digest covers exactly the first `self.parts` of `receipts` (ascending part
    /// numbers from 1): same ETags, same sizes.
    pub fn matches(&self, receipts: &[PartReceipt]) -> bool {
        let Some(covered) = receipts.get(..self.parts as usize) else { return false };
        let mut link = [0; 32];
        let mut len = 0;
        for (i, part) in covered.iter().enumerate() {
            if part.part_number as usize != i + 1 {
                return false;
            }
            link = chain(&link, &part.etag);
            len += part.size;
        }
        link == self.chain && len == self.len
    }

    /// `MAGIC`, `len` (u64 LE), `parts` (u32 LE), the chain, then sha2's serialized state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.parts.to_le_bytes());
        out.extend_from_slice(&self.chain);
        out.extend_from_slice(&self.hasher.serialize());
        out
    }

    /// The digest `bytes` encode, `None` for anything else (an unknown version included).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_first_chunk::<8>()?;
        let (parts, rest) = rest.split_first_chunk::<4>()?;
        let (chain, state) = rest.split_first_chunk::<32>()?;
        let state = SerializedState::<Sha256>::try_from(state).ok()?;
        Some(Self {
            hasher: Sha256::deserialize(&state).ok()?,
            len: u64::from_le_bytes(*len),
            parts: u32::from_le_bytes(*parts),
            chain: *chain,
        })
    }
}

fn chain(previous: &[u8; 32], etag: &str) -> [u8; 32] {
    Sha256::new().chain_update(previous).chain_update(etag.as_bytes()).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(part_number: u32, etag: &str, size: u64) -> PartReceipt {
        PartReceipt { part_number, etag: etag.into(), size }
    }

    #[test]
    fn a_digest_survives_encoding_and_continues_the_same_hash() {
        let mut digest = PartsDigest::new();
        digest.push(b"hello ", "\"a\"");
        let mut back = PartsDigest::decode(&digest.encode()).expect("decodes");
        assert_eq!((back.len, back.parts), (6, 1));
        back.push(b"world", "\"b\"");
        assert_eq!(back.hasher.finalize().as_slice(), Sha256::digest(b"hello world").as_slice());
        assert!(PartsDigest::decode(b"MBD2").is_none());
        assert!(PartsDigest::decode(&digest.encode()[..40]).is_none());
    }

    #[test]
    fn matches_only_the_parts_it_hashed() {
        let mut digest = PartsDigest::new();
        digest.push(&[0; 5], "\"a\"");
        digest.push(&[0; 5], "\"b\"");
        let parts = [receipt(1, "\"a\"", 5), receipt(2, "\"b\"", 5), receipt(3, "\"c\"", 2)];
        assert!(digest.matches(&parts));
        // Part 2 sent again with other bytes after it was hashed: its new ETag breaks the chain.
        assert!(!digest.matches(&[receipt(1, "\"a\"", 5), receipt(2, "\"x\"", 5)]));
        assert!(!digest.matches(&parts[..1]), "covers more parts than completed");
        assert!(!digest.matches(&[receipt(1, "\"a\"", 5), receipt(3, "\"b\"", 5)]), "a gap");
        assert!(PartsDigest::new().matches(&parts), "the empty digest covers nothing, rightly");
    }
}
