//! A real nginx (Debian's `nginx-core`, installed by `scripts/setup`) serving files and taking
//! WebDAV `PUT`s, as a baseline for HTTP throughput.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{START_ATTEMPTS, free_port, wait_for_own_port};

/// How long nginx may take to listen (milliseconds when idle).
const START_LIMIT: Duration = Duration::from_secs(10);

/// nginx on 127.0.0.1 in the foreground, with config, logs, pid file and temp paths in its own
/// temp dir; killed when dropped.
///
/// One `location /` does both: `GET /<path>` serves `<root>/<path>` (`sendfile on`), and
/// `PUT /<path>` (WebDAV, `create_full_put_path on`, no body size limit) stores the body there.
/// The request body is spooled to `client_body_temp_path` inside the same temp dir, so on the same
/// file system as the root and the final step of a `PUT` is a rename, not a copy.
///
/// Runs as a single process (`master_process off`): nothing changes user, so it works unprivileged
/// and as root alike, and killing the one process leaves no workers behind.
///
/// # Examples
///
/// ```no_run
/// let nginx = mediabus_testkit::Nginx::start();
/// std::fs::write(nginx.root().join("a.txt"), "hi").unwrap();
/// assert!(nginx.url("a.txt").starts_with("http://127.0.0.1:"));
/// ```
pub struct Nginx {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with its temp dir in the system temp dir. See [`Nginx::start_in`].
    pub fn start() -> Self {
        Self::start_in(&std::env::temp_dir())
    }

    /// Starts nginx (`$NGINX_BIN`, else `nginx` on `PATH`, else `/usr/sbin/nginx`) on a free port,
    /// with its temp dir (root, body temp, logs) created inside `parent`: choose the disk there.
    ///
    /// Panics if nginx is missing, or does not listen within 10 s on any of [`START_ATTEMPTS`]
    /// ports (with its error log).
    pub fn start_in(parent: &Path) -> Self {
        // A port from free_port may be taken before nginx binds it (nginx then exits): retry with
        // a fresh port and directory until nginx itself listens on its port.
        for attempt in 1..=START_ATTEMPTS {
            let mut nginx = Self::spawn_in(parent);
            match wait_for_own_port(&mut nginx.child, nginx.port, START_LIMIT) {
                Ok(()) => return nginx,
                Err(why) => {
                    assert!(
                        attempt < START_ATTEMPTS,
                        "nginx did not listen on {} ({why:?}):\n{}",
                        nginx.port,
                        nginx.error_log()
                    );
                }
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Writes the config and spawns nginx on a port from [`free_port`], without waiting.
    fn spawn_in(parent: &Path) -> Self {
        let dir = tempfile::Builder::new().prefix("nginx-").tempdir_in(parent).expect("nginx temp dir");
        let root = dir.path().join("root");
        for sub in ["root", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create nginx dir");
        }
        let port = free_port();
        let d = dir.path().display();
        // Every path the Debian build would otherwise take from /var (compiled-in temp paths are
        // created at start-up and fail unprivileged) is set here.
        let conf = format!(
            r#"daemon off;
master_process off;
pid "{d}/nginx.pid";
lock_file "{d}/nginx.lock";
error_log "{d}/error.log" warn;
events {{
    worker_connections 256;
}}
http {{
    access_log "{d}/access.log";
    client_body_temp_path "{d}/body";
    proxy_temp_path "{d}/proxy";
    fastcgi_temp_path "{d}/fastcgi";
    uwsgi_temp_path "{d}/uwsgi";
    scgi_temp_path "{d}/scgi";
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            root "{root}";
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
        }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            // Start-up errors before the config is read would go to the compiled-in /var/log path.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx (run scripts/setup, or set NGINX_BIN)");
        Self { child, port, dir }
    }

    /// `http://127.0.0.1:<port>/<path>` (`path` without a leading `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory served at `/` and written by `PUT`.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The temp dir: `nginx.conf`, `error.log`, `access.log`, `root/`, `body/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$NGINX_BIN`, else `nginx` if on `PATH`, else `/usr/sbin/nginx` (Debian's path, which is not on
/// every user's `PATH`). Not under `.venv/`: nginx comes from apt, not PyPI.
fn nginx_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NGINX_BIN") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// Sends one HTTP/1.1 request with `body` and returns the status code and response body.
    fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "{method} /{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers") + 4;
        let status = std::str::from_utf8(&response[9..12]).unwrap().parse().unwrap();
        (status, response.split_off(split))
    }

    #[test]
    fn puts_and_serves_a_file_and_stops_on_drop() {
        let nginx = Nginx::start();
        let port = nginx.port();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();

        let (status, _) = request(port, "PUT", "a/b/big.bin", &body);
        assert_eq!(status, 201, "PUT creates, with the missing directories");
        assert_eq!(std::fs::read(nginx.root().join("a/b/big.bin")).unwrap(), body, "stored under the root");
        assert_eq!(request(port, "GET", "a/b/big.bin", b""), (200, body));
        assert_eq!(request(port, "GET", "missing", b"").0, 404);

        let dir = nginx.dir().to_owned();
        drop(nginx);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "killed");
        assert!(!dir.exists(), "temp dir removed");
    }
}
