//! The bytes on the wire: how one document version is framed for each endpoint, in every form
//! it is sent. Each form is built at most once per version, on first use, and the same bytes are
//! shared by every connection that sends it; cold topics of the long tail never build the
//! streaming ones.
//!
//! - [`sse`]: Server-Sent Events frames, the stream's fixed pieces (`retry:`, heartbeats) and the
//!   HTTP/1.1 chunks the front door writes them in; identity or gzip.
//! - [`ws`]: WebSocket text messages and the frames they leave in; plain or compressed with
//!   [`permessage`]-deflate.
//!
//! Compressed forms are compressed once per version, each piece on its own: raw deflate from a
//! fresh state ending in a sync flush ([`deflate`]), so that a piece needs no byte sent before
//! it and the same bytes serve every connection, whatever it was sent earlier. A connection
//! keeps no compressor (hundreds of KB each); the cost is a little ratio against compressing
//! a whole stream with one state.
//!
//! Only a frame's data (the document, or the patch) goes through the compressor, once per
//! version: the gzip SSE frame and the permessage-deflate message are that one [`Segment`]
//! between their own few bytes of head and tail, sent as stored blocks. A topic followed on
//! both transports is compressed once, not twice.

pub mod permessage;
pub mod quick;
pub mod sse;
pub mod ws;

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, FlushCompress};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::hub::Encoded;

/// The CORS headers of every answer, as the router's layer writes them.
const GET_CORS: &[u8] =
    b"access-control-expose-headers: etag\r\naccess-control-allow-origin: *\r\n";

/// A body up to this size is copied after its head, so that the answer is one contiguous write
/// (a city document is 1–5 KB); a larger one (the `cities` index, ~900 KB) is written from the
/// version's shared bytes, so that a client that stops reading holds no copy of it.
pub const GET_COPY_MAX: usize = 16 << 10;

/// The whole answer to a GET or HEAD of `enc`: `304` when the client holds this version
/// (`not_modified`), else the head of [`Encoded::get_head`] and, for a GET, the body (identity
/// or gzip). The head goes into `out` with the body when it is at most [`GET_COPY_MAX`]; a
/// larger body is returned, to be written after `out`. `date` is the `date` header's value.
pub fn get_answer(
    out: &mut Vec<u8>,
    enc: &Encoded,
    gzip: bool,
    head_only: bool,
    not_modified: bool,
    date: &str,
) -> Option<Bytes> {
    if not_modified {
        out.extend_from_slice(b"HTTP/1.1 304 Not Modified\r\netag: ");
        out.extend_from_slice(enc.etag.as_bytes());
        out.extend_from_slice(b"\r\ncache-control: ");
        out.extend_from_slice(super::CACHE_CONTROL.as_bytes());
        out.extend_from_slice(b"\r\nvary: Accept-Encoding\r\n");
        out.extend_from_slice(GET_CORS);
    } else {
        out.extend_from_slice(enc.get_head(gzip));
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    if head_only || not_modified {
        return None;
    }
    let body = if gzip { enc.gzip() } else { &enc.body };
    if body.len() > GET_COPY_MAX {
        return Some(body.clone());
    }
    out.extend_from_slice(body);
    None
}

/// Which streaming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    Snapshot,
    Update,
    /// The change from the version before (see [`Encoded::patch`]), for a subscriber that asked
    /// for deltas and holds that version.
    Patch,
}

impl Frame {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Frame::Snapshot => "snapshot",
            Frame::Update => "update",
            Frame::Patch => "patch",
        }
    }

    fn index(self) -> usize {
        match self {
            Frame::Snapshot => 0,
            Frame::Update => 1,
            Frame::Patch => 2,
        }
    }
}

/// The forms of one document version, each built on first use.
#[derive(Debug, Default)]
pub struct Forms {
    gzip: OnceLock<Bytes>,
    /// The head of the GET answer, identity and gzip, up to its `date` line (see
    /// [`Encoded::get_head`]).
    get_head: [OnceLock<Bytes>; 2],
    sse: [OnceLock<Bytes>; 3],
    /// The frame's data compressed, shared by both transports: the document (snapshot and
    /// update), and the patch object after its opening brace.
    data_deflate: [OnceLock<Segment>; 2],
    sse_gzip: [OnceLock<Segment>; 3],
    ws: [OnceLock<Utf8Bytes>; 3],
    ws_deflate: [OnceLock<Bytes>; 3],
    /// `{"topic", "base", "version", "patch"}`, when a patch is worth sending.
    patch: OnceLock<Option<Bytes>>,
}

impl Encoded {
    /// The head of the `200` answer to a GET or HEAD of this version, as the router writes it
    /// (`content-type`, `etag`, `cache-control`, `vary`, `content-encoding` for gzip, the CORS
    /// headers, `content-length`), less the `date` line and the blank line that end it: the
    /// front door writes it with the body on the bare socket ([`get_answer`]).
    pub fn get_head(&self, gzip: bool) -> &Bytes {
        self.forms.get_head[usize::from(gzip)].get_or_init(|| {
            let len = if gzip {
                self.gzip().len()
            } else {
                self.body.len()
            };
            let mut h = BytesMut::with_capacity(320);
            h.put_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\netag: ");
            h.put_slice(self.etag.as_bytes());
            h.put_slice(b"\r\ncache-control: ");
            h.put_slice(super::CACHE_CONTROL.as_bytes());
            h.put_slice(b"\r\nvary: Accept-Encoding\r\n");
            if gzip {
                h.put_slice(b"content-encoding: gzip\r\n");
            }
            h.put_slice(GET_CORS);
            h.put_slice(format!("content-length: {len}\r\n").as_bytes());
            h.freeze()
        })
    }

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

    /// The SSE frame (see [`sse::frame`]); a patch's data is [`Encoded::patch`].
    pub fn sse(&self, frame: Frame) -> &Bytes {
        self.forms.sse[frame.index()].get_or_init(|| {
            let data = match frame {
                Frame::Patch => self
                    .patch()
                    .expect("a patch is sent only when there is one"),
                _ => &self.body,
            };
            sse::frame(frame, self.version, data)
        })
    }

    /// The change from the version this one replaced, computed once: `{"topic", "base",
    /// "version", "patch"}`, `patch` an RFC 6902 JSON Patch that turns the `base` document into
    /// this one. `None` for a first version, or when the patch is not smaller than the document
    /// (a subscriber then gets the document whole).
    pub fn patch(&self) -> Option<&Bytes> {
        self.forms
            .patch
            .get_or_init(|| {
                let (base, before) = self.base.as_ref()?;
                let before: serde_json::Value = serde_json::from_slice(before).ok()?;
                let after: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
                let patch = json_patch::diff(&before, &after);
                let message = serde_json::json!({
                    "topic": &*self.topic,
                    "base": base,
                    "version": self.version,
                    "patch": patch,
                });
                let bytes = Bytes::from(message.to_string());
                (bytes.len() < self.body.len()).then_some(bytes)
            })
            .as_ref()
    }

    /// Whether a subscriber that holds `held` of this topic can be sent the patch.
    pub fn patches(&self, held: u64) -> bool {
        self.base.as_ref().is_some_and(|(base, _)| *base == held) && self.patch().is_some()
    }

    /// The data of `frame` compressed once, whichever transport asks first: the document, or
    /// for a patch the object after its `{` (which both wrappers open with their own head).
    fn data_deflate(&self, frame: Frame) -> &Segment {
        let patch = frame == Frame::Patch;
        self.forms.data_deflate[usize::from(patch)].get_or_init(|| {
            if patch {
                let change = self
                    .patch()
                    .expect("a patch is sent only when there is one");
                Segment::compress(&change[1..])
            } else {
                Segment::compress(&self.body)
            }
        })
    }

    /// The SSE frame as a segment of a gzip stream: its head, the shared compressed data, its
    /// tail.
    pub fn sse_gzip(&self, frame: Frame) -> &Segment {
        self.forms.sse_gzip[frame.index()].get_or_init(|| {
            let mut head = sse::head(frame, self.version).into_bytes();
            if frame == Frame::Patch {
                head.push(b'{');
            }
            Segment::join(&[
                &Segment::stored(&head),
                self.data_deflate(frame),
                &Segment::stored(sse::TAIL),
            ])
        })
    }

    /// The WebSocket message compressed for permessage-deflate (RFC 7692 §7.2.1): its head, the
    /// shared compressed data, its tail, ended as [`permessage::message`] requires.
    pub fn ws_deflate(&self, frame: Frame) -> &Bytes {
        self.forms.ws_deflate[frame.index()].get_or_init(|| {
            let data = self.data_deflate(frame);
            match frame {
                Frame::Patch => permessage::message(
                    Segment::join(&[&Segment::stored(ws::PATCH_HEAD), data]).bytes,
                    true,
                ),
                _ => permessage::message(
                    Segment::join(&[
                        &Segment::stored(ws::head(frame, &self.topic, self.version).as_bytes()),
                        data,
                        &Segment::stored(ws::TAIL),
                    ])
                    .bytes,
                    false,
                ),
            }
        })
    }

    /// The WebSocket message (see [`ws::message`] and [`ws::patch`]).
    pub fn ws(&self, frame: Frame) -> &Utf8Bytes {
        self.forms.ws[frame.index()].get_or_init(|| match frame {
            Frame::Patch => ws::patch(
                self.patch()
                    .expect("a patch is sent only when there is one"),
            ),
            _ => ws::message(frame, &self.topic, self.version, &self.body),
        })
    }
}

/// The level of pieces larger than [`quick::MAX`] (smaller ones go to [`quick`]): a capital's
/// councillors, a state, the national roll-up, sent to the most readers.
const LEVEL: u32 = 6;

/// A piece of a deflate stream that needs no byte before it and ends on a byte boundary (after
/// a sync flush or a stored block), so that pieces concatenated are one valid stream; with the
/// CRC-32 and length of what it inflates to, which a gzip trailer needs.
#[derive(Debug)]
pub struct Segment {
    pub bytes: Bytes,
    crc: u32,
    len: u64,
}

impl Segment {
    /// `data` compressed (see [`deflate`]).
    pub fn compress(data: &[u8]) -> Segment {
        Segment {
            bytes: Bytes::from(deflate(data)),
            crc: crc32fast::hash(data),
            len: data.len() as u64,
        }
    }

    /// `data` (under 64 KiB) as a stored block, uncompressed: for the few bytes around a
    /// compressed document, or that a connection sends of its own, which are not worth a
    /// compressor.
    pub fn stored(data: &[u8]) -> Segment {
        let len = u16::try_from(data.len()).expect("a short piece");
        let mut b = BytesMut::with_capacity(5 + data.len());
        // BFINAL 0, BTYPE 00, padded to the byte (RFC 1951 §3.2.4), then LEN and NLEN.
        b.put_u8(0);
        b.put_u16_le(len);
        b.put_u16_le(!len);
        b.extend_from_slice(data);
        Segment {
            bytes: b.freeze(),
            crc: crc32fast::hash(data),
            len: data.len() as u64,
        }
    }

    /// Pieces one after the other, as one piece.
    pub fn join(parts: &[&Segment]) -> Segment {
        let mut bytes = BytesMut::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
        let mut crc = crc32fast::Hasher::new();
        for part in parts {
            bytes.extend_from_slice(&part.bytes);
            crc.combine(&part.hasher());
        }
        Segment {
            bytes: bytes.freeze(),
            crc: crc.clone().finalize(),
            len: crc.total_len(),
        }
    }

    /// What the piece inflates to, as a CRC-32 state to combine with the pieces around it.
    pub fn hasher(&self) -> crc32fast::Hasher {
        crc32fast::Hasher::new_with_initial_len(self.crc, self.len)
    }
}

/// `data` as raw deflate compressed from a fresh state, ending in a sync flush (an empty stored
/// block, `00 00 ff ff`): byte-aligned, so that it can follow any other such piece in one
/// deflate stream, and decodable without any byte before it.
///
/// Pieces up to [`quick::MAX`] bytes go to [`quick`]. Larger ones to a compressor at [`LEVEL`],
/// the thread's own, reset before each piece (the same bytes as a new one):
/// a new compressor allocates and clears some 300 KB of tables per frame, which at 19,000
/// subscribers over ~2,800 topics (five deliveries per compressed frame) made compressed
/// streams cost 1.46× the CPU per delivery of identity ones (BENCHMARKS.md, "Compressed
/// fan-out").
pub fn deflate(data: &[u8]) -> Vec<u8> {
    if data.len() <= quick::MAX {
        return quick::deflate(data);
    }
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::new(LEVEL), false));
    }
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        // Room for the worst case (stored blocks and the flush), so that one call does it all:
        // a call that fills the buffer exactly cannot tell whether the flush is complete, and
        // the next would add an empty block.
        let mut out = Vec::with_capacity(data.len() + data.len() / 1024 + 64);
        loop {
            let consumed = compressor.total_in() as usize;
            compressor
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
                .expect("compressing to memory");
            // Done once every byte is in and the flush left room to spare.
            if compressor.total_in() as usize == data.len() && out.len() < out.capacity() {
                out.shrink_to_fit();
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    })
}

/// Whether an `Accept-Encoding` header (its values, as sent) allows gzip (RFC 9110, 12.5.3):
/// `gzip` (or its alias `x-gzip`) with a weight above 0, or, when gzip is not named, `*` with a
/// weight above 0. A weight that does not parse counts as 1, as no weight.
pub fn accepts_gzip<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let (mut gzip, mut any) = (None::<bool>, None::<bool>);
    let codings = values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','));
    for coding in codings {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let weight = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, q)| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if name == "*" {
            &mut any
        } else {
            continue;
        };
        // Named twice: accepted if either says so.
        *slot = Some(slot.unwrap_or(false) || weight > 0.0);
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bus::Document;
    use crate::documents::Draft;

    pub(crate) fn encoded(topic: &str, version: u64) -> Encoded {
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

    /// Raw deflate inflated (a piece ending in a sync flush: no final block).
    pub(super) fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 << 20);
        flate2::Decompress::new(false)
            .decompress_vec(raw, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out
    }

    /// Version 10 of a city, with a patch from version 9 (one count changed).
    fn with_patch() -> Encoded {
        let version = |version: u64, lead: u32| {
            let candidates = (0..40)
                .map(|i| {
                    format!(
                        r#"{{"name":"Candidate {i}","votes":{}}}"#,
                        (i == 0) as u32 * lead + i
                    )
                })
                .collect::<Vec<_>>()
                .join(",");
            let draft = Draft {
                topic: "mayors-sp-sao-paulo".into(),
                body: Bytes::from(format!(
                    r#"{{"topic":"mayors-sp-sao-paulo","candidates":[{candidates}]}}"#
                )),
            };
            Encoded::new(&Document::stamp(&draft, version, 1000 + version as i64))
        };
        let first = version(9, 1200);
        Encoded {
            base: Some((first.version, first.body.clone())),
            ..version(10, 1300)
        }
    }

    #[test]
    fn compressed_forms_inflate_back_to_the_plain_ones() {
        let enc = with_patch();
        assert!(enc.patch().is_some(), "the test needs a patch");
        // One inflater for every message, as Chromium keeps: each message must end whole.
        let mut inflater = flate2::Decompress::new(false);
        for frame in [Frame::Snapshot, Frame::Update, Frame::Patch, Frame::Update] {
            let segment = &enc.sse_gzip(frame).bytes;
            assert_eq!(inflate(segment), enc.sse(frame).to_vec(), "{frame:?}");
            let mut message = enc.ws_deflate(frame).to_vec();
            assert!(!message.ends_with(&permessage::TAIL));
            message.extend_from_slice(&permessage::TAIL);
            assert_eq!(inflate(&message), enc.ws(frame).as_bytes(), "{frame:?}");
            let mut out = Vec::with_capacity(1 << 16);
            let before = inflater.total_in();
            inflater
                .decompress_vec(&message, &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            assert_eq!(inflater.total_in() - before, message.len() as u64);
            assert_eq!(out, enc.ws(frame).as_bytes(), "{frame:?}, one inflater");
        }
    }

    /// The document is compressed once: the gzip SSE frame and the permessage-deflate message
    /// carry the same compressed bytes of it, between their own heads and tails.
    #[test]
    fn both_transports_carry_one_compression_of_the_document() {
        let enc = with_patch();
        for frame in [Frame::Update, Frame::Patch] {
            let data = &enc.data_deflate(frame).bytes;
            let inner = &data[..data.len() - permessage::TAIL.len()];
            let contains = |haystack: &[u8]| haystack.windows(inner.len()).any(|w| w == inner);
            assert!(contains(&enc.sse_gzip(frame).bytes), "{frame:?}: SSE");
            assert!(contains(enc.ws_deflate(frame)), "{frame:?}: WebSocket");
        }
    }

    #[test]
    fn gzip_negotiation_honours_q_zero() {
        assert!(!accepts_gzip([]));
        assert!(accepts_gzip([&b"br, gzip;q=0.8"[..]]));
        assert!(!accepts_gzip([&b"gzip;q=0, br"[..]]));
        assert!(accepts_gzip([&b"deflate"[..], &b"*"[..]]));
        // Named, gzip's own weight decides, whatever `*` says.
        assert!(!accepts_gzip([&b"gzip;q=0, *"[..]]));
        assert!(!accepts_gzip([&b"*, gzip; q=0.000"[..]]));
        assert!(accepts_gzip([&b"*;q=0, gzip"[..]]));
        assert!(!accepts_gzip([&b"*;q=0"[..]]));
        assert!(!accepts_gzip([&b"identity;q=0"[..]]));
        assert!(accepts_gzip([&b"x-gzip"[..]]));
        assert!(accepts_gzip([&b"GZIP;Q=0.5"[..]]));
    }
}

#[cfg(test)]
mod reuse {
    use super::*;

    /// The thread's compressor, reused, gives each piece the bytes a new compressor gives: no
    /// state of one frame leaks into the next.
    #[test]
    fn a_reused_compressor_compresses_each_piece_as_a_new_one_would() {
        // A new thread has a new compressor.
        let fresh = |data: &'static [u8]| std::thread::spawn(move || deflate(data)).join().unwrap();
        let a = br#"{"topic":"mayors-sp-sao-paulo","candidates":[{"name":"A","votes":1200}]}"#;
        let b = br#"{"topic":"brazil","progress":{"percent":41.5},"states":[]}"#;
        // Larger than what goes to the quick encoder.
        let (a, b) = (a.repeat(100).leak(), b.repeat(100).leak());
        assert!(a.len() > quick::MAX && b.len() > quick::MAX);
        for data in [&a[..], &b[..], &a[..]] {
            assert_eq!(deflate(data), fresh(data));
        }
    }
}
