//! The bridge's HTTP/1.1 server: an accept loop over hyper, because `axum::serve` has neither a
//! header-read timeout nor a connection cap; slow or idle clients must not hold connections for
//! ever, nor many of them exhaust the process.
//!
//! - HTTP/1.1 only. Cleartext HTTP/2 (h2c, which hyper-util's automatic builder used to accept
//!   whenever some crate enabled hyper's `http2` feature) is off: hyper's HTTP/2 server has no
//!   header-read or idle-connection timeout, so an h2c peer could hold a connection and its
//!   buffers for ever. An h2c preface is answered as a malformed HTTP/1 request and closed.
//!   Terminate HTTP/2 (and TLS) at the reverse proxy.
//! - Every request's headers must arrive within the header timeout, counted from the moment the
//!   server waits for them: the first request of a connection, and each next one on a keep-alive
//!   connection, so an idle connection closes after it too. A slow-loris client trickling its
//!   headers is cut at the same time.
//! - At most [`Limits::max_connections`] connections at once, and at most
//!   [`Limits::max_connections_per_ip`] from one address; a connection beyond either is closed as
//!   soon as it is accepted.
//! - Bodies are bounded by the routes (`RequestBodyTimeoutLayer`, size limits), not here.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What the server loop enforces (`[http]` of the settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request's headers, and for the next request on an idle connection.
    pub header_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one IP address; 0: no such limit.
    pub max_connections_per_ip: usize,
    /// After `shutdown`, how long requests in flight may take before the server stops anyway.
    pub drain: Duration,
}

impl Limits {
    /// The limits of `settings` (`header_timeout_ms`, `max_connections`, `max_connections_per_ip`;
    /// the drain time is the request timeout).
    pub fn of(settings: &crate::config::HttpSettings) -> Self {
        Self {
            header_timeout: Duration::from_millis(settings.header_timeout_ms),
            max_connections: settings.max_connections,
            max_connections_per_ip: settings.max_connections_per_ip,
            drain: Duration::from_millis(settings.request_timeout_ms),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits up to
/// `limits.drain` for the requests in flight.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
    let per_ip = PerIp::new(limits.max_connections_per_ip);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over a limit: dropping the stream closes the connection before anything is read.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing");
            continue;
        };
        let Some(ip_slot) = per_ip.acquire(peer.ip()) else {
            tracing::debug!(%peer, "per-address connection limit reached; closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // The peer travels with each request as axum's `ConnectInfo` (the client address for the
        // auth service's throttling).
        let service = WithPeer { inner: TowerToHyperService::new(app.clone()), peer };
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _held: (OwnedSemaphorePermit, IpSlot) = (slot, ip_slot);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still open after {:?}; stopping anyway", limits.drain);
    }
}

/// Open connections per IP address, under a cap (0: none).
#[derive(Clone)]
struct PerIp {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    fn new(max: usize) -> Self {
        Self { max, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or `None` when it has `max` already.
    fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        if self.max == 0 {
            return Some(IpSlot { owner: None, ip });
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot { owner: Some(self.clone()), ip })
    }
}

/// One connection's place in [`PerIp`]; given back when dropped.
struct IpSlot {
    owner: Option<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            let mut open = owner.open.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    // The map holds only addresses with open connections.
                    open.remove(&self.ip);
                }
            }
        }
    }
}

/// A connection's service: `inner`, with the TCP peer address inserted into every request as
/// `axum::extract::ConnectInfo`.
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: hyper::Request<B>) -> Self::Future {
        request.extensions_mut().insert(axum::extract::ConnectInfo(self.peer));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_at_most_their_share_and_give_it_back() {
        let per_ip = PerIp::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = per_ip.acquire(a).unwrap();
        let _second = per_ip.acquire(a).unwrap();
        assert!(per_ip.acquire(a).is_none());
        assert!(per_ip.acquire(b).is_some(), "another address is not affected");
        drop(first);
        assert!(per_ip.acquire(a).is_some());
        assert!(PerIp::new(0).acquire(a).is_some(), "0: no limit");
    }
}
