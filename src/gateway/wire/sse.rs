//! Server-Sent Events on the wire: one frame per document version, `retry:` lines, heartbeat
//! comments, and the HTTP/1.1 chunks the front door sends them in.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Frame;

/// The response headers of a stream (CORS headers are added by the router's layer, or by the
/// front door).
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    // Tell nginx-style proxies not to buffer the stream.
    ("x-accel-buffering", "no"),
];

/// A heartbeat: a comment line, which keeps proxies from closing an idle stream.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// The SSE frame of a document version: `event:`, `id:` (the version) and one `data:` line
/// (the JSON has no raw newlines: serde_json escapes them).
pub fn frame(frame: Frame, version: u64, body: &[u8]) -> Bytes {
    let head = format!("event: {}\nid: {}\ndata: ", frame.name(), version);
    let mut b = BytesMut::with_capacity(head.len() + body.len() + 2);
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(b"\n\n");
    b.freeze()
}

/// `retry: <ms>`: the reconnection delay the client should use.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The head of a stream's response as the front door writes it, `extra` headers included: the
/// body is chunked and the connection closes when the stream ends.
pub fn response_head<'a>(extra: impl IntoIterator<Item = &'a (&'a str, &'a str)>) -> String {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in HEADERS.iter().chain(extra) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    head
}

/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Write one frame as an HTTP/1.1 chunk: size line, the shared bytes, CRLF, in one vectored
/// write (no copy of the frame).
pub async fn write_chunk(wr: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut size = [0u8; 18];
    let len = {
        let mut cursor = &mut size[..];
        write!(cursor, "{:x}\r\n", frame.len())?;
        18 - cursor.len()
    };
    let mut chunk = Buf::chain(Buf::chain(&size[..len], frame), &b"\r\n"[..]);
    wr.write_all_buf(&mut chunk).await
}
