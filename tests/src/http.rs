//! A small HTTP/1.1 client over hyper for the end-to-end tests and the benchmarks: one connection
//! per request, bodies streamed both ways, `multipart/form-data` built around a streamed file.

use std::convert::Infallible;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::HOST;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Longest any single exchange may take before the caller panics (a hang is a failure).
pub const TRANSFER_LIMIT: Duration = Duration::from_secs(600);

/// The multipart boundary of [`form_around`].
pub const BOUNDARY: &str = "mediabus-form-boundary-7MA4YWxkTrZu0gW";

/// Chunk size of [`file_body`], bytes.
const CHUNK: usize = 1 << 20;

/// Sends `request` on a new HTTP/1.1 connection to 127.0.0.1:`port` (adding `Host`) and returns
/// the response head; its body streams on.
pub async fn send<B>(port: u16, mut request: Request<B>) -> Response<Incoming>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    request.headers_mut().insert(HOST, format!("127.0.0.1:{port}").parse().expect("host header"));
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("HTTP request")
    };
    tokio::time::timeout(TRANSFER_LIMIT, exchange).await.expect("response within the limit")
}

/// A whole (small) response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A response header as text ("" if absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// Reads `response` whole.
pub async fn collect(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(TRANSFER_LIMIT, body.collect())
        .await
        .expect("body within the limit")
        .expect("response body")
        .to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// `method path` with `headers` and a small in-memory `body`, read whole.
pub async fn call(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    collect(send(port, request.body(Full::new(body.into())).expect("request")).await).await
}

/// The bytes before and after a file's content in a `multipart/form-data` body (boundary
/// [`BOUNDARY`]): text fields `before`, the head of a `file` part named `filename` with
/// `content_type`, then after the content, text fields `after` and the closing boundary.
pub fn form_around(
    before: &[(&str, &str)],
    filename: &str,
    content_type: &str,
    after: &[(&str, &str)],
) -> (Bytes, Bytes) {
    let field = |(name, value): &(&str, &str)| {
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let mut prefix: String = before.iter().map(field).collect();
    prefix.push_str(&format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    ));
    let mut suffix = String::from("\r\n");
    suffix.extend(after.iter().map(field));
    suffix.push_str(&format!("--{BOUNDARY}--\r\n"));
    (Bytes::from(prefix), Bytes::from(suffix))
}

/// The `Content-Type` of a [`form_around`] body.
pub fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A streamed request body.
pub type FileBody = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A request body of `prefix`, the file at `source` in 1 MiB chunks, then `suffix`. A thread
/// reads the file ahead by at most 4 chunks, so memory stays at a few MiB whatever the file size.
/// The returned lock is set when the chunk with the last byte has been taken (for timing).
pub fn file_body(source: &Path, prefix: Bytes, suffix: Bytes) -> (FileBody, Arc<OnceLock<Instant>>) {
    let file_len = std::fs::metadata(source).expect("source file size").len();
    file_slice_body(source, 0, file_len, prefix, suffix)
}

/// [`file_body`] of the `len` bytes of `source` from byte `start` (a tus PATCH of one chunk).
pub fn file_slice_body(
    source: &Path,
    start: u64,
    len: u64,
    prefix: Bytes,
    suffix: Bytes,
) -> (FileBody, Arc<OnceLock<Instant>>) {
    use std::io::{Seek, SeekFrom};
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let mut file = std::fs::File::open(source).expect("open source file");
    file.seek(SeekFrom::Start(start)).expect("seek in source file");
    let mut file = file.take(len);
    let mut remaining = prefix.len() as u64 + len + suffix.len() as u64;
    std::thread::spawn(move || {
        let send = |b: Bytes| b.is_empty() || tx.blocking_send(b).is_ok();
        if !send(prefix) {
            return;
        }
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            (&mut file).take(CHUNK as u64).read_to_end(&mut buf).expect("read source file");
            if buf.is_empty() {
                break;
            }
            // A failed send means the request was dropped (its error is reported there).
            if !send(Bytes::from(buf)) {
                return;
            }
        }
        send(suffix);
    });
    // hyper stops polling once Content-Length bytes are out, so the end is the last byte's chunk.
    let end = Arc::new(OnceLock::new());
    let end_set = end.clone();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) })
        .map(move |chunk| {
            remaining -= chunk.len() as u64;
            if remaining == 0 {
                let _ = end_set.set(Instant::now());
            }
            Ok(Frame::data(chunk))
        });
    (StreamBody::new(stream.boxed()), end)
}
