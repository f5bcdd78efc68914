//! The media service's failures and their one mapping onto the wire error (DESIGN §3).

use mediabus_auth::AuthError;
use mediabus_rpc::RpcError;
use mediabus_storage::StorageError;
use mediabus_store::StoreError;

/// Everything a media subject can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    /// Also what a caller gets for media it may not see (no existence leak).
    #[error("media not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("the file is empty")]
    EmptyFile,
    #[error("content type {0} is not accepted")]
    UnsupportedType(String),
    #[error("the file exceeds {limit} bytes for its type")]
    TooLarge { limit: u64 },
    #[error("upload not found or expired")]
    UploadNotFound,
    /// A per-user quota (`[quota]`) would be exceeded; the message names it.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    IncompleteUpload(String),
    #[error("a request with this idempotency key is still in progress")]
    InProgress,
    #[error("file store: {0}")]
    Storage(#[from] StorageError),
    #[error("document store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signing(#[from] mediabus_auth::SignError),
}

impl From<MediaError> for RpcError {
    fn from(err: MediaError) -> Self {
        let (status, code) = match &err {
            MediaError::Unauthenticated(_) => (401, "UNAUTHENTICATED"),
            MediaError::Forbidden(_) => (403, "FORBIDDEN"),
            MediaError::NotFound => (404, "NOT_FOUND"),
            MediaError::Invalid(_) => (400, "VALIDATION_FAILED"),
            MediaError::EmptyFile => (400, "EMPTY_FILE"),
            MediaError::UnsupportedType(_) => (415, "UNSUPPORTED_MEDIA_TYPE"),
            MediaError::TooLarge { .. } => (413, "FILE_TOO_LARGE"),
            MediaError::UploadNotFound => (404, "UPLOAD_NOT_FOUND"),
            MediaError::QuotaExceeded(_) => (413, "QUOTA_EXCEEDED"),
            MediaError::IncompleteUpload(_) => (400, "INCOMPLETE_UPLOAD"),
            MediaError::InProgress => (409, "IDEMPOTENCY_IN_PROGRESS"),
            MediaError::Store(StoreError::InvalidCursor) => (400, "INVALID_CURSOR"),
            MediaError::Store(StoreError::NotFound) => (404, "NOT_FOUND"),
            MediaError::Store(StoreError::Conflict(_)) => (409, "CONFLICT"),
            MediaError::Storage(StorageError::NotFound) => (404, "NOT_FOUND"),
            MediaError::Signing(_) => {
                tracing::error!(error = %err, "content token");
                return RpcError::internal();
            }
            MediaError::Store(_) | MediaError::Storage(_) => {
                // Outages and corrupt data: details for the logs only.
                tracing::error!(error = %err, "backend failure");
                return RpcError::new(503, "BACKEND_UNAVAILABLE", "storage is unavailable, retry later");
            }
        };
        RpcError::new(status, code, err.to_string())
    }
}

/// Shorthand for handler results.
pub type Result<T, E = MediaError> = std::result::Result<T, E>;
