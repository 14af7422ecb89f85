//! Server-Sent Events on the wire: one frame per document version, `retry:` lines, heartbeat
//! comments, and the HTTP/1.1 chunks the front door sends them in.
//!
//! A client whose `Accept-Encoding` allows gzip gets the stream as one gzip member
//! (`Content-Encoding: gzip`): the 10-byte header, then every piece as a [`Segment`] (each frame
//! compressed once per version and shared), and on a clean end (the drain) an empty final block
//! and the trailer, the CRC-32 and length of everything sent, combined from the pieces' own.

use std::io;
use std::sync::{Arc, LazyLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use crc32fast::Hasher;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::{Frame, Segment};
use crate::gateway::hub::Encoded;
use crate::metrics::StreamForm;

/// The response headers of a stream (CORS headers are added by the router's layer, or by the
/// front door).
pub const HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
    // Tell nginx-style proxies not to buffer the stream.
    ("x-accel-buffering", "no"),
    ("vary", "accept-encoding"),
];
/// The header of a gzip stream, beside [`HEADERS`].
pub const GZIP: (&str, &str) = ("content-encoding", "gzip");

/// The gzip member header (RFC 1952 §2.3): deflate, no flags, no time, unknown system.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// An empty final block with fixed Huffman codes: the end of a deflate stream.
const FINAL_BLOCK: [u8; 2] = [0x03, 0x00];

/// The heartbeat as a gzip segment, shared by every stream.
static HEARTBEAT_GZIP: LazyLock<Segment> = LazyLock::new(|| Segment::compress(HEARTBEAT));

/// What a stream sends, before it is encoded.
pub enum Piece {
    Retry(u64),
    Document(Arc<Encoded>, Frame),
    Heartbeat,
    /// The clean end of the stream.
    End,
}

/// How one stream is encoded, and the little state gzip needs per connection: whether its
/// header is out, and the CRC-32 and length of everything sent. A copy taken before encoding a
/// piece puts the stream back as it was if the piece is not sent after all.
#[derive(Clone)]
pub enum Encoder {
    Identity,
    Gzip { started: bool, sent: Hasher },
}

impl Encoder {
    pub fn new(gzip: bool) -> Self {
        if gzip {
            Encoder::Gzip {
                started: false,
                sent: Hasher::new(),
            }
        } else {
            Encoder::Identity
        }
    }

    pub fn form(&self) -> StreamForm {
        match self {
            Encoder::Identity => StreamForm::Identity,
            Encoder::Gzip { .. } => StreamForm::Gzip,
        }
    }

    /// The bytes of `piece` on this stream (empty: nothing to send).
    pub fn encode(&mut self, piece: &Piece) -> Bytes {
        match piece {
            Piece::Document(enc, frame) if self.started() => self.document(enc, *frame).clone(),
            _ => self.other(piece),
        }
    }

    /// Whether the stream has sent its first piece (on gzip, the member's header with it).
    fn started(&self) -> bool {
        matches!(
            self,
            Encoder::Identity | Encoder::Gzip { started: true, .. }
        )
    }

    /// The bytes of a document's frame on a stream that has sent its first piece (its
    /// `retry:`), shared with every stream that sends it: identity, or the compressed segment.
    pub fn document<'a>(&mut self, enc: &'a Encoded, frame: Frame) -> &'a Bytes {
        debug_assert!(self.started(), "a stream starts with its retry:");
        match self {
            Encoder::Gzip { sent, .. } => {
                let segment = enc.sse_gzip(frame);
                sent.combine(&segment.hasher());
                &segment.bytes
            }
            Encoder::Identity => enc.sse(frame),
        }
    }

    fn other(&mut self, piece: &Piece) -> Bytes {
        let (started, sent) = match self {
            Encoder::Identity => {
                return match piece {
                    Piece::Retry(ms) => retry(*ms),
                    Piece::Document(enc, frame) => enc.sse(*frame).clone(),
                    Piece::Heartbeat => Bytes::from_static(HEARTBEAT),
                    Piece::End => Bytes::new(),
                };
            }
            Encoder::Gzip { started, sent } => (started, sent),
        };
        let own;
        let segment = match piece {
            Piece::Retry(ms) => {
                own = Segment::stored(&retry(*ms));
                &own
            }
            Piece::Document(enc, frame) => enc.sse_gzip(*frame),
            Piece::Heartbeat => &HEARTBEAT_GZIP,
            Piece::End => {
                let mut end = BytesMut::with_capacity(18);
                if !std::mem::replace(started, true) {
                    end.extend_from_slice(&GZIP_HEADER);
                }
                end.extend_from_slice(&FINAL_BLOCK);
                end.put_u32_le(sent.clone().finalize());
                // ISIZE: the length modulo 2^32.
                end.put_u32_le(sent.total_len() as u32);
                return end.freeze();
            }
        };
        sent.combine(&segment.hasher());
        if std::mem::replace(started, true) {
            return segment.bytes.clone();
        }
        let mut first = BytesMut::with_capacity(GZIP_HEADER.len() + segment.bytes.len());
        first.extend_from_slice(&GZIP_HEADER);
        first.extend_from_slice(&segment.bytes);
        first.freeze()
    }
}

/// A heartbeat: a comment line, which keeps proxies from closing an idle stream.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// The SSE frame of a document version: `event:`, `id:` (the version) and one `data:` line
/// (the JSON has no raw newlines: serde_json escapes them).
pub fn frame(frame: Frame, version: u64, body: &[u8]) -> Bytes {
    let head = head(frame, version);
    let mut b = BytesMut::with_capacity(head.len() + body.len() + TAIL.len());
    b.extend_from_slice(head.as_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(TAIL);
    b.freeze()
}

/// What comes before a frame's data: `event:`, `id:`, and `data: `.
pub fn head(frame: Frame, version: u64) -> String {
    format!("event: {}\nid: {}\ndata: ", frame.name(), version)
}

/// What ends a frame, after its data.
pub const TAIL: &[u8] = b"\n\n";

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

/// Write `frames` (SSE frames, or gzip segments of one stream, which follow each other as they
/// are) as one HTTP/1.1 chunk: size line, the shared bytes of each frame, CRLF, in vectored
/// writes. No frame is copied: a client that stops reading holds a reference to each, not a
/// copy (a stream on the 900 KB `cities` index would hold one per connection); and nothing is
/// allocated, the size line being on the stack and the frames borrowed.
pub async fn write_chunk(wr: &mut (impl AsyncWrite + Unpin), frames: &[Bytes]) -> io::Result<()> {
    let body: usize = frames.iter().map(Bytes::len).sum();
    let (size, end) = chunk_size(body);
    let mut chunk = Chunk {
        size,
        start: 0,
        end,
        frames,
        offset: 0,
        crlf: 0,
        remaining: end + body + 2,
    };
    wr.write_all_buf(&mut chunk).await
}

/// One chunk as a [`Buf`]: the size line `size[start..end]`, then `frames` (the first one
/// `offset` bytes in), then the CRLF from its byte `crlf`. `write_all_buf` writes it in
/// vectored writes of up to 64 pieces.
struct Chunk<'a> {
    size: [u8; 18],
    start: usize,
    end: usize,
    frames: &'a [Bytes],
    offset: usize,
    crlf: usize,
    remaining: usize,
}

impl Chunk<'_> {
    /// Every piece not written yet, in order, empty ones left out.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let frames = self.frames.iter().enumerate().map(|(i, f)| match i {
            0 => &f[self.offset..],
            _ => &f[..],
        });
        std::iter::once(&self.size[self.start..self.end])
            .chain(frames)
            .chain(std::iter::once(&b"\r\n"[self.crlf..]))
            .filter(|p| !p.is_empty())
    }
}

impl Buf for Chunk<'_> {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces().next().unwrap_or(&[])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [io::IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, piece) in dst.iter_mut().zip(self.pieces()) {
            *slot = io::IoSlice::new(piece);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.remaining, "advance past the end of the chunk");
        self.remaining -= cnt;
        let size = cnt.min(self.end - self.start);
        self.start += size;
        cnt -= size;
        while cnt > 0 {
            let Some(first) = self.frames.first() else {
                self.crlf += cnt;
                return;
            };
            let left = first.len() - self.offset;
            if cnt < left {
                self.offset += cnt;
                return;
            }
            cnt -= left;
            self.frames = &self.frames[1..];
            self.offset = 0;
        }
    }
}

/// The size line of a chunk of `len` bytes, in the first `.1` bytes of `.0`.
pub fn chunk_size(len: usize) -> ([u8; 18], usize) {
    use std::io::Write;
    let mut size = [0u8; 18];
    let mut cursor = &mut size[..];
    write!(cursor, "{len:x}\r\n").expect("18 bytes hold a 64-bit size in hex");
    let n = 18 - cursor.len();
    (size, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::wire::tests::encoded;

    /// A socket that takes at most 5 bytes a write, across the slices of a vectored one.
    #[derive(Default)]
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            let taken: Vec<u8> = bufs
                .iter()
                .flat_map(|b| b.iter().copied())
                .take(5)
                .collect();
            self.0.extend_from_slice(&taken);
            std::task::Poll::Ready(Ok(taken.len()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_written_a_few_bytes_at_a_time_arrive_whole_as_one_chunk() {
        let frames = vec![
            Bytes::from_static(b"event: snapshot\ndata: {}\n\n"),
            Bytes::new(),
            Bytes::from(vec![b'x'; 300]),
            Bytes::from_static(b": \n\n"),
        ];
        let mut socket = Trickle::default();
        write_chunk(&mut socket, &frames).await.unwrap();
        let body: Vec<u8> = frames.concat();
        let mut expected = format!("{:x}\r\n", body.len()).into_bytes();
        expected.extend_from_slice(&body);
        expected.extend_from_slice(b"\r\n");
        assert_eq!(socket.0, expected);
    }

    #[test]
    fn a_gzip_stream_decodes_to_the_identity_stream_and_checks_out() {
        let (a, b) = (
            Arc::new(encoded("brazil", 4)),
            Arc::new(encoded("state-sp", 5)),
        );
        let pieces = [
            Piece::Retry(3000),
            Piece::Document(a.clone(), Frame::Snapshot),
            Piece::Document(b.clone(), Frame::Snapshot),
            Piece::Heartbeat,
            Piece::Document(a, Frame::Update),
            Piece::Retry(1234),
            Piece::End,
        ];
        let (mut identity, mut gzip) = (Encoder::new(false), Encoder::new(true));
        let plain: Vec<u8> = pieces.iter().flat_map(|p| identity.encode(p)).collect();
        let packed: Vec<u8> = pieces.iter().flat_map(|p| gzip.encode(p)).collect();
        assert!(String::from_utf8_lossy(&plain).ends_with("retry: 1234\n\n"));
        // GzDecoder checks the trailer's CRC-32 and length.
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert_eq!(out, plain);
    }

    #[test]
    fn an_empty_gzip_stream_is_still_whole() {
        let packed = Encoder::new(true).encode(&Piece::End);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
