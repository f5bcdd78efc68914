//! Calling subjects: the NestJS `ClientProxy` (`send` / `emit`) for Rust.

use std::time::Duration;

use async_nats::{Client, HeaderMap, RequestErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, RequestPacket};
use crate::error::{RpcError, codes};

/// Sends NestJS request packets and reads the reply envelopes. Cheap to clone.
///
/// ```no_run
/// # async fn demo(nats: async_nats::Client) -> Result<(), mediabus_rpc::RpcError> {
/// let client = mediabus_rpc::RpcClient::new(nats);
/// let media: serde_json::Value = client.call("media.findOne", &serde_json::json!({"id": "m1"})).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RpcClient {
    nats: Client,
    timeout: Duration,
}

impl RpcClient {
    /// A client with a 10 s reply deadline.
    pub fn new(nats: Client) -> Self {
        Self { nats, timeout: Duration::from_secs(10) }
    }

    /// Sets the reply deadline for calls made by the returned client.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &Client {
        &self.nats
    }

    /// Requests `subject` with `data` and decodes the `response` into `R`.
    ///
    /// Errors: the remote `err` object as an [`RpcError`]; 503 `UNAVAILABLE` when nobody serves the
    /// subject or NATS is unreachable; 504 `TIMEOUT` past the deadline; 500 `INTERNAL` when the
    /// reply is not a readable envelope or `response` does not fit `R`.
    pub async fn call<P, R>(&self, subject: &str, data: &P) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_with_headers(subject, data, HeaderMap::new()).await
    }

    /// [`RpcClient::call`] with NATS headers, e.g. `Authorization` and `traceparent` to forward.
    pub async fn call_with_headers<P, R>(&self, subject: &str, data: &P, headers: HeaderMap) -> Result<R, RpcError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let id = nuid::next();
        let body = encode(&RequestPacket { pattern: subject, data, id: Some(id.as_str()) })?;
        self.call_raw(subject, body.into(), headers).await
    }

    /// Requests `subject` with a raw body, not wrapped in a NestJS packet (DESIGN §3: the service
    /// takes the whole body as `data`; a non-JSON body reaches binary handlers such as
    /// `upload.part`, whose metadata rides in `headers`), and decodes the `response` into `R`.
    ///
    /// Errors: as [`RpcClient::call`].
    pub async fn call_raw<R: DeserializeOwned>(
        &self,
        subject: &str,
        body: bytes::Bytes,
        headers: HeaderMap,
    ) -> Result<R, RpcError> {
        let mut headers = headers;
        set_deadline(&mut headers, self.timeout);
        let request = async_nats::Request::new().payload(body).headers(headers).timeout(Some(self.timeout));
        let reply = self.nats.send_request(subject.to_owned(), request).await.map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => RpcError::unavailable(format!("no service answers {subject}")),
            RequestErrorKind::TimedOut => RpcError::timeout(format!("{subject} did not reply in time")),
            RequestErrorKind::MaxPayloadExceeded => {
                RpcError::new(413, codes::PAYLOAD_TOO_LARGE, "request exceeds the NATS server's max_payload")
            }
            RequestErrorKind::InvalidSubject => RpcError::invalid_payload(format!("invalid subject {subject:?}")),
            RequestErrorKind::Other => RpcError::unavailable(format!("NATS request failed: {e}")),
        })?;
        decode_reply(subject, &reply)
    }

    /// Publishes an event packet (NestJS `emit`): no id, no reply.
    ///
    /// Errors: 503 `UNAVAILABLE` when the publish cannot be queued.
    pub async fn emit<P: Serialize + ?Sized>(
        &self,
        subject: &str,
        data: &P,
        headers: HeaderMap,
    ) -> Result<(), RpcError> {
        let body = encode(&RequestPacket { pattern: subject, data, id: None })?;
        self.nats
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .map_err(|e| RpcError::unavailable(format!("NATS publish failed: {e}")))
    }
}

/// Sets [`crate::DEADLINE_HEADER`] to now + `timeout` (Unix ms), or keeps the one already there
/// when it is earlier (a handler passing on its own caller's deadline).
fn set_deadline(headers: &mut HeaderMap, timeout: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mine = (now + timeout).as_millis() as u64;
    let theirs = headers.get(crate::DEADLINE_HEADER).and_then(|v| v.as_str().trim().parse::<u64>().ok());
    let deadline = theirs.map_or(mine, |theirs| theirs.min(mine));
    headers.insert(crate::DEADLINE_HEADER, deadline.to_string().as_str());
}

fn encode<P: Serialize + ?Sized>(packet: &RequestPacket<'_, P>) -> Result<Vec<u8>, RpcError> {
    serde_json::to_vec(packet).map_err(|e| RpcError::invalid_payload(format!("request does not serialize: {e}")))
}

fn decode_reply<R: DeserializeOwned>(subject: &str, reply: &async_nats::Message) -> Result<R, RpcError> {
    // A NATS micro service that is not NestJS-aware replies with error headers and an empty body.
    if reply.payload.is_empty()
        && let Some(headers) = &reply.headers
        && let Some(message) = headers.get(async_nats::service::NATS_SERVICE_ERROR)
    {
        let status = headers
            .get(async_nats::service::NATS_SERVICE_ERROR_CODE)
            .and_then(|c| c.as_str().parse().ok())
            .unwrap_or(500);
        return Err(RpcError::new(status, codes::REMOTE_ERROR, message.as_str()));
    }
    let bad_reply = |e: serde_json::Error| {
        tracing::warn!(%subject, error = %e, "unreadable reply");
        RpcError::new(500, codes::INTERNAL, format!("unreadable reply from {subject}"))
    };
    let envelope: envelope::Reply<'_> = serde_json::from_slice(&reply.payload).map_err(bad_reply)?;
    if let Some(err) = envelope.err {
        return Err(RpcError::from_remote(err));
    }
    let response = envelope.response.map_or("null", |r| r.get());
    serde_json::from_str(response).map_err(bad_reply)
}
