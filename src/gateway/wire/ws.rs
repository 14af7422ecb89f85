//! WebSocket on the wire: the JSON text messages, and the frames they leave in.

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::Frame;

/// Largest frame sent: a longer message goes out as a text frame and continuation frames of
/// this size (RFC 6455 §5.4; browsers and client libraries reassemble them). tungstenite copies
/// every frame into the connection's write buffer, and that buffer keeps its largest size for
/// the connection's life: sent whole, the 1 MB cities index or a 2 MB city would leave every
/// socket that once carried it holding as much. In 16 KiB fragments a socket holds at most 16
/// KiB, and a 2 MB document costs 128 writes instead of one, against copying 2 MB anyway.
pub const FRAGMENT: usize = 16 << 10;

/// The message of a document version: `{"type", "topic", "version", "document"}`, UTF-8 JSON
/// text.
pub fn message(frame: Frame, topic: &str, version: u64, body: &Bytes) -> Utf8Bytes {
    let head = head(frame, topic, version);
    let mut b = BytesMut::with_capacity(head.len() + body.len() + TAIL.len());
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(TAIL);
    // Validated once here; every send then shares these bytes.
    Utf8Bytes::try_from(b.freeze()).expect("JSON is UTF-8")
}

/// What comes before a message's document.
pub fn head(frame: Frame, topic: &str, version: u64) -> String {
    format!(
        "{{\"type\":\"{}\",\"topic\":{},\"version\":{},\"document\":",
        frame.name(),
        serde_json::to_string(topic).expect("a string serializes"),
        version
    )
}

/// What ends a message, after its document.
pub const TAIL: &[u8] = b"}";

/// What a `patch` message puts in place of the opening brace of the patch object.
pub const PATCH_HEAD: &[u8] = br#"{"type":"patch","#;

/// The `patch` message: `{"type": "patch", "topic", "base", "version", "patch"}`, from the
/// object of [`crate::gateway::hub::Encoded::patch`].
pub fn patch(change: &Bytes) -> Utf8Bytes {
    let mut b = BytesMut::with_capacity(change.len() + PATCH_HEAD.len());
    b.extend_from_slice(PATCH_HEAD);
    b.extend_from_slice(&change[1..]);
    Utf8Bytes::try_from(b.freeze()).expect("JSON is UTF-8")
}

/// An `error` message: `{"type": "error", "code", "message", "topic"}`.
pub fn error(code: &str, message: &str, topic: Option<&str>) -> Message {
    let v = serde_json::json!({"type": "error", "code": code, "message": message, "topic": topic});
    Message::Text(Utf8Bytes::from(v.to_string()))
}

/// The head of a whole text frame of `len` bytes from the server (final, unmasked: RFC 6455
/// §5.2), in the first `.1` bytes of `.0`.
pub fn text_head(len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | 0x1;
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

/// Send one text message, in fragments of at most [`FRAGMENT`] bytes: `payload` is the UTF-8
/// text, or with `compressed` its permessage-deflate form (see [`super::permessage`]), marked
/// by RSV1 on the first frame (RFC 7692 §6). A fragment may end inside a character or a
/// compressed block, which both RFCs allow (only the whole message must be valid).
pub async fn send_message<S>(
    socket: &mut S,
    mut payload: Bytes,
    compressed: bool,
) -> Result<(), tungstenite::Error>
where
    S: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut opcode = Data::Text;
    loop {
        let last = payload.len() <= FRAGMENT;
        let fragment = payload.split_to(payload.len().min(FRAGMENT));
        let mut frame = WireFrame::message(fragment, OpCode::Data(opcode), last);
        frame.header_mut().rsv1 = compressed && opcode == Data::Text;
        let frame = Message::Frame(frame);
        if last {
            return socket.send(frame).await;
        }
        socket.feed(frame).await?;
        opcode = Data::Continue;
    }
}
