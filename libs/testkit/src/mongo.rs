//! A MongoDB for one test: a real server when `MONGODB_URI` is set, else the nx-27017 stand-in.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::{START_ATTEMPTS, free_port, server_bin, wait_for_own_port};

/// A MongoDB endpoint plus a database name no other test uses.
///
/// - `MONGODB_URI` set (e.g. `mongodb://127.0.0.1:27017` for a real MongoDB 6+): that server is
///   used and nothing is started. The database name is unique per test and run, so parallel tests
///   and repeated runs never see each other's documents; dropping it afterwards is up to the test
///   (this crate has no MongoDB client), and harmless to skip.
/// - Otherwise: nx-27017 (a MongoDB wire-protocol server on SQLite, from PyPI) on a free port with
///   its data in a temp dir, killed when this is dropped. `NX_27017_BIN` overrides its path.
pub struct MongoServer {
    uri: String,
    database: String,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl MongoServer {
    /// Starts nx-27017, or uses `MONGODB_URI` (see the type docs). Panics if nx-27017 does not
    /// start within 15 s (tries up to [`START_ATTEMPTS`] ports).
    pub fn start() -> Self {
        let database = unique_database_name();
        if let Some(uri) = std::env::var("MONGODB_URI").ok().filter(|u| !u.is_empty()) {
            return Self { uri, database, child: None, _dir: None };
        }
        let dir = tempfile::tempdir().expect("temp dir");
        // A port from free_port may be taken before nx-27017 binds it (then it exits) or be
        // another test's server: retry with a fresh port until ours is the one listening.
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            let mut child = Command::new(server_bin("NX_27017_BIN", "nx-27017"))
                .args(["--host", "127.0.0.1", "-p", &port.to_string()])
                .arg("--data-dir")
                .arg(dir.path())
                .arg("--log-file")
                .arg(dir.path().join("nx.log"))
                .arg("--pid-file")
                .arg(dir.path().join("nx.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn nx-27017");
            match wait_for_own_port(&mut child, port, Duration::from_secs(15)) {
                Ok(()) => {
                    let uri = format!("mongodb://127.0.0.1:{port}/");
                    return Self { uri, database, child: Some(child), _dir: Some(dir) };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(dir.path().join("nx.log")).unwrap_or_default();
                    assert!(attempt < START_ATTEMPTS, "nx-27017 did not start on 127.0.0.1:{port} ({why:?}):\n{log}");
                }
            }
        }
        unreachable!("the last attempt panics")
    }

    /// A `mongodb://` connection string for the server.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// A database name unique to this server handle: `mediabus_test_<pid>_<n>_<millis>`.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// True when this is the nx-27017 stand-in, false for a server from `MONGODB_URI`.
    pub fn is_stand_in(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique_database_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("mediabus_test_{}_{}_{millis}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
