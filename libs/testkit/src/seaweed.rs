//! A real SeaweedFS (master, volume, filer and S3 gateway in one `weed server`), for S3 tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{START_ATTEMPTS, port_owned_by, server_bin};

/// How long `weed server` may take until its S3 gateway answers (about 1-4 s when idle).
const START_LIMIT: Duration = Duration::from_secs(60);

/// Runs `weed` ($0 and "$@") in the background and SIGKILLs it once our stdin reaches EOF: when
/// [`SeaweedS3`] drops its end of the pipe, and just as well when the test process dies, however,
/// so a server kept in a `static` (never dropped) does not outlive its test binary. SIGKILL
/// because weed takes ~17 s to stop on SIGTERM. fd 3 keeps the pipe: a background job's stdin is
/// /dev/null. Once weed is gone it removes the unix sockets weed leaves in /tmp (named after our
/// ports; weed ignores $TMPDIR) and the temp dir (a static's TempDir is never dropped).
const WATCHDOG: &str = r#"exec 3<&0
"$0" "$@" </dev/null &
w=$!
(
  read -r _ <&3
  kill -9 "$w" 2>/dev/null
  while kill -0 "$w" 2>/dev/null; do sleep 0.05; done
  for port in $WEED_PORTS; do rm -f /tmp/seaweedfs-*-"$port".sock; done
  rm -rf "$WEED_DIR"
) &
wait "$w"
echo "weed exited with status $?""#;

/// SeaweedFS with its S3 gateway on 127.0.0.1, data and logs in a temp dir; killed (SIGKILL) when
/// dropped. No buckets exist at first; no identities are configured, so any credentials work.
///
/// # Examples
///
/// ```no_run
/// let s3 = mediabus_testkit::SeaweedS3::start();
/// assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
/// ```
pub struct SeaweedS3 {
    child: Child,
    /// Dropping it makes the watchdog kill weed.
    stdin: Option<ChildStdin>,
    s3_port: u16,
    dir: TempDir,
}

impl SeaweedS3 {
    /// Starts `weed server` (from `$WEED_BIN` or `.venv/bin/weed`) and waits until S3 answers.
    ///
    /// Panics, with the end of its log, if it exits or is not ready within 60 s on each of
    /// [`START_ATTEMPTS`] sets of ports.
    pub fn start() -> Self {
        // Ports from free_port may be taken before weed binds them (weed then exits), or be
        // another test's: retry with fresh ports and a fresh directory until our weed serves S3.
        for attempt in 1..=START_ATTEMPTS {
            let mut server = Self::spawn();
            match server.wait_until_ready() {
                Ok(()) => return server,
                Err(why) => assert!(attempt < START_ATTEMPTS, "{why}"),
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Spawns `weed server` on fresh ports in a fresh temp dir, without waiting.
    fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&data).expect("create data dir");
        std::fs::create_dir_all(&logs).expect("create log dir");
        // Every gRPC port is given explicitly: weed's default (HTTP port + 10000) could land on a
        // port in use or past 65535.
        let ports = distinct_free_ports();
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = ports;
        let port_list = ports.map(|p| p.to_string()).join(" ");
        let log = std::fs::File::create(dir.path().join("weed.log")).expect("create weed.log");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(server_bin("WEED_BIN", "weed"))
            .arg(format!("-logdir={}", logs.display()))
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            // No Iceberg catalog or Lance server: they would take fixed default ports.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            // Volumes grow on demand; small ones keep a test's disk use low.
            .args(["-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0"])
            .env("WEED_PORTS", port_list)
            .env("WEED_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn weed server");
        let stdin = child.stdin.take();
        Self { child, stdin, s3_port: s3, dir }
    }

    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The temp dir holding `data/`, `logs/` and `weed.log` (stdout and stderr).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until the S3 port answers an HTTP request (ListBuckets) and belongs to our weed:
    /// the port opens a while before the gateway can serve.
    ///
    /// Errors (with the end of weed's log): weed exited, or was not ready within 60 s.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if http_answers(self.s3_port) && port_owned_by(self.s3_port, self.child.id()) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("weed server exited ({status}) during start-up:\n{}", self.log_tail()));
            }
            if start.elapsed() > START_LIMIT {
                return Err(format!("weed S3 not ready within {START_LIMIT:?}:\n{}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last 40 lines of weed's output.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for SeaweedS3 {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Eight distinct ports that were free a moment ago.
fn distinct_free_ports() -> [u16; 8] {
    // Held open together so the OS hands out eight different ports.
    let listeners: Vec<TcpListener> =
        (0..8).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect();
    ports.try_into().expect("eight ports")
}

/// Whether an HTTP request to 127.0.0.1:`port` gets any HTTP response.
fn http_answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_leaves_nothing_behind() {
        let server = SeaweedS3::start();
        let port = server.s3_port;
        assert!(http_answers(port));
        let dir = server.dir().to_owned();
        let sockets = || {
            std::fs::read_dir("/tmp")
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("seaweedfs-") && n.ends_with(&format!("-{port}.sock")))
                .count()
        };
        assert!(sockets() > 0, "weed makes its sockets in /tmp");
        drop(server);
        assert!(!http_answers(port), "killed");
        let start = Instant::now();
        while (dir.exists() || sockets() > 0) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!dir.exists(), "temp dir removed");
        assert_eq!(sockets(), 0, "sockets removed");
    }
}
