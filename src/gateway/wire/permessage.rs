//! WebSocket permessage-deflate (RFC 7692): the negotiation, and the inflating of the messages a
//! client compressed.
//!
//! Every message this server sends is compressed on its own (`server_no_context_takeover`), so
//! that one compressed copy of a document version serves every connection; it asks the same of
//! clients (`client_no_context_takeover`, which a server may add to its answer, §7.1.1.1), so a
//! client message is inflated with a fresh state and a connection keeps no compression state.
//!
//! tungstenite, which runs the protocol, refuses frames with RSV1. [`Inbound`] sits between it
//! and the socket: it takes each compressed message from the client's frames, inflates it (at
//! most the largest message allowed, plus one byte) and hands tungstenite the message as plain
//! frames, which tungstenite then checks as it checks any other (size, UTF-8, fragments).
//! Everything else passes through unchanged.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ws::FRAGMENT;

/// The extension's name in `Sec-WebSocket-Extensions`.
const NAME: &str = "permessage-deflate";
/// What ends every compressed message before its last four bytes are removed (§7.2.1).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The only window this server compresses with: a client that asks for a smaller one is not
/// offered the extension.
const WINDOW_BITS: u8 = 15;

/// The answer to a client's `Sec-WebSocket-Extensions` (every value of the header, as sent):
/// the first permessage-deflate offer this server can honour, accepted; `None` when there is
/// none (the connection goes on without compression).
pub fn negotiate<'a>(offers: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    offers
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .find_map(accept)
}

/// Accept one offer, or `None` if it is not permessage-deflate or asks for what this server does
/// not do: a server window under 15 bits, an unknown or repeated parameter, an invalid value.
fn accept(offer: &str) -> Option<String> {
    let mut params = offer.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut server_window = false;
    for param in params.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = value.map(|v| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b)));
        match (name.as_str(), bits) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(Some(WINDOW_BITS))) => server_window = true,
            // Any window the client compresses with inflates with a 15-bit one.
            ("client_max_window_bits", None | Some(Some(_))) => {}
            _ => return None,
        }
        seen.push(name);
    }
    let mut answer = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    if server_window {
        answer.push_str(&format!("; server_max_window_bits={WINDOW_BITS}"));
    }
    Some(answer)
}

/// A message compressed on its own (deflate pieces that need nothing before them), as
/// permessage-deflate sends it (§7.2.1): it must end as a sync flush does, an empty stored
/// block, less the block's last four bytes (`00 00 ff ff`), which the client adds back before
/// inflating. `flushed`: the pieces already end in a sync flush, whose last four bytes are
/// removed; otherwise (they end in a stored block) the empty block's first byte is added.
/// Clients that keep one inflater for every message (Chromium) need the block whole: without
/// it they read the next message as the rest of a stored block.
pub fn message(deflated: Bytes, flushed: bool) -> Bytes {
    if flushed {
        debug_assert!(deflated.ends_with(&TAIL));
        return deflated.slice(..deflated.len() - TAIL.len());
    }
    let mut b = BytesMut::with_capacity(deflated.len() + 1);
    b.extend_from_slice(&deflated);
    // BFINAL 0, BTYPE 00 (stored), padded to the byte.
    b.put_u8(0);
    b.freeze()
}

/// A client message inflated: `Err` if it is not valid deflate data; more than `limit` bytes are
/// never produced (the result is then `limit + 1` bytes long, and refused as too big).
fn inflate(mut compressed: BytesMut, limit: usize) -> io::Result<Vec<u8>> {
    compressed.extend_from_slice(&TAIL);
    let mut inflater = Decompress::new(false);
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit + 1));
    loop {
        let (before_in, before_out) = (inflater.total_in(), out.len());
        let input = &compressed[before_in as usize..];
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let consumed = inflater.total_in() as usize == compressed.len();
        if out.len() > limit || status == Status::StreamEnd {
            out.truncate(limit + 1);
            return Ok(out);
        }
        if consumed && out.len() < out.capacity() {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            out.reserve_exact(out.capacity().min(limit + 1 - out.len()));
        } else if inflater.total_in() == before_in && out.len() == before_out {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated"));
        }
    }
}

/// The socket of a WebSocket, as tungstenite reads it: client messages compressed with
/// permessage-deflate are handed over inflated. Writes pass through.
pub struct Inbound<IO> {
    io: IO,
    /// permessage-deflate was negotiated; without it every byte passes through.
    deflate: bool,
    /// Largest message, inflated.
    limit: usize,
    /// Read from the socket, not parsed yet.
    raw: BytesMut,
    /// Ready for tungstenite.
    ready: BytesMut,
    /// The compressed message being assembled from its frames: its opcode and payload.
    message: Option<(u8, BytesMut)>,
    /// The client broke the protocol: everything passes through, for tungstenite to refuse.
    broken: bool,
    /// Bytes of an oversized compressed frame still to drop, and its opcode: once they are,
    /// the message is refused as too big (the Close then follows the client's last byte).
    skip: u64,
    skipped: u8,
    eof: bool,
    /// How fast the client's bytes are read, when bounded (see [`Inbound::with_read_rate`]).
    rate: Option<ReadRate>,
}

/// A token bucket of bytes read from a client: `rate` a second, holding `burst`. Empty, the
/// next read waits until it holds a byte again; the client's sends then wait in TCP.
struct ReadRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: std::time::Instant,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReadRate {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(pause) = &mut self.pause {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            let now = std::time::Instant::now();
            let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last = now;
            if self.tokens > 0.0 {
                return Poll::Ready(());
            }
            let wait = (1.0 - self.tokens) / self.rate;
            let wait = std::time::Duration::from_secs_f64(wait.min(60.0));
            self.pause = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }

    fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }
}

/// What one step of parsing did.
enum Step {
    /// A frame was handled.
    Done,
    /// More bytes are needed.
    More,
}

impl<IO> Inbound<IO> {
    pub fn new(io: IO, deflate: bool, limit: usize) -> Self {
        Inbound {
            io,
            deflate,
            limit,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            message: None,
            broken: false,
            skip: 0,
            skipped: 0,
            eof: false,
            rate: None,
        }
    }

    /// Read the client's bytes at most `per_second` a second on average, with bursts of
    /// `burst_seconds`' worth: what bounds the frames a client can make the gateway parse,
    /// which the message rate does not (empty continuation frames of one message that never
    /// ends: one connection sending them kept 93 % of a core busy). A client within its message
    /// rate at the largest message size is never slowed.
    pub fn with_read_rate(mut self, per_second: u64, burst_seconds: u64) -> Self {
        let rate = per_second.max(1) as f64;
        let burst = rate * burst_seconds.max(1) as f64;
        self.rate = Some(ReadRate {
            rate,
            burst,
            tokens: burst,
            last: std::time::Instant::now(),
            pause: None,
        });
        self
    }

    /// Handle the first frame in `raw`, if it is whole.
    fn step(&mut self) -> Step {
        let raw = &self.raw;
        if raw.len() < 2 {
            return Step::More;
        }
        let (b0, b1) = (raw[0], raw[1]);
        let (fin, rsv1, rsv23, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x30, b0 & 0x0f);
        let masked = b1 & 0x80 != 0;
        let size_bytes = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let head = 2 + size_bytes + if masked { 4 } else { 0 };
        if raw.len() < head {
            return Step::More;
        }
        let len = match size_bytes {
            0 => u64::from(b1 & 0x7f),
            2 => u64::from(u16::from_be_bytes([raw[2], raw[3]])),
            _ => u64::from_be_bytes(raw[2..10].try_into().expect("8 bytes")),
        };
        let compressed = rsv1 && matches!(opcode, 1 | 2) && self.message.is_none();
        let continued = opcode == 0 && !rsv1 && self.message.is_some();
        let control = opcode & 0x8 != 0;
        // Compressed data is never much larger than the message (deflate adds a few bytes
        // per block at worst).
        let bound = self.limit as u64 + 1024;
        if (compressed || continued) && len > bound {
            // Larger than any message, compressed: refused as too big (1009), and its bytes
            // dropped as they come, so that the client's Close is still read.
            self.raw.advance(head);
            self.skip = len;
            self.skipped = self.message.take().map_or(opcode, |(opcode, _)| opcode);
            return Step::Done;
        }
        if !masked || rsv23 != 0 || (rsv1 && !compressed) || len > bound {
            // Not for this layer to judge: tungstenite refuses it (an unmasked or oversized
            // frame, unknown bits), and the connection ends.
            return self.pass_the_rest(rsv1 && !compressed && !control);
        }
        if !control && !compressed && !continued && self.message.is_some() {
            // A new message before the compressed one ended.
            return self.pass_the_rest(true);
        }
        let whole = head + len as usize;
        if self.raw.len() < whole {
            return Step::More;
        }
        let mut frame = self.raw.split_to(whole);
        if !compressed && !continued {
            // A control frame or an uncompressed message: as it came.
            self.ready.extend_from_slice(&frame);
            return Step::Done;
        }
        let key: [u8; 4] = frame[head - 4..head].try_into().expect("4 bytes");
        frame.advance(head);
        for (i, b) in frame.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        let (opcode, mut payload) = match self.message.take() {
            Some((opcode, mut payload)) => {
                payload.extend_from_slice(&frame);
                (opcode, payload)
            }
            None => (opcode, frame),
        };
        if payload.len() as u64 > bound {
            self.emit_too_big(opcode);
            return Step::Done;
        }
        if !fin {
            self.message = Some((opcode, payload));
            return Step::Done;
        }
        match inflate(std::mem::take(&mut payload), self.limit) {
            Ok(message) => self.emit(opcode, &message),
            // Invalid compressed data: a frame tungstenite refuses as a protocol error.
            Err(_) => self.emit_invalid(),
        }
        Step::Done
    }

    /// From here on, hand every byte over as it comes; with `invalid`, first a frame that
    /// tungstenite refuses as a protocol error (the bytes as sent would look valid to it).
    fn pass_the_rest(&mut self, invalid: bool) -> Step {
        if invalid {
            self.emit_invalid();
        }
        self.broken = true;
        let raw = self.raw.split();
        self.ready.extend_from_slice(&raw);
        Step::Done
    }

    /// A message one byte over the limit: tungstenite refuses it as too big.
    fn emit_too_big(&mut self, opcode: u8) {
        let over = vec![b' '; self.limit + 1];
        self.emit(opcode, &over);
    }

    /// An empty text frame with RSV2 set: no extension here defines it.
    fn emit_invalid(&mut self) {
        self.ready
            .extend_from_slice(&[0x80 | 0x20 | 0x1, 0x80, 0, 0, 0, 0]);
        self.broken = true;
    }

    /// A message as masked frames of at most [`FRAGMENT`] bytes, with a zero key (the payload
    /// is its own masking).
    fn emit(&mut self, opcode: u8, message: &[u8]) {
        let mut chunks = message.chunks(FRAGMENT).peekable();
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let fin = chunks.peek().is_none();
            let op = if first { opcode } else { 0 };
            self.ready.put_u8(if fin { 0x80 } else { 0 } | op);
            match chunk.len() {
                n if n < 126 => self.ready.put_u8(0x80 | n as u8),
                n if n <= 0xffff => {
                    self.ready.put_u8(0x80 | 126);
                    self.ready.put_u16(n as u16);
                }
                n => {
                    self.ready.put_u8(0x80 | 127);
                    self.ready.put_u64(n as u64);
                }
            }
            self.ready.put_u32(0);
            self.ready.extend_from_slice(chunk);
            first = false;
            if fin {
                return;
            }
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Inbound<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.deflate {
            if let Some(rate) = &mut this.rate {
                ready!(rate.poll_ready(cx));
            }
            let before = buf.filled().len();
            let read = ready!(Pin::new(&mut this.io).poll_read(cx, buf));
            if let Some(rate) = &mut this.rate {
                rate.spend(buf.filled().len() - before);
            }
            return Poll::Ready(read);
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                if this.ready.is_empty() && this.ready.capacity() > FRAGMENT {
                    this.ready = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.broken && !this.raw.is_empty() {
                let raw = this.raw.split();
                this.ready.extend_from_slice(&raw);
                continue;
            }
            if this.skip > 0 && !this.raw.is_empty() {
                let n = this.raw.len().min(this.skip as usize);
                this.raw.advance(n);
                this.skip -= n as u64;
                if this.skip == 0 {
                    this.emit_too_big(this.skipped);
                }
                continue;
            }
            if !this.broken
                && this.skip == 0
                && let Step::Done = this.step()
            {
                continue;
            }
            if this.eof {
                // What is left is a partial frame: tungstenite sees the connection end in it.
                let raw = this.raw.split();
                this.ready.extend_from_slice(&raw);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if let Some(rate) = &mut this.rate {
                ready!(rate.poll_ready(cx));
            }
            let mut chunk = [0u8; 2048];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if let Some(rate) = &mut this.rate {
                rate.spend(read.filled().len());
            }
            if read.filled().is_empty() {
                this.eof = true;
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Inbound<IO> {
    write_through!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8]) -> Bytes {
        message(Bytes::from(super::super::deflate(data)), true)
    }

    fn offer(v: &str) -> Option<String> {
        negotiate([v.as_bytes()])
    }

    #[test]
    fn offers_are_accepted_with_no_context_takeover_both_ways() {
        let full = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        // What browsers and Python's websockets offer.
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits").as_deref(),
            Some(full)
        );
        assert_eq!(offer("permessage-deflate").as_deref(), Some(full));
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=15").unwrap(),
            format!("{full}; server_max_window_bits=15")
        );
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits=\"10\"").as_deref(),
            Some(full)
        );
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_declined_and_the_next_one_tried() {
        assert_eq!(offer("permessage-deflate; server_max_window_bits=10"), None);
        assert_eq!(offer("permessage-deflate; server_max_window_bits"), None);
        assert_eq!(offer("permessage-deflate; client_max_window_bits=20"), None);
        assert_eq!(offer("permessage-deflate; mystery"), None);
        assert_eq!(
            offer("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            None
        );
        assert_eq!(offer("x-webkit-deflate-frame"), None);
        assert!(
            offer("permessage-deflate; server_max_window_bits=9, permessage-deflate").is_some()
        );
    }

    #[test]
    fn messages_inflate_back_and_bombs_stop_one_byte_past_the_limit() {
        let text = br#"{"type":"subscribe","topics":["brazil","state-sp"]}"#;
        let packed = compress(text);
        assert_eq!(inflate(BytesMut::from(&packed[..]), 1024).unwrap(), text);
        let bomb = compress(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 20_000, "{} bytes", bomb.len());
        assert_eq!(
            inflate(BytesMut::from(&bomb[..]), 16 << 10).unwrap().len(),
            (16 << 10) + 1
        );
        assert!(inflate(BytesMut::from(&[0xff, 0xff, 0xff][..]), 1024).is_err());
    }
}
