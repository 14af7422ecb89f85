//! SSE subscribers over a raw HTTP/1.1 connection: write the request, read the head, then
//! parse `event:` / `id:` / `data:` lines, de-chunking on the way when the body is chunked.

use std::sync::Arc;
use std::sync::LazyLock;

use memchr::memmem;

use crate::get::{Dechunk, READ_CHUNK, read_head, read_more};
use crate::stats::{Stream, now_us};
use crate::worker::{Shared, Subscriber};

static PUBLISHED_AT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"published_at\":"));
static VERSION: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"version\":"));

/// The number after the first `finder` match.
fn scan_number(doc: &[u8], finder: &memmem::Finder<'_>) -> Option<i64> {
    let at = finder.find(doc)? + finder.needle().len();
    let rest = &doc[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let digits = &rest[start..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The first `version` number of a document or message: the publication cycle (apura's
/// WebSocket wrapper repeats the document's version first).
pub fn scan_version(doc: &[u8]) -> Option<u64> {
    scan_number(doc, &VERSION).and_then(|v| u64::try_from(v).ok())
}

/// The `published_at` number of a JSON document, found by scanning the bytes (cheaper than
/// parsing a whole document per delivery; every document carries the field once at top level,
/// before any nested object that could carry another).
pub fn scan_published_at(doc: &[u8]) -> Option<i64> {
    scan_number(doc, &PUBLISHED_AT)
}

/// One parsed SSE event.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A `data:` event: whether its `event:` field said `snapshot`, its `published_at` and
    /// `version`.
    Doc {
        snapshot: bool,
        published_at: Option<i64>,
        version: Option<u64>,
    },
    /// A comment-only block (`:` lines): the gateway's heartbeat.
    Heartbeat,
}

/// Incremental SSE parser: fields of the event being read.
#[derive(Debug, Default)]
pub struct Parser {
    snapshot: bool,
    published_at: Option<i64>,
    version: Option<u64>,
    has_data: bool,
    comment: bool,
}

impl Parser {
    /// Parse every complete line of `buf`, removing them; a partial line stays.
    pub fn parse(&mut self, buf: &mut Vec<u8>, mut on: impl FnMut(Event)) {
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
            let mut line = &buf[pos..pos + nl];
            pos += nl + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data {
                    on(Event::Doc {
                        snapshot: self.snapshot,
                        published_at: self.published_at,
                        version: self.version,
                    });
                } else if self.comment {
                    on(Event::Heartbeat);
                }
                *self = Parser::default();
            } else if line[0] == b':' {
                self.comment = true;
            } else if let Some(v) = line.strip_prefix(b"event:") {
                self.snapshot = v.trim_ascii() == b"snapshot";
            } else if let Some(v) = line.strip_prefix(b"data:") {
                self.has_data = true;
                if self.published_at.is_none() {
                    self.published_at = scan_published_at(v);
                    self.version = scan_version(v);
                }
            }
        }
        buf.drain(..pos);
    }
}

/// One SSE subscriber: connect, subscribe to `topic`, read until stopped.
pub async fn subscriber(shared: Arc<Shared>, sub: Subscriber) {
    let path = shared
        .sse_path
        .replace("{topic}", &shared.topics[sub.topic]);
    let target = shared.target;
    let handshake = async {
        let started = now_us();
        let mut s = crate::net::connect_from(sub.source, target)
            .await
            .map_err(|_| Failure::Connect)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        );
        use tokio::io::AsyncWriteExt;
        s.write_all(req.as_bytes())
            .await
            .map_err(|_| Failure::Handshake)?;
        let mut raw = Vec::with_capacity(READ_CHUNK);
        let head = read_head(&mut s, &mut raw)
            .await
            .map_err(|_| Failure::Handshake)?;
        if head.status != 200 {
            return Err(Failure::Handshake);
        }
        Ok((s, raw, head.chunked, started))
    };
    let (mut s, mut raw, chunked, started) =
        match tokio::time::timeout(shared.handshake_timeout, handshake).await {
            Ok(Ok(x)) => x,
            Ok(Err(f)) => return shared.failed(f),
            Err(_) => return shared.failed(Failure::Connect),
        };
    let connected_us = shared.established(started);
    let mut stop = shared.stop.clone();
    let mut dechunk = Dechunk::default();
    let mut payload: Vec<u8> = Vec::new();
    let mut parser = Parser::default();
    let mut received_at = connected_us;
    loop {
        // Bytes that came with the head are parsed before the first read.
        let buf = if chunked {
            match dechunk.feed(&raw, &mut payload) {
                Ok(used) => {
                    raw.drain(..used);
                }
                Err(_) => {
                    shared.error(|c| c.protocol_errors += 1);
                    break;
                }
            }
            &mut payload
        } else {
            &mut raw
        };
        parser.parse(buf, |ev| {
            shared.event(Stream::Sse, ev, connected_us, received_at)
        });
        if chunked && dechunk.done() {
            shared.closed_by_server(Stream::Sse, &stop);
            break;
        }
        let n = tokio::select! {
            biased;
            _ = stop.changed() => break,
            n = read_more(&mut s, &mut raw) => n,
        };
        received_at = now_us();
        match n {
            Ok(0) => {
                shared.closed_by_server(Stream::Sse, &stop);
                break;
            }
            Ok(n) => shared.bytes(n),
            Err(_) => {
                if !*stop.borrow() {
                    shared.broken(Stream::Sse);
                }
                break;
            }
        }
    }
    shared.closed();
}

/// Why a subscriber did not get its stream.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    Connect,
    Handshake,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_at_is_scanned() {
        assert_eq!(
            scan_published_at(br#"{"version":5,"published_at":1795629793012,"topic":"x"}"#),
            Some(1_795_629_793_012)
        );
        assert_eq!(scan_published_at(br#"{"published_at": 42}"#), Some(42));
        assert_eq!(scan_published_at(br#"{"version":5}"#), None);
    }

    #[test]
    fn events_snapshots_updates_heartbeats() {
        let mut p = Parser::default();
        let mut got = Vec::new();
        let mut buf = b"retry: 3000\n\nevent: snapshot\nid: 4\ndata: {\"published_at\":10}\n\n:\n\nevent: upd"
            .to_vec();
        p.parse(&mut buf, |e| got.push(e));
        assert_eq!(buf, b"event: upd");
        buf.extend_from_slice(b"ate\r\nid: 5\r\ndata: {\"version\":5,\"published_at\":20}\r\n\r\n");
        p.parse(&mut buf, |e| got.push(e));
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                Event::Doc {
                    snapshot: true,
                    published_at: Some(10),
                    version: None
                },
                Event::Heartbeat,
                Event::Doc {
                    snapshot: false,
                    published_at: Some(20),
                    version: Some(5)
                },
            ]
        );
    }
}
