//! A TCP proxy on 127.0.0.1 for fault injection: it holds back the requests a rule picks (a slow
//! store, a slow peer) and counts what the upstream sends back.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Decides, from the first bytes of a chunk a client sends, how long to hold it back.
pub type DelayRule = Arc<dyn Fn(&[u8]) -> Option<Duration> + Send + Sync>;

/// Forwards connections to an upstream address, two threads per connection. Stopped on drop
/// (connections already open end when either side closes).
pub struct DelayProxy {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Stats {
    to_client: AtomicU64,
    delayed: AtomicU64,
}

impl DelayProxy {
    /// Listens on a fresh 127.0.0.1 port and forwards to `upstream`. Every chunk read from a
    /// client is passed to `rule`; `Some(delay)` holds that chunk (and what follows it on that
    /// connection) back for `delay`. A request's head arrives in one chunk from the HTTP clients
    /// the tests use, so a rule on the request line picks requests, e.g. S3's
    /// CompleteMultipartUpload (`POST /<bucket>/<key>?uploadId=...`).
    pub fn start(upstream: SocketAddr, rule: DelayRule) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_stats, accept_stop) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let (stats, rule) = (accept_stats.clone(), rule.clone());
                let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    pump(client_read, server_write, |chunk| {
                        if let Some(delay) = rule(chunk) {
                            stats.delayed.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(delay);
                        }
                    })
                });
                let stats = accept_stats.clone();
                std::thread::spawn(move || {
                    pump(server, client, |chunk| {
                        stats.to_client.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    })
                });
            }
        });
        Self { addr, stats, stop }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes the upstream has sent back to clients so far.
    pub fn bytes_to_clients(&self) -> u64 {
        self.stats.to_client.load(Ordering::SeqCst)
    }

    /// Chunks held back so far.
    pub fn delayed(&self) -> u64 {
        self.stats.delayed.load(Ordering::SeqCst)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either ends, calling `seen` on each chunk before it is written.
fn pump(mut from: TcpStream, mut to: TcpStream, mut seen: impl FnMut(&[u8])) {
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
