//! A real nats-server with JetStream, for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, server_bin, wait_for_port};

/// A nats-server on 127.0.0.1 with JetStream stored in a temp dir; killed when dropped.
///
/// The config allows 8 MiB messages so services, not the server, enforce their own body limits.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    config: PathBuf,
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server whose config file also contains `extra` (nats-server config syntax, e.g.
    /// an `authorization { ... }` block).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("jetstream");
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n{extra}\n"
        );
        std::fs::write(&config, text).expect("write nats.conf");
        let mut server = Self { child: None, port, config, _dir: dir };
        server.resume();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL), as a crash would; clients start reconnecting.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same config and JetStream data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        let child = Command::new(server_bin("NATS_SERVER_BIN", "nats-server"))
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10), "nats-server");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
