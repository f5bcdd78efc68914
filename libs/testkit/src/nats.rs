//! A real nats-server with JetStream, for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{free_port, repo_root, server_bin, wait_for_port};

/// The users of `nats/permissions.conf` the harness defines, each with the permission set of the
/// same role: `(user, permission variable)`.
pub const NATS_USERS: [(&str, &str); 5] =
    [("bridge", "BRIDGE"), ("media", "MEDIA"), ("auth", "AUTH"), ("processor", "PROCESSOR"), ("backend", "BACKEND")];

/// A nats-server on 127.0.0.1 with JetStream stored in a temp dir; killed when dropped.
///
/// The config allows 8 MiB messages so services, not the server, enforce their own body limits.
/// Authorization is the project's: `nats/permissions.conf` (linked into the server's directory) bound to
/// the users of [`NATS_USERS`] with [`NatsServer::password`]. A connection without credentials
/// is the harness-only user `harness`, which may do anything (tests of the framework, demo
/// subjects, NestJS harnesses, observers).
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

    /// Starts a server whose config file also contains `extra` (nats-server config syntax).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("jetstream");
        // nats-server resolves `include` paths under the config's directory, even absolute ones:
        // a link there brings in the repository's file itself.
        let permissions = repo_root().join("nats/permissions.conf");
        std::os::unix::fs::symlink(&permissions, dir.path().join("permissions.conf")).expect("link permissions.conf");
        let users: String = NATS_USERS
            .iter()
            .map(|(user, set)| format!("    {{user: {user}, password: {:?}, permissions: ${set}}}\n", password(user)))
            .collect();
        let text = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n\
             include \"permissions.conf\"\nauthorization {{\n  users = [\n{users}    {{user: harness, password: {:?}}}\n  ]\n}}\n\
             no_auth_user: harness\n{extra}\n",
            password("harness")
        );
        std::fs::write(&config, text).expect("write nats.conf");
        let mut server = Self { child: None, port, config, _dir: dir };
        server.resume();
        server
    }

    /// `nats://127.0.0.1:<port>`. Without credentials a client is the full-rights `harness` user;
    /// with `user` and [`NatsServer::password`] one of [`NATS_USERS`] (the NATS clients ignore
    /// credentials in URLs, so they are not in it).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The password of `user` on this server (for one of [`NATS_USERS`]).
    pub fn password(&self, user: &str) -> String {
        password(user)
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

/// Test passwords: only this harness's servers, on 127.0.0.1, know them.
fn password(user: &str) -> String {
    format!("{user}-test-password")
}
