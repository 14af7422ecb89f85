//! The PROXY protocol header (v1 and v2) a TCP load balancer puts in front of a connection.

use std::net::IpAddr;

use super::HEAD_LIMIT;

/// What a PROXY protocol header gave.
#[derive(Debug, PartialEq)]
pub(super) enum Proxy {
    More,
    Invalid,
    /// The header's length, and the client's address (none: the proxy's own connection, a
    /// health check, or an address family without one).
    Done(usize, Option<IpAddr>),
}

/// Parse a PROXY protocol header, version 1 (text) or 2 (binary), at the start of `buf`
/// (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>).
pub(super) fn proxy_header(buf: &[u8]) -> Proxy {
    const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
    const V1: &[u8] = b"PROXY ";
    /// Longest version 1 line, CRLF included.
    const V1_MAX: usize = 107;
    if buf.first() == Some(&b'\r') {
        let n = buf.len().min(12);
        if buf[..n] != V2[..n] {
            return Proxy::Invalid;
        }
        if buf.len() < 16 {
            return Proxy::More;
        }
        let (version_command, family) = (buf[12], buf[13]);
        let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if version_command >> 4 != 2 || len > HEAD_LIMIT {
            return Proxy::Invalid;
        }
        if buf.len() < 16 + len {
            return Proxy::More;
        }
        let body = &buf[16..16 + len];
        let addr = match (version_command & 0xf, family >> 4) {
            // LOCAL: the proxy's own connection.
            (0, _) => None,
            (1, 1) if len >= 12 => Some(IpAddr::from(<[u8; 4]>::try_from(&body[..4]).unwrap())),
            (1, 2) if len >= 36 => Some(IpAddr::from(<[u8; 16]>::try_from(&body[..16]).unwrap())),
            (1, 0 | 3) => None,
            _ => return Proxy::Invalid,
        };
        return Proxy::Done(16 + len, addr);
    }
    let n = buf.len().min(V1.len());
    if buf[..n] != V1[..n] {
        return Proxy::Invalid;
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Proxy::Invalid
        } else {
            Proxy::More
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Proxy::Invalid;
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let addr = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        ["PROXY", "TCP4" | "TCP6", source, _, _, _] => match source.parse::<IpAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => return Proxy::Invalid,
        },
        _ => return Proxy::Invalid,
    };
    Proxy::Done(end + 2, addr)
}
