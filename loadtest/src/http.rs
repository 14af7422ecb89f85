//! A small HTTP/1.1 client over a raw `TcpStream`: response heads, `Content-Length` and chunked
//! bodies, and one-shot fetches.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Largest response head we accept.
const MAX_HEAD: usize = 16 << 10;
/// Read granularity: one mayor document (~2 KB) and its frame fit in one read.
pub const READ_CHUNK: usize = 4 << 10;

/// The parts of a response head we use.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    pub etag: Option<String>,
    pub close: bool,
    /// `Content-Encoding`, lowercased.
    pub content_encoding: Option<String>,
    /// `Sec-WebSocket-Extensions`, lowercased.
    pub ws_extensions: Option<String>,
}

/// Read more bytes into `buf`, at least [`READ_CHUNK`] of room; `Ok(0)` at end of stream.
pub async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    r.read_buf(buf).await
}

/// Read a response head; the bytes after it stay at the front of `buf`.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> anyhow::Result<Head> {
    loop {
        if let Some(end) = memmem::find(buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            buf.drain(..end + 4);
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            bail!("response head over {MAX_HEAD} bytes");
        }
        if read_more(r, buf).await? == 0 {
            bail!("connection closed before the response head");
        }
    }
}

pub fn parse_head(raw: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(raw).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let (version, status) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let mut head = Head {
        status: status
            .parse()
            .with_context(|| format!("status line {status_line:?}"))?,
        close: version == "HTTP/1.0",
        ..Head::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("content-encoding") {
            head.content_encoding = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            head.ws_extensions = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(head)
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Default)]
pub struct Dechunk {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Done,
}

impl Dechunk {
    /// Decode what `input` holds, appending the payload to `out`; returns the bytes consumed
    /// (the rest is an incomplete size line or chunk end, to be fed again with more bytes).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut pos = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(nl) = memchr::memchr(b'\n', &input[pos..]) else {
                        if input.len() - pos > 1024 {
                            bail!("chunk size line too long");
                        }
                        return Ok(pos);
                    };
                    let line = &input[pos..pos + nl];
                    let hex = line
                        .split(|&b| b == b';' || b == b'\r')
                        .next()
                        .unwrap_or(b"");
                    let hex = std::str::from_utf8(hex).context("chunk size")?.trim();
                    let n = usize::from_str_radix(hex, 16)
                        .with_context(|| format!("chunk size {hex:?}"))?;
                    pos += nl + 1;
                    self.state = if n == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(n)
                    };
                }
                ChunkState::Data(n) => {
                    let take = n.min(input.len() - pos);
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    if take < n {
                        self.state = ChunkState::Data(n - take);
                        return Ok(pos);
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    let rest = &input[pos..];
                    if rest.len() < 2 {
                        if rest == b"\n" {
                            pos += 1;
                            self.state = ChunkState::Size;
                            continue;
                        }
                        return Ok(pos);
                    }
                    match rest {
                        [b'\r', b'\n', ..] => pos += 2,
                        [b'\n', ..] => pos += 1,
                        _ => bail!("chunk not followed by CRLF"),
                    }
                    self.state = ChunkState::Size;
                }
            }
        }
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Read the body that follows `head` (bytes already read are at the front of `buf`; bytes after
/// the body stay there for the next response on the connection).
pub async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head: &Head,
) -> anyhow::Result<Vec<u8>> {
    if head.status == 304 || head.status == 204 {
        return Ok(Vec::new());
    }
    if head.chunked {
        let mut body = Vec::new();
        let mut dechunk = Dechunk::default();
        loop {
            let used = dechunk.feed(buf, &mut body)?;
            buf.drain(..used);
            if dechunk.done() {
                // Trailer section: at least the final CRLF.
                if let Some(end) = memmem::find(buf, b"\r\n") {
                    buf.drain(..end + 2);
                    return Ok(body);
                }
            }
            if read_more(r, buf).await? == 0 {
                bail!("connection closed inside a chunked body");
            }
        }
    }
    match head.content_length {
        Some(n) => {
            while buf.len() < n {
                if read_more(r, buf).await? == 0 {
                    bail!("connection closed inside the body");
                }
            }
            Ok(buf.drain(..n).collect())
        }
        None => {
            while read_more(r, buf).await? > 0 {}
            Ok(std::mem::take(buf))
        }
    }
}

/// One GET with `Connection: close`, from 127.0.0.1.
pub async fn fetch(target: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(target),
    )
    .await
    .context("connect timed out")??;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await?;
    let body = read_body(&mut s, &mut buf, &head).await?;
    Ok((head.status, body))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_fields() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: \"7\"\r\nContent-Type: text/event-stream",
        )
        .unwrap();
        assert_eq!(h.status, 200);
        assert!(h.chunked);
        assert_eq!(h.etag.as_deref(), Some("\"7\""));
        assert!(parse_head(b"SSH-2.0 nope").is_err());
    }

    #[test]
    fn dechunk_across_arbitrary_splits() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let mut pending = wire[..split].to_vec();
            let used = d.feed(&pending, &mut out).unwrap();
            pending.drain(..used);
            pending.extend_from_slice(&wire[split..]);
            let used = d.feed(&pending, &mut out).unwrap();
            pending.drain(..used);
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(d.done());
        }
    }
}
