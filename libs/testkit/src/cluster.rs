//! A 3-node nats-server cluster with JetStream on 127.0.0.1, for fault tests (DESIGN §12).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::nats::{authorization, password};
use crate::{START_ATTEMPTS, free_port, server_bin, wait_for_own_port};

/// Nodes in the cluster: the smallest JetStream quorum that survives losing one.
pub const CLUSTER_NODES: usize = 3;
/// How long one node may take to listen.
const NODE_START_LIMIT: Duration = Duration::from_secs(10);
/// How long the nodes may take to route to each other and elect a JetStream meta leader.
const FORM_LIMIT: Duration = Duration::from_secs(30);

/// Three nats-servers on 127.0.0.1 routed into one cluster, each with JetStream in its own
/// store dir and the users of [`crate::NATS_USERS`] (the same authorization as
/// [`crate::NatsServer`]); all killed when dropped.
///
/// Client and monitoring ports are each server's choice (`-1`, read from its ports file). Route
/// URLs must be fixed in every node's config before any starts, so the cluster ports are picked
/// with [`free_port`]; if one was taken meanwhile (a node exits, or the port is not its own),
/// the whole cluster is started again on fresh ports, up to [`START_ATTEMPTS`] times.
///
/// [`NatsCluster::kill`] and [`NatsCluster::restart`] take one node down and bring it back on
/// the same ports with the same JetStream data, as a crashed node coming back would.
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

struct Node {
    name: String,
    dir: PathBuf,
    child: Option<Child>,
    /// The config without its `port` line (added per start: `-1` first, the known port after).
    text: String,
    client_port: u16,
    monitor_port: u16,
    cluster_port: u16,
}

impl NatsCluster {
    /// Starts the three nodes and waits until every node routes to the other two, answers
    /// `/healthz` and sees a JetStream meta leader.
    ///
    /// Panics (with the nodes' logs) if that does not happen within 30 s or the cluster ports
    /// clash [`START_ATTEMPTS`] times.
    pub fn start() -> Self {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut ports: Vec<u16> = Vec::new();
            while ports.len() < CLUSTER_NODES {
                let port = free_port();
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let routes: String =
                ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
            let mut nodes: Vec<Node> =
                ports.iter().enumerate().map(|(i, port)| Node::new(dir.path(), i, *port, &routes)).collect();
            let started: Result<(), String> = nodes.iter_mut().try_for_each(Node::start);
            let cluster = Self { nodes, _dir: dir };
            match started {
                Ok(()) => {
                    cluster.wait_formed();
                    return cluster;
                }
                // Usually a cluster port taken by another process: new ports, new cluster.
                Err(why) => last = why,
            }
            drop(cluster);
        }
        panic!("nats cluster did not start in {START_ATTEMPTS} attempts: {last}");
    }

    /// `nats://127.0.0.1:<port>` of node `i` (0, 1 or 2): without credentials the full-rights
    /// `harness` user, with a user of [`crate::NATS_USERS`] and [`NatsCluster::password`] that user.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// The URLs of all nodes, starting with node `first`, comma-separated (what
    /// `mediabus_rpc::NatsSettings::url` accepts: the client tries them in that order).
    pub fn urls_from(&self, first: usize) -> String {
        (0..CLUSTER_NODES).map(|k| self.url((first + k) % CLUSTER_NODES)).collect::<Vec<_>>().join(",")
    }

    /// The password of `user` (one of [`crate::NATS_USERS`]) on every node.
    pub fn password(&self, user: &str) -> String {
        password(user)
    }

    /// The server name of node `i` (`node-<i>`), as JetStream reports stream leaders and peers.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s monitoring port (`/healthz`, `/jsz`, `/routez`, ...).
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// Kills node `i` (SIGKILL), as a crash would: its clients fail over to the other nodes.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports with its JetStream data, and waits until the cluster
    /// has formed again (see [`NatsCluster::start`]).
    ///
    /// Panics if it does not listen within 10 s (its port was taken meanwhile) or the cluster
    /// does not form within 30 s.
    pub fn restart(&mut self, i: usize) {
        if let Err(why) = self.nodes[i].start() {
            panic!("node {i} did not restart: {why}");
        }
        self.wait_formed();
    }

    /// Waits until every running node answers `/healthz` (JetStream included), routes to every
    /// other running node and names a running node as the JetStream meta leader.
    ///
    /// Panics with the nodes' logs after 30 s.
    pub fn wait_formed(&self) {
        let start = Instant::now();
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        loop {
            let formed = running.iter().all(|node| {
                let healthy = http_get(node.monitor_port, "/healthz").is_some_and(|(status, _)| status == 200);
                let routes = http_get(node.monitor_port, "/routez").map(|(_, body)| body).unwrap_or_default();
                let routed = running.iter().filter(|other| other.name != node.name).all(|other| {
                    routes.contains(&format!("\"remote_name\": \"{}\"", other.name))
                        || routes.contains(&format!("\"remote_name\":\"{}\"", other.name))
                });
                let jsz = http_get(node.monitor_port, "/jsz").map(|(_, body)| body).unwrap_or_default();
                // The leader must be a running node: right after a kill the others still name
                // the dead one until they elect another.
                let led = meta_leader(&jsz).is_some_and(|l| running.iter().any(|n| n.name == l));
                healthy && routed && led
            });
            if formed {
                return;
            }
            if start.elapsed() > FORM_LIMIT {
                let logs: String = self.nodes.iter().map(|n| format!("--- {}:\n{}\n", n.name, n.log_tail())).collect();
                panic!("nats cluster did not form within {FORM_LIMIT:?}:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 40 lines of node `i`'s log (for a failing test's message).
    pub fn log_tail(&self, i: usize) -> String {
        self.nodes[i].log_tail()
    }

    /// The name of the JetStream meta leader as node `i` sees it, if it sees one.
    pub fn meta_leader(&self, i: usize) -> Option<String> {
        meta_leader(&http_get(self.nodes[i].monitor_port, "/jsz")?.1)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

impl Node {
    fn new(root: &Path, i: usize, cluster_port: u16, routes: &str) -> Self {
        let name = format!("node-{i}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).expect("node dir");
        let store = dir.join("jetstream");
        // A node ignores the route to itself, so every node gets the same list.
        let text = format!(
            "host: \"127.0.0.1\"\nserver_name: {name}\nhttp: \"127.0.0.1:-1\"\nports_file_dir: {dir:?}\n\
             max_payload: 8MB\njetstream {{\n  store_dir: {store:?}\n}}\n\
             cluster {{\n  name: mediabus-test\n  listen: \"127.0.0.1:{cluster_port}\"\n  routes: [{routes}]\n}}\n{}",
            authorization(&dir)
        );
        Self { name, dir, child: None, text, client_port: 0, monitor_port: 0, cluster_port }
    }

    /// Starts the node (client port `-1` the first time, its own after) and waits until it
    /// listens on its client and cluster ports.
    fn start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} already running", self.name);
        let port = if self.client_port == 0 { "-1".to_owned() } else { self.client_port.to_string() };
        let config = self.dir.join("nats.conf");
        std::fs::write(&config, format!("port: {port}\n{}", self.text)).expect("write nats.conf");
        let log = std::fs::File::create(self.dir.join("nats.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
        let child = Command::new(server_bin("NATS_SERVER_BIN", "nats-server"))
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let result = self.await_ports();
        if let Err(why) = &result {
            self.kill();
            return Err(format!("{}: {why}\n{}", self.name, self.log_tail()));
        }
        result
    }

    fn await_ports(&mut self) -> Result<(), String> {
        let child = self.child.as_mut().expect("started");
        let (client, monitor) = read_ports(&self.dir, child)?;
        if self.client_port != 0 && client != self.client_port {
            return Err(format!("listens on {client}, not on its port {}", self.client_port));
        }
        self.client_port = client;
        self.monitor_port = monitor;
        for port in [self.client_port, self.cluster_port] {
            wait_for_own_port(child, port, NODE_START_LIMIT).map_err(|e| format!("port {port}: {e:?}"))?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last 40 lines of the node's log (for panic messages).
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The client and monitoring ports from the ports file `child` writes once it listens
/// (`<dir>/<binary>_<pid>.ports`, JSON `{"nats":["nats://127.0.0.1:<port>"],"monitoring":[...]}`).
fn read_ports(dir: &Path, child: &mut Child) -> Result<(u16, u16), String> {
    let suffix = format!("_{}.ports", child.id());
    let start = Instant::now();
    loop {
        let file = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
        let text = file.and_then(|f| std::fs::read_to_string(f.path()).ok()).unwrap_or_default();
        if let (Some(client), Some(monitor)) = (url_port(&text, "nats"), url_port(&text, "monitoring")) {
            return Ok((client, monitor));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before writing its ports file"));
        }
        if start.elapsed() > NODE_START_LIMIT {
            return Err("wrote no ports file".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The port of the first URL under `key` in a ports file's JSON.
fn url_port(json: &str, key: &str) -> Option<u16> {
    let urls = &json[json.find(&format!("\"{key}\""))?..];
    let url = &urls[urls.find("://")? + 3..];
    let host_port = &url[..url.find('"')?];
    host_port.rsplit(':').next()?.parse().ok()
}

/// `"leader": "<name>"` of the `meta_cluster` object of a `/jsz` reply, if not empty.
fn meta_leader(jsz: &str) -> Option<String> {
    let meta = &jsz[jsz.find("\"meta_cluster\"")?..];
    let leader = &meta[meta.find("\"leader\"")? + "\"leader\"".len()..];
    let value = leader.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let name = &value[..value.find('"')?];
    (!name.is_empty()).then(|| name.to_owned())
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0, so the server closes): status and body, or `None`
/// if the server does not answer within a second.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_form_a_cluster_and_one_comes_back_after_a_kill() {
        let mut cluster = NatsCluster::start();
        let ports: Vec<u16> = (0..CLUSTER_NODES).map(|i| cluster.nodes[i].client_port).collect();
        assert!(ports.iter().all(|p| *p != 0));
        assert_eq!(cluster.urls_from(1).split(',').count(), 3);
        assert!(cluster.urls_from(1).starts_with(&cluster.url(1)));
        let leader = cluster.meta_leader(0).expect("a meta leader");
        let i = (0..CLUSTER_NODES).find(|i| cluster.name(*i) == leader).expect("leader is a node");
        // Killing the meta leader: the other two elect a new one.
        cluster.kill(i);
        let other = (i + 1) % CLUSTER_NODES;
        cluster.wait_formed();
        assert_ne!(cluster.meta_leader(other).as_deref(), Some(leader.as_str()));
        cluster.restart(i);
        assert_eq!(cluster.nodes[i].client_port, ports[i], "same client port after the restart");
        assert!(cluster.meta_leader(i).is_some());
    }

    #[test]
    fn ports_and_the_meta_leader_are_read_from_json() {
        let ports = r#"{"nats":["nats://127.0.0.1:33489"],"monitoring":["http://127.0.0.1:34911"],"cluster":["nats://127.0.0.1:16501"]}"#;
        assert_eq!(url_port(ports, "nats"), Some(33489));
        assert_eq!(url_port(ports, "monitoring"), Some(34911));
        assert_eq!(url_port("{}", "nats"), None);
        assert_eq!(meta_leader(r#"{"meta_cluster": {"name": "t", "leader": "node-2"}}"#).as_deref(), Some("node-2"));
        assert_eq!(meta_leader(r#"{"meta_cluster": {"name": "t"}}"#), None);
        assert_eq!(meta_leader(r#"{"meta_cluster": {"leader": ""}}"#), None);
    }
}
