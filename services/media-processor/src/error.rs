//! Why a processing step failed, split by what the job runtime does next.

/// The outcome of a failed step.
///
/// - [`ProcessError::Rejected`]: the media itself is at fault (corrupt, over a limit, unsupported).
///   Retrying cannot help: the media ends `FAILED` at once and the message becomes its
///   `failureReason`, so it must be readable by the owner and say nothing about the host.
/// - [`ProcessError::Transient`]: the machine or a backend failed (I/O, file store, a tool that
///   could not start). The job is handed back (nak with backoff) and retried up to `max_deliver`.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{0}")]
    Rejected(String),
    #[error("transient: {0}")]
    Transient(String),
}

impl ProcessError {
    /// A [`ProcessError::Rejected`] with `reason` (shown to the owner as `failureReason`).
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::Rejected(reason.into())
    }

    /// A [`ProcessError::Transient`] with `what` (for logs only).
    pub fn transient(what: impl Into<String>) -> Self {
        Self::Transient(what.into())
    }
}

impl From<std::io::Error> for ProcessError {
    fn from(e: std::io::Error) -> Self {
        Self::Transient(format!("i/o: {e}"))
    }
}

/// Shorthand for results of processing steps.
pub type Result<T, E = ProcessError> = std::result::Result<T, E>;
