//! SSE subscribers over a raw HTTP/1.1 connection: write the request, read the head, then
//! parse `event:` / `id:` / `data:` lines, de-chunking on the way when the body is chunked.

use std::sync::Arc;

use crate::delivery::{Event, Failure, scan_published_at, scan_source_time, scan_version};
use crate::freshness::Held;
use crate::http::Dechunk;
use crate::inflate::Gunzip;
use crate::shared::{Shared, Subscriber};
use crate::stats::{Stream, now_us};

/// Incremental SSE parser: fields of the event being read.
#[derive(Debug, Default)]
pub struct Parser {
    snapshot: bool,
    published_at: Option<i64>,
    version: Option<u64>,
    source_time: Option<i64>,
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
                        source_time: self.source_time,
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
                    self.source_time = scan_source_time(v);
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
        let accept_encoding = if shared.compress {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{accept_encoding}\r\n"
        );
        let (s, raw, head) = crate::net::open_stream(sub.source, target, &req).await?;
        let gzip = head.content_encoding.as_deref() == Some("gzip");
        // Asked for gzip and did not get it: the run would not measure what it says.
        if head.status != 200 || gzip != shared.compress {
            return Err(Failure::Handshake);
        }
        Ok((s, raw, head.chunked, started, gzip))
    };
    let Some((mut s, mut raw, chunked, started, gzip)) = shared.handshake(handshake).await else {
        return;
    };
    let connected_us = shared.established(started, sub.topic);
    let mut held = Held::new(shared.classes[sub.topic], sub.topic);
    let mut stop = shared.stop.clone();
    let mut dechunk = Dechunk::default();
    let mut payload: Vec<u8> = Vec::new();
    let mut parser = Parser::default();
    let mut gunzip = gzip.then(Gunzip::default);
    let mut inflated: Vec<u8> = Vec::new();
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
        let text = match gunzip.as_mut() {
            Some(g) => {
                if g.feed(buf, &mut inflated).is_err() {
                    shared.error(|c| c.protocol_errors += 1);
                    break;
                }
                buf.clear();
                &mut inflated
            }
            None => buf,
        };
        parser.parse(text, |ev| {
            shared.event(Stream::Sse, ev, connected_us, received_at, &mut held)
        });
        if chunked && dechunk.done() {
            shared.closed_by_server(Stream::Sse, &stop);
            break;
        }
        let Some(n) = shared
            .read_on(Stream::Sse, &mut s, &mut raw, &mut stop)
            .await
        else {
            break;
        };
        received_at = now_us();
        shared.bytes(n);
    }
    shared.closed();
}

#[cfg(test)]
mod tests {
    use super::*;

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
                    version: None,
                    source_time: None
                },
                Event::Heartbeat,
                Event::Doc {
                    snapshot: false,
                    published_at: Some(20),
                    version: Some(5),
                    source_time: None
                },
            ]
        );
    }
}
