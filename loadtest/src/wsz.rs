//! WebSocket subscribers with permessage-deflate (RFC 7692): tungstenite refuses frames with
//! RSV1 set, so this is a small client of its own over the raw socket: the upgrade offering
//! `permessage-deflate; client_no_context_takeover; server_no_context_takeover`, server frames
//! parsed here, messages with RSV1 inflated on their own (the server keeps no context), pings
//! answered with masked pongs.

use std::cell::RefCell;
use std::sync::Arc;

use anyhow::bail;
use flate2::Decompress;
use tokio::io::AsyncWriteExt;

use crate::delivery::{Event, Failure};
use crate::inflate::inflate_message;
use crate::shared::{Shared, Subscriber};
use crate::stats::{Stream, now_us};

/// Largest message accepted, compressed or not (as the tungstenite path).
const MAX_MESSAGE: usize = 4 << 20;
const OFFER: &str = "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

thread_local! {
    /// One inflater per runtime thread: a message inflates in one synchronous call with a
    /// fresh state, so connections need none of their own.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// One frame from the server, its payload at `payload` in the buffer it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: std::ops::Range<usize>,
}

/// The frame at the start of `buf`, if it is all there.
pub fn parse_frame(buf: &[u8]) -> anyhow::Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        bail!("masked frame from the server");
    }
    if b0 & 0x30 != 0 {
        bail!("RSV2/RSV3 set");
    }
    let (len, at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?), 10),
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if len > MAX_MESSAGE as u64 {
        bail!("frame of {len} bytes");
    }
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        payload: at..end,
    }))
}

/// A masked client frame, FIN set.
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A message being assembled from its frames.
#[derive(Default)]
pub struct Assembler {
    data: Vec<u8>,
    compressed: bool,
    open: bool,
}

impl Assembler {
    /// Add a data frame (text, binary or continuation); the whole message, inflated, once its
    /// last frame is in.
    pub fn frame(&mut self, f: &Frame, payload: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        match (f.opcode, self.open) {
            (1 | 2, false) => {
                self.compressed = f.rsv1;
                self.open = true;
            }
            (0, true) if !f.rsv1 => {}
            _ => bail!("frame opcode {} out of order", f.opcode),
        }
        if self.data.len() + payload.len() > MAX_MESSAGE {
            bail!("message over {MAX_MESSAGE} bytes");
        }
        self.data.extend_from_slice(payload);
        if !f.fin {
            return Ok(None);
        }
        self.open = false;
        let data = std::mem::take(&mut self.data);
        if !self.compressed {
            return Ok(Some(data));
        }
        INFLATER
            .with(|z| inflate_message(&mut z.borrow_mut(), &data))
            .map(Some)
    }
}

/// One WebSocket subscriber with permessage-deflate: connect, subscribe to `topic`, read until
/// stopped.
pub async fn subscriber(shared: Arc<Shared>, sub: Subscriber) {
    let topic = &shared.topics[sub.topic];
    let path = shared.ws_path.replace("{topic}", topic);
    let target = shared.target;
    let handshake = async {
        let started = now_us();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: {OFFER}\r\n\r\n"
        );
        let (mut s, raw, head) = crate::net::open_stream(sub.source, target, &req).await?;
        let deflate = head
            .ws_extensions
            .as_deref()
            .is_some_and(|e| e.contains("permessage-deflate"));
        if head.status != 101 || !deflate {
            return Err(Failure::Handshake);
        }
        if let Some(msg) = &shared.ws_subscribe {
            let frame = client_frame(1, msg.replace("{topic}", topic).as_bytes(), mask());
            s.write_all(&frame).await.map_err(|_| Failure::Handshake)?;
        }
        Ok((s, raw, started))
    };
    let Some((mut s, mut raw, started)) = shared.handshake(handshake).await else {
        return;
    };
    let connected_us = shared.established(started, sub.topic);
    let mut held = crate::freshness::Held::new(shared.classes[sub.topic], sub.topic);
    let mut stop = shared.stop.clone();
    let mut assembler = Assembler::default();
    let mut received_at = connected_us;
    'read: loop {
        let mut pos = 0;
        loop {
            let frame = match parse_frame(&raw[pos..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    shared.error(|c| c.protocol_errors += 1);
                    break 'read;
                }
            };
            let payload = &raw[pos + frame.payload.start..pos + frame.payload.end];
            match frame.opcode {
                0..=2 => {
                    shared.bytes(payload.len());
                    match assembler.frame(&frame, payload) {
                        Ok(Some(text)) => match crate::ws::classify(&text) {
                            Some(ev) => {
                                shared.event(Stream::Ws, ev, connected_us, received_at, &mut held)
                            }
                            None => shared.error(|c| c.server_errors += 1),
                        },
                        Ok(None) => {}
                        Err(_) => {
                            shared.error(|c| c.protocol_errors += 1);
                            break 'read;
                        }
                    }
                }
                8 => {
                    shared.closed_by_server(Stream::Ws, &stop);
                    break 'read;
                }
                9 => {
                    let pong = client_frame(10, payload, mask());
                    shared.event(
                        Stream::Ws,
                        Event::Heartbeat,
                        connected_us,
                        received_at,
                        &mut held,
                    );
                    if s.write_all(&pong).await.is_err() {
                        shared.broken(Stream::Ws, &stop);
                        break 'read;
                    }
                }
                10 => {}
                _ => {
                    shared.error(|c| c.protocol_errors += 1);
                    break 'read;
                }
            }
            pos += frame.payload.end;
        }
        raw.drain(..pos);
        if shared
            .read_on(Stream::Ws, &mut s, &mut raw, &mut stop)
            .await
            .is_none()
        {
            break;
        }
        received_at = now_us();
    }
    shared.closed();
}

fn mask() -> [u8; 4] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inflate::tests::segment;

    /// A server frame as apura writes it: FIN, RSV1 when compressed, unmasked.
    fn server_frame(opcode: u8, rsv1: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn compressed_messages_are_inflated_and_timed() {
        let docs = [
            br#"{"type":"snapshot","topic":"t","version":3,"document":{"version":3,"published_at":7}}"#.to_vec(),
            format!(
                r#"{{"type":"update","topic":"t","version":4,"document":{{"version":4,"published_at":9,"x":"{}"}}}}"#,
                "ab".repeat(40_000)
            )
            .into_bytes(),
        ];
        let mut wire = Vec::new();
        for d in &docs {
            let mut c = segment(d);
            c.truncate(c.len() - 4);
            wire.extend(server_frame(1, true, true, &c));
        }
        wire.extend(server_frame(9, false, true, b"hb"));
        wire.extend(server_frame(
            1,
            false,
            true,
            br#"{"type":"update","version":5,"published_at":11}"#,
        ));
        let (mut a, mut pos, mut got, mut pings) = (Assembler::default(), 0, Vec::new(), 0);
        // Incomplete frames wait for more bytes.
        assert_eq!(parse_frame(&wire[..1]).unwrap(), None);
        assert_eq!(parse_frame(&wire[..5]).unwrap(), None);
        while let Some(f) = parse_frame(&wire[pos..]).unwrap() {
            let payload = &wire[pos + f.payload.start..pos + f.payload.end];
            if f.opcode == 9 {
                pings += 1;
            } else if let Some(text) = a.frame(&f, payload).unwrap() {
                got.push(crate::ws::classify(&text).unwrap());
            }
            pos += f.payload.end;
        }
        assert_eq!(pos, wire.len());
        assert_eq!(pings, 1);
        let at: Vec<_> = got
            .iter()
            .map(|e| match e {
                Event::Doc {
                    snapshot,
                    published_at,
                    version,
                    ..
                } => (*snapshot, *published_at, *version),
                Event::Heartbeat => unreachable!(),
            })
            .collect();
        assert_eq!(
            at,
            vec![
                (true, Some(7), Some(3)),
                (false, Some(9), Some(4)),
                (false, Some(11), Some(5))
            ]
        );
    }

    #[test]
    fn fragmented_compressed_message() {
        let doc = br#"{"type":"update","version":8,"published_at":21}"#;
        let mut c = segment(doc);
        c.truncate(c.len() - 4);
        let (first, rest) = c.split_at(c.len() / 2);
        let mut a = Assembler::default();
        let f1 = parse_frame(&server_frame(1, true, false, first))
            .unwrap()
            .unwrap();
        assert_eq!(a.frame(&f1, first).unwrap(), None);
        let f2 = parse_frame(&server_frame(0, false, true, rest))
            .unwrap()
            .unwrap();
        assert_eq!(a.frame(&f2, rest).unwrap().unwrap(), doc);
    }

    #[test]
    fn client_frames_are_masked() {
        let m = [1, 2, 3, 4];
        let f = client_frame(1, b"hello", m);
        assert_eq!(f[..2], [0x81, 0x85]);
        let unmasked: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect();
        assert_eq!(unmasked, b"hello");
        assert!(
            parse_frame(&f).is_err(),
            "a masked frame is refused from the server"
        );
    }
}
