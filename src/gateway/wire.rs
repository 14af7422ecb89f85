//! The bytes on the wire: how one document version is framed for each endpoint, in every form
//! it is sent. Each form is built at most once per version, on first use, and the same bytes are
//! shared by every connection that sends it; cold topics of the long tail never build the
//! streaming ones.
//!
//! - [`sse`]: Server-Sent Events frames, the stream's fixed pieces (`retry:`, heartbeats) and the
//!   HTTP/1.1 chunks the front door writes them in.
//! - [`ws`]: WebSocket text messages and the frames they leave in.

pub mod sse;
pub mod ws;

use std::sync::OnceLock;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::hub::Encoded;

/// Which of the two streaming messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Snapshot,
    Update,
}

impl Frame {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Frame::Snapshot => "snapshot",
            Frame::Update => "update",
        }
    }

    fn index(self) -> usize {
        match self {
            Frame::Snapshot => 0,
            Frame::Update => 1,
        }
    }
}

/// The forms of one document version, each built on first use.
#[derive(Debug, Default)]
pub struct Forms {
    gzip: OnceLock<Bytes>,
    sse: [OnceLock<Bytes>; 2],
    ws: [OnceLock<Utf8Bytes>; 2],
}

impl Encoded {
    /// The body, gzip-compressed: the GET answer to a client that accepts gzip.
    pub fn gzip(&self) -> &Bytes {
        self.forms.gzip.get_or_init(|| {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                flate2::Compression::default(),
            );
            enc.write_all(&self.body).expect("writing to memory");
            Bytes::from(enc.finish().expect("writing to memory"))
        })
    }

    /// The SSE frame (see [`sse::frame`]).
    pub fn sse(&self, frame: Frame) -> &Bytes {
        self.forms.sse[frame.index()].get_or_init(|| sse::frame(frame, self.version, &self.body))
    }

    /// The WebSocket message (see [`ws::message`]).
    pub fn ws(&self, frame: Frame) -> &Utf8Bytes {
        self.forms.ws[frame.index()]
            .get_or_init(|| ws::message(frame, &self.topic, self.version, &self.body))
    }
}

/// Whether an `Accept-Encoding` header (its values, as sent) allows gzip: `gzip` or `*`, not
/// refused with `q=0`.
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Document;
    use crate::documents::Draft;

    pub(super) fn encoded(topic: &str, version: u64) -> Encoded {
        let draft = Draft {
            topic: topic.into(),
            body: Bytes::from(format!(r#"{{"topic":"{topic}"}}"#)),
        };
        Encoded::new(&Document::stamp(&draft, version, 1000 + version as i64))
    }

    #[test]
    fn encodings_carry_the_version_and_the_same_body() {
        let enc = encoded("brazil", 7);
        let sse = std::str::from_utf8(enc.sse(Frame::Update)).unwrap();
        assert!(sse.starts_with("event: update\nid: 7\ndata: {\"version\":7,"));
        assert!(sse.ends_with("}\n\n"));
        let ws: serde_json::Value = serde_json::from_str(enc.ws(Frame::Snapshot)).unwrap();
        assert_eq!(ws["type"], "snapshot");
        assert_eq!(ws["topic"], "brazil");
        assert_eq!(ws["version"], 7);
        assert_eq!(ws["document"]["topic"], "brazil");
        assert_eq!(enc.etag, "\"7\"");
        let mut d = flate2::read::GzDecoder::new(&enc.gzip()[..]);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        assert_eq!(out, enc.body);
    }

    #[test]
    fn gzip_negotiation_honours_q_zero() {
        assert!(!accepts_gzip([]));
        assert!(accepts_gzip([&b"br, gzip;q=0.8"[..]]));
        assert!(!accepts_gzip([&b"gzip;q=0, br"[..]]));
        assert!(accepts_gzip([&b"deflate"[..], &b"*"[..]]));
    }
}
