//! Which file store to open, as read from a service's `[storage]` settings section.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::{BlobStore, LocalStore, S3Config, S3Store, StorageError};

/// The `[storage]` section shared by every process that reads or writes files (media service,
/// HTTP bridge): they must name the same store.
///
/// ```toml
/// backend = "local"          # files under `root`
/// root = "data/files"
/// # or: backend = "s3", endpoint = "http://127.0.0.1:8333", region, bucket, access_key, secret_key
/// ```
#[derive(Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StorageConfig {
    /// Files under `root` (created if missing).
    Local { root: PathBuf },
    /// An S3-compatible bucket (path-style addressing; created if missing).
    S3 { endpoint: Option<String>, region: String, bucket: String, access_key: String, secret_key: String },
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials stay out of logs.
        match self {
            Self::Local { root } => f.debug_struct("Local").field("root", root).finish(),
            Self::S3 { endpoint, bucket, .. } => {
                f.debug_struct("S3").field("endpoint", endpoint).field("bucket", bucket).finish_non_exhaustive()
            }
        }
    }
}

impl StorageConfig {
    /// The S3 client settings, for `backend = "s3"`.
    pub fn s3_config(&self) -> Option<S3Config> {
        match self {
            Self::S3 { endpoint, region, bucket, access_key, secret_key } => Some(S3Config {
                endpoint: endpoint.clone(),
                region: region.clone(),
                bucket: bucket.clone(),
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                force_path_style: true,
            }),
            Self::Local { .. } => None,
        }
    }

    /// Opens the store: creates the local root, or checks (and creates if missing) the bucket.
    ///
    /// Errors: the root cannot be created, or the bucket cannot be reached.
    pub async fn open(&self) -> Result<Arc<dyn BlobStore>, StorageError> {
        match (self, self.s3_config()) {
            (Self::Local { root }, _) => Ok(Arc::new(LocalStore::new(root)?)),
            (Self::S3 { .. }, Some(s3)) => {
                let s3 = S3Store::new(s3);
                s3.ensure_bucket().await?;
                Ok(Arc::new(s3))
            }
            (Self::S3 { .. }, None) => unreachable!("s3_config is Some for S3"),
        }
    }
}
