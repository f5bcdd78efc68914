//! Logging set-up shared by every mediabus binary.

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing human-readable lines to stderr, filtered by `RUST_LOG`
/// (default `info`). Call once at the start of `main`; later calls are ignored.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
