//! A real nats-server with JetStream, for one test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{repo_root, server_bin, wait_for_own_port};

/// How long nats-server may take to listen (milliseconds when idle).
const START_LIMIT: Duration = Duration::from_secs(10);

/// The users of `nats/permissions.conf` the harness defines, each with the permission set of the
/// same role: `(user, permission variable)`.
pub const NATS_USERS: [(&str, &str); 5] =
    [("bridge", "BRIDGE"), ("media", "MEDIA"), ("auth", "AUTH"), ("processor", "PROCESSOR"), ("backend", "BACKEND")];

/// A nats-server on 127.0.0.1 with JetStream stored in a temp dir; killed when dropped.
///
/// The server picks its own port (`port: -1`) and reports it in its ports file
/// (`ports_file_dir`), so parallel tests never race for a port; [`NatsServer::resume`] reuses it.
///
/// The config allows 8 MiB messages so services, not the server, enforce their own body limits.
/// Authorization is the project's: `nats/permissions.conf` (linked into the server's directory) bound to
/// the users of [`NATS_USERS`] with [`NatsServer::password`]. A connection without credentials
/// is the harness-only user `harness`, which may do anything (tests of the framework, demo
/// subjects, NestJS harnesses, observers).
pub struct NatsServer {
    child: Option<Child>,
    /// 0 until the first start has read it from the ports file.
    port: u16,
    config: PathBuf,
    /// The config without its `port` line (added per start).
    text: String,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a port of its choosing.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts a server whose config file also contains `extra` (nats-server config syntax; give
    /// any further listener `port: -1` too, never a port from `free_port`).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("nats.conf");
        let store = dir.path().join("jetstream");
        let text = format!(
            "host: \"127.0.0.1\"\nports_file_dir: {ports:?}\nmax_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n\
             {authorization}{extra}\n",
            authorization = authorization(dir.path()),
            ports = dir.path()
        );
        let mut server = Self { child: None, port: 0, config, text, dir };
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

    /// Starts the server again on the same port with the same config and JetStream data (the
    /// first start takes a port of the server's choosing).
    ///
    /// Panics if the server exits or does not listen within 10 s (on a resume: the port was taken
    /// meanwhile).
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server already running");
        // -1: the server picks a free port itself, atomically.
        let port = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        std::fs::write(&self.config, format!("port: {port}\n{}", self.text)).expect("write nats.conf");
        let log = self.dir.path().join("nats.log");
        let mut child = Command::new(server_bin("NATS_SERVER_BIN", "nats-server"))
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .expect("spawn nats-server");
        if self.port == 0 {
            self.port = self.read_ports_file(&mut child);
        }
        let started = wait_for_own_port(&mut child, self.port, START_LIMIT);
        self.child = Some(child);
        if let Err(why) = started {
            self.kill();
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("nats-server did not listen on {} ({why:?}):\n{log}", self.port);
        }
    }

    /// The client port from the ports file the server writes once it listens
    /// (`<dir>/<binary>_<pid>.ports`, JSON `{"nats":["nats://127.0.0.1:<port>"],...}`).
    fn read_ports_file(&self, child: &mut Child) -> u16 {
        let suffix = format!("_{}.ports", child.id());
        let start = Instant::now();
        loop {
            let file = std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
            if let Some(port) = file.and_then(|f| std::fs::read_to_string(f.path()).ok()).and_then(|t| client_port(&t))
            {
                return port;
            }
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if exited || start.elapsed() > START_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default();
                panic!("nats-server wrote no ports file (exited: {exited}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The port of the first `nats://` URL in a ports file's JSON.
fn client_port(json: &str) -> Option<u16> {
    let urls = &json[json.find("\"nats\"")?..];
    let url = &urls[urls.find("nats://")? + "nats://".len()..];
    let host_port = &url[..url.find('"')?];
    host_port.rsplit(':').next()?.parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The authorization part of a harness server's config in `dir`: `nats/permissions.conf` (linked
/// into `dir`) bound to the users of [`NATS_USERS`] with their test passwords, and the full-rights
/// `harness` user for connections without credentials.
pub(crate) fn authorization(dir: &std::path::Path) -> String {
    // nats-server resolves `include` paths under the config's directory, even absolute ones:
    // a link there brings in the repository's file itself.
    let permissions = repo_root().join("nats/permissions.conf");
    std::os::unix::fs::symlink(&permissions, dir.join("permissions.conf")).expect("link permissions.conf");
    let users: String = NATS_USERS
        .iter()
        .map(|(user, set)| format!("    {{user: {user}, password: {:?}, permissions: ${set}}}\n", password(user)))
        .collect();
    format!(
        "include \"permissions.conf\"\nauthorization {{\n  users = [\n{users}    {{user: harness, password: {:?}}}\n  ]\n}}\n\
         no_auth_user: harness\n",
        password("harness"),
    )
}

/// Test passwords: only this harness's servers, on 127.0.0.1, know them.
pub(crate) fn password(user: &str) -> String {
    format!("{user}-test-password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_servers_get_their_own_ports_and_resume_on_theirs() {
        let servers: Vec<NatsServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(NatsServer::start)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4, "distinct ports");
        for server in &servers {
            let pid = server.child.as_ref().unwrap().id();
            assert!(crate::port_owned_by(server.port, pid), "each port is its own server's");
        }
        let mut server = servers.into_iter().next().unwrap();
        let port = server.port;
        server.kill();
        server.resume();
        assert_eq!(server.port, port);
        assert!(crate::port_owned_by(port, server.child.as_ref().unwrap().id()));
    }

    #[test]
    fn the_client_port_is_read_from_the_ports_file() {
        assert_eq!(
            client_port(r#"{"nats":["nats://127.0.0.1:36875"],"monitoring":["http://127.0.0.1:1"]}"#),
            Some(36875)
        );
        assert_eq!(client_port("{}"), None);
    }
}
