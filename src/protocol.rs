//! The wire protocol in one place: close codes, server frames, and the decoding of client
//! frames with the documented error codes.
//!
//! A server frame is built once as a complete WebSocket frame ([`Frame`]: header and JSON
//! payload in shared bytes), so a push to ten thousand connections is serialised and
//! framed once and only reference-counted per recipient. Producer JSON (`data`) travels as
//! [`RawValue`] text, never re-parsed into numbers, so integers beyond 2^53 and `1.0` reach
//! the client exactly as they were sent.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::value::RawValue;

/// WebSocket close codes used by minipush (SPEC section 1).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    pub const BAD_SIGNATURE: u16 = 4001;
    pub const EXPIRED: u16 = 4002;
    pub const MALFORMED: u16 = 4003;
    pub const REPLACED: u16 = 4004;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const SERVER_FULL: u16 = 4009;
    pub const KICKED: u16 = 4010;
    pub const RATE_LIMITED: u16 = 4029;
}

/// Error codes carried by `{"type":"error"}` frames (SPEC section 2, plus the README's).
pub mod code {
    pub const BAD_JSON: &str = "bad_json";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_MEMBER: &str = "not_member";
    pub const UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
    pub const UNAVAILABLE: &str = "unavailable";
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Unix time in seconds.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// One complete, unmasked server-to-client WebSocket frame, shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    const TEXT: u8 = 0x1;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xA;

    fn new(opcode: u8, payload: &[&[u8]]) -> Frame {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut buf = BytesMut::with_capacity(len + 10);
        buf.put_u8(0x80 | opcode); // FIN
        if len < 126 {
            buf.put_u8(len as u8);
        } else if len <= usize::from(u16::MAX) {
            buf.put_u8(126);
            buf.put_u16(len as u16);
        } else {
            buf.put_u8(127);
            buf.put_u64(len as u64);
        }
        for part in payload {
            buf.put_slice(part);
        }
        Frame(buf.freeze())
    }

    /// A text frame carrying `text`.
    pub fn text(text: &str) -> Frame {
        Frame::new(Self::TEXT, &[text.as_bytes()])
    }

    /// A close frame with `code` and a reason cut to fit a control frame (123 bytes).
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Frame::new(
            Self::CLOSE,
            &[&code.to_be_bytes(), &reason.as_bytes()[..end]],
        )
    }

    /// A heartbeat ping: the same two static bytes for every connection.
    pub fn ping() -> Frame {
        const PING: [u8; 2] = [0x80 | Frame::PING, 0];
        Frame(Bytes::from_static(&PING))
    }

    /// A pong echoing the client's ping payload (at most 125 bytes, as the protocol says).
    pub fn pong(payload: &[u8]) -> Frame {
        Frame::new(Self::PONG, &[&payload[..payload.len().min(125)]])
    }

    /// The bytes to write to the socket.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON text of a text frame (for tests and logs).
    pub fn payload(&self) -> &[u8] {
        let at = match self.0[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &self.0[at..]
    }
}

fn encode<T: Serialize>(frame: &T) -> Frame {
    // Serialising these plain structs cannot fail: keys are strings, values are JSON.
    let json = serde_json::to_vec(frame).expect("server frames always serialise");
    Frame::new(Frame::TEXT, &[&json])
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "welcome")]
struct Welcome<'a> {
    conn: &'a str,
    uid: Option<&'a str>,
    node: &'a str,
    epoch: &'a str,
    time: i64,
    heartbeat: u64,
    seqs: BTreeMap<&'a str, u64>,
}

/// The first frame of a connection. `seqs` is the current `seq` of each stream it reads
/// from the start (`all`, its `u:` stream): live pushes continue from there, and a later
/// `resume` from these numbers misses nothing.
pub fn welcome(
    conn: &str,
    uid: Option<&str>,
    node: &str,
    epoch: &str,
    heartbeat: u64,
    seqs: &[(String, u64)],
) -> Frame {
    encode(&Welcome {
        conn,
        uid,
        node,
        epoch,
        time: now_secs(),
        heartbeat,
        seqs: seqs.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
    })
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "push")]
struct Push<'a> {
    stream: &'a str,
    seq: Option<u64>,
    data: &'a RawValue,
    time: i64,
}

/// A `push` frame, serialised once and shared by every recipient.
pub fn push(stream: &str, seq: Option<u64>, data: &RawValue, time_ms: i64) -> Frame {
    encode(&Push {
        stream,
        seq,
        data,
        time: time_ms,
    })
}

/// A `push` frame's JSON text split around its `seq` value, for a broker that numbers the
/// push elsewhere (the Redis broker's script): `before + seq + after` is the frame's text.
pub fn push_template(stream: &str, data: &RawValue, time_ms: i64) -> (String, String) {
    let text = serde_json::to_string(&Push {
        stream,
        seq: None,
        data,
        time: time_ms,
    })
    .expect("server frames always serialise");
    // `stream` is made of name characters and comes before `seq`: the first match is it.
    let at = text.find("\"seq\":null").expect("a push has a seq") + "\"seq\":".len();
    (
        text[..at].to_string(),
        text[at + "null".len()..].to_string(),
    )
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "reply")]
struct ReplyFrame<'a> {
    #[serde(rename = "ref")]
    reference: Option<&'a str>,
    data: &'a RawValue,
}

pub fn reply(reference: Option<&str>, data: &RawValue) -> Frame {
    encode(&ReplyFrame { reference, data })
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "error")]
struct ErrorFrame<'a> {
    #[serde(rename = "ref")]
    reference: Option<&'a str>,
    code: &'a str,
    message: &'a str,
}

pub fn error(reference: Option<&str>, code: &str, message: &str) -> Frame {
    encode(&ErrorFrame {
        reference,
        code,
        message,
    })
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "pong")]
struct Pong {
    time: i64,
}

/// The answer to a client's `{"type":"ping"}`.
pub fn pong() -> Frame {
    encode(&Pong { time: now_ms() })
}

/// A frame the client got wrong: answered with an `error` frame, the connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The client's `id`, when it could be read.
    pub reference: Option<String>,
    pub code: &'static str,
    pub message: String,
}

impl FrameError {
    pub fn to_frame(&self) -> Frame {
        error(self.reference.as_deref(), self.code, &self.message)
    }
}

/// A decoded client frame: a JSON object with a string `type` and an optional string `id`.
/// Field values stay raw JSON text until a handler asks for them.
#[derive(Debug)]
pub struct ClientMessage {
    ty: String,
    id: Option<String>,
    text: String,
    fields: BTreeMap<String, Box<RawValue>>,
}

impl ClientMessage {
    /// Decodes one text frame, mapping every failure to its documented error code.
    pub fn parse(text: &str) -> Result<ClientMessage, FrameError> {
        let fields: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text).map_err(|e| {
            let (code, message) = match e.classify() {
                serde_json::error::Category::Data => (
                    code::BAD_REQUEST,
                    "a frame must be a JSON object".to_string(),
                ),
                _ => (code::BAD_JSON, format!("invalid JSON: {e}")),
            };
            FrameError {
                reference: None,
                code,
                message,
            }
        })?;
        let id = match fields.get("id") {
            None => None,
            Some(raw) => {
                Some(
                    serde_json::from_str::<String>(raw.get()).map_err(|_| FrameError {
                        reference: None,
                        code: code::BAD_REQUEST,
                        message: "`id` must be a string".into(),
                    })?,
                )
            }
        };
        let ty = fields
            .get("type")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .ok_or_else(|| FrameError {
                reference: id.clone(),
                code: code::BAD_REQUEST,
                message: "a frame needs a string `type`".into(),
            })?;
        Ok(ClientMessage {
            ty,
            id,
            text: text.to_string(),
            fields,
        })
    }

    /// The message's `type`.
    pub fn ty(&self) -> &str {
        &self.ty
    }

    /// The client's `id`, echoed as `ref` in the answer.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The whole frame as the client sent it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A field's raw JSON, if present.
    pub fn raw(&self, name: &str) -> Option<&RawValue> {
        self.fields.get(name).map(|b| &**b)
    }

    /// A required field decoded as `T`; a missing or mistyped field is a `bad_request`.
    pub fn field<T: DeserializeOwned>(&self, name: &str) -> Result<T, FrameError> {
        let raw = self
            .raw(name)
            .ok_or_else(|| self.bad_request(format!("missing field `{name}`")))?;
        serde_json::from_str(raw.get())
            .map_err(|_| self.bad_request(format!("field `{name}` has the wrong type")))
    }

    /// An error answering this message.
    pub fn bad_request(&self, message: impl Into<String>) -> FrameError {
        FrameError {
            reference: self.id.clone(),
            code: code::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// Group names: 1 to 64 characters from `[A-Za-z0-9_.:-]`.
pub fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_passes_data_through_unchanged() {
        let data =
            RawValue::from_string("{\"big\":12345678901234567890,\"f\":1.0}".into()).unwrap();
        let frame = push("u:u1", Some(3), &data, 5);
        assert_eq!(
            std::str::from_utf8(frame.payload()).unwrap(),
            r#"{"type":"push","stream":"u:u1","seq":3,"data":{"big":12345678901234567890,"f":1.0},"time":5}"#
        );
    }

    #[test]
    fn push_template_joins_into_the_numbered_frame() {
        let data = RawValue::from_string("{\"seq\":null}".into()).unwrap();
        let (before, after) = push_template("g:a", &data, 5);
        let text = format!("{before}7{after}");
        assert_eq!(text.as_bytes(), push("g:a", Some(7), &data, 5).payload());
    }

    #[test]
    fn frames_carry_rfc6455_headers() {
        let short = Frame::text("hi");
        assert_eq!(&short.bytes()[..], b"\x81\x02hi");
        let mid = Frame::text(&"x".repeat(300));
        assert_eq!(&mid.bytes()[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(mid.payload().len(), 300);
        let long = Frame::text(&"y".repeat(70_000));
        assert_eq!(&long.bytes()[..2], &[0x81, 127]);
        assert_eq!(long.payload().len(), 70_000);
        let close = Frame::close(4008, &"é".repeat(100));
        assert_eq!(close.bytes()[0], 0x88);
        assert!(close.payload().len() <= 125);
        assert_eq!(&close.payload()[..2], &4008u16.to_be_bytes());
        assert!(std::str::from_utf8(&close.payload()[2..]).is_ok());
        assert_eq!(&Frame::ping().bytes()[..], &[0x89, 0]);
    }

    #[test]
    fn decode_errors_have_documented_codes() {
        assert_eq!(
            ClientMessage::parse("{nope").unwrap_err().code,
            code::BAD_JSON
        );
        assert_eq!(
            ClientMessage::parse("[1]").unwrap_err().code,
            code::BAD_REQUEST
        );
        assert_eq!(
            ClientMessage::parse("{}").unwrap_err().code,
            code::BAD_REQUEST
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":1}"#).unwrap_err().code,
            code::BAD_REQUEST
        );
        let e = ClientMessage::parse(r#"{"id":"7","type":2}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("7"));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"x","id":7}"#)
                .unwrap_err()
                .code,
            code::BAD_REQUEST
        );
    }

    #[test]
    fn deep_nesting_is_skipped_as_raw_text_without_recursion() {
        // Field values are only scanned, never built, so depth costs no stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let parsed = ClientMessage::parse(&format!("{{\"type\":\"x\",\"d\":{deep}}}"));
        assert!(parsed.is_ok_and(|m| m.ty() == "x"));
        let unbalanced = "[".repeat(100_000);
        let parsed = ClientMessage::parse(&format!("{{\"type\":\"x\",\"d\":{unbalanced}}}"));
        assert!(parsed.is_err_and(|e| e.code == code::BAD_JSON));
    }

    #[test]
    fn decodes_type_id_and_fields() {
        let m = ClientMessage::parse(r#"{"type":"join","group":"room1","id":"1"}"#).unwrap();
        assert_eq!((m.ty(), m.id()), ("join", Some("1")));
        assert_eq!(m.field::<String>("group").unwrap(), "room1");
        assert_eq!(
            m.field::<String>("nope").unwrap_err().code,
            code::BAD_REQUEST
        );
    }

    #[test]
    fn group_names() {
        assert!(valid_group("room:1.a_b-c"));
        assert!(!valid_group(""));
        assert!(!valid_group("a b"));
        assert!(!valid_group(&"g".repeat(65)));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(text in "\\PC{0,200}") {
                let _ = ClientMessage::parse(&text);
            }

            #[test]
            fn objects_with_a_string_type_decode(ty in "[a-z.]{1,20}", id in proptest::option::of("[a-z0-9]{1,8}"), n in any::<i64>()) {
                let mut v = serde_json::json!({"type": ty, "n": n});
                if let Some(id) = &id {
                    v["id"] = serde_json::json!(id);
                }
                let m = ClientMessage::parse(&v.to_string()).unwrap();
                prop_assert_eq!(m.ty(), ty.as_str());
                prop_assert_eq!(m.id(), id.as_deref());
                prop_assert_eq!(m.field::<i64>("n").unwrap(), n);
            }
        }
    }
}
