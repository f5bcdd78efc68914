//! The NestJS microservices envelope over NATS, byte-compatible (DESIGN §3).
//!
//! Source: NestJS `@nestjs/microservices` NATS transport (`ClientNats`, `ServerNats`, the
//! `IncomingRequestDeserializer`): a request is `{"pattern":..,"data":..,"id":".."}`, a reply is
//! `{"response":..,"isDisposed":true,"id":".."}` or `{"err":..,"isDisposed":true,"id":".."}`, and a
//! packet without `id` is an event. A body with neither `pattern` nor `data` is an external
//! (raw) payload: the whole body is the data.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::error::{RpcError, codes};

/// A parsed incoming message, borrowing from the NATS payload.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// The request id to echo, exactly as sent (a JSON string for NestJS). `None` for events
    /// and raw payloads.
    pub id: Option<&'a RawValue>,
    /// The `data` of the packet, or the whole body for a raw payload. JSON `null` for an empty body.
    pub data: &'a RawValue,
    /// Whether the body was a NestJS packet (had `pattern` or `data`) rather than a raw payload.
    pub packet: bool,
}

#[derive(Deserialize)]
struct Packet<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    pattern: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// Like `Option<&RawValue>`, but a JSON `null` counts as present (NestJS tests `!== undefined`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

const NULL: &str = "null";

/// Parses a NATS message body into id and data.
///
/// Errors: 400 `MALFORMED_PAYLOAD` when the body is not JSON.
pub fn parse(body: &[u8]) -> Result<Incoming<'_>, RpcError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Incoming { id: None, data: null(), packet: false });
    }
    if let Ok(packet) = serde_json::from_slice::<Packet<'_>>(body)
        && (packet.pattern.is_some() || packet.data.is_some())
    {
        return Ok(Incoming { id: packet.id, data: packet.data.unwrap_or(null()), packet: true });
    }
    let data = serde_json::from_slice::<&RawValue>(body)
        .map_err(|e| RpcError::new(400, codes::MALFORMED_PAYLOAD, format!("body is not valid JSON: {e}")))?;
    Ok(Incoming { id: None, data, packet: false })
}

/// Reads only the request id, for replying to a body we will not otherwise parse (too large).
pub fn peek_id(body: &[u8]) -> Option<&RawValue> {
    serde_json::from_slice::<Packet<'_>>(body).ok().and_then(|p| p.id)
}

fn null() -> &'static RawValue {
    // A valid literal; cannot fail.
    serde_json::from_str(NULL).expect("null is JSON")
}

/// A success reply under construction: `{"response":`, after which the caller writes the response
/// JSON, then [`close_response`]. One buffer from handler output to wire (no copy of the JSON);
/// 512 bytes hold a typical document reply without regrowing.
pub fn open_response() -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"response\":");
    out
}

/// Completes a reply begun with [`open_response`]: `,"isDisposed":true,"id":<id>}`.
pub fn close_response(out: &mut Vec<u8>, id: Option<&RawValue>) {
    close(out, id.map(RawValue::get));
}

/// Encodes an error reply: `{"err":{status,code,message[,details]},"isDisposed":true,"id":..}`.
pub fn encode_error(id: Option<&RawValue>, err: &RpcError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"err\":");
    // Serializing a struct of strings, numbers and a Value into a Vec cannot fail.
    serde_json::to_writer(&mut out, err).expect("RpcError serializes");
    close(&mut out, id.map(RawValue::get));
    out
}

fn close(out: &mut Vec<u8>, id: Option<&str>) {
    out.extend_from_slice(b",\"isDisposed\":true");
    if let Some(id) = id {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id.as_bytes());
    }
    out.push(b'}');
}

/// A request packet as a NestJS `ClientProxy.send` writes it.
#[derive(Serialize)]
pub struct RequestPacket<'a, T: Serialize + ?Sized> {
    /// The subject / message pattern.
    pub pattern: &'a str,
    /// The payload.
    pub data: &'a T,
    /// Correlation id; omitted for events (`emit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
}

/// A reply envelope as read by a caller.
#[derive(Deserialize)]
pub struct Reply<'a> {
    /// The handler's result, absent when it returned nothing.
    #[serde(default, borrow)]
    pub response: Option<&'a RawValue>,
    /// The error object, when the handler failed.
    #[serde(default)]
    pub err: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> (Option<String>, String) {
        let incoming = parse(body.as_bytes()).unwrap();
        (incoming.id.map(|id| id.get().to_owned()), incoming.data.get().to_owned())
    }

    #[test]
    fn a_nestjs_request_yields_its_id_and_data() {
        let got = parsed(r#"{"pattern":"media.findOne","data":{"id":"m1"},"id":"abc"}"#);
        assert_eq!(got, (Some(r#""abc""#.into()), r#"{"id":"m1"}"#.into()));
    }

    #[test]
    fn a_packet_without_id_is_an_event() {
        assert_eq!(parsed(r#"{"pattern":"media.created","data":[1]}"#), (None, "[1]".into()));
    }

    #[test]
    fn a_packet_without_data_has_null_data() {
        assert_eq!(parsed(r#"{"pattern":"auth.me","id":"7"}"#), (Some(r#""7""#.into()), "null".into()));
    }

    #[test]
    fn a_null_data_field_still_makes_a_packet() {
        assert_eq!(parsed(r#"{"data":null,"id":"7"}"#), (Some(r#""7""#.into()), "null".into()));
    }

    #[test]
    fn a_raw_payload_is_the_data_and_its_id_field_is_not_the_request_id() {
        assert_eq!(parsed(r#"{"id":"m1"}"#), (None, r#"{"id":"m1"}"#.into()));
        assert_eq!(parsed("42"), (None, "42".into()));
        assert_eq!(parsed(""), (None, "null".into()));
    }

    #[test]
    fn malformed_json_is_a_400() {
        let err = parse(b"{not json").unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (400, codes::MALFORMED_PAYLOAD));
    }

    #[test]
    fn replies_echo_the_id_and_are_disposed() {
        let id: &RawValue = serde_json::from_str(r#""abc""#).unwrap();
        let mut reply = open_response();
        reply.extend_from_slice(br#"{"ok":1}"#);
        close_response(&mut reply, Some(id));
        assert_eq!(reply, br#"{"response":{"ok":1},"isDisposed":true,"id":"abc"}"#);
        assert_eq!(
            encode_error(Some(id), &RpcError::new(404, "NOT_FOUND", "gone")),
            br#"{"err":{"status":404,"code":"NOT_FOUND","message":"gone"},"isDisposed":true,"id":"abc"}"#
        );
    }
}
