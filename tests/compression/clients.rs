//! The clients of the compression tests: an SSE client over a bare socket that sees the bytes
//! on the wire (chunks, gzip) and decodes them, and Python's `websockets`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

use crate::common::process::python;

/// One SSE stream read from a bare socket.
pub struct RawSse {
    tcp: TcpStream,
    /// The response head.
    pub head: String,
    /// Bytes read after the head, chunked.
    raw: Vec<u8>,
    /// Bytes of the response so far, head included: what the wire carried.
    pub wire: usize,
    /// The body, de-chunked (compressed, for a gzip stream).
    pub body: Vec<u8>,
    /// The last chunk came.
    pub ended: bool,
}

impl RawSse {
    /// `GET <path>` with `Accept-Encoding: <accept>` (none when empty); with `after_get`, on a
    /// connection that first asked for `/healthz` (so hyper serves the stream, not the front
    /// door).
    pub async fn open(addr: SocketAddr, path: &str, accept: &str, after_get: bool) -> RawSse {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut pending = Vec::new();
        if after_get {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .unwrap();
            let (head, rest) = read_head(&mut tcp, Vec::new()).await;
            let len: usize = header(&head, "content-length").unwrap().parse().unwrap();
            pending = rest;
            while pending.len() < len {
                read_more(&mut tcp, &mut pending).await;
            }
            pending.drain(..len);
        }
        let accept = match accept {
            "" => String::new(),
            a => format!("Accept-Encoding: {a}\r\n"),
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{accept}\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (head, raw) = read_head(&mut tcp, pending).await;
        RawSse {
            tcp,
            wire: head.len() + raw.len(),
            head,
            raw,
            body: Vec::new(),
            ended: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.head, name)
    }

    pub fn gzip(&self) -> bool {
        self.header("content-encoding").as_deref() == Some("gzip")
    }

    /// The stream's text so far: the body, inflated for gzip (each piece ends in a sync flush,
    /// so everything received decodes without waiting for more).
    pub fn text(&self) -> String {
        if !self.gzip() {
            return String::from_utf8(self.body.clone()).unwrap();
        }
        if self.body.len() < 10 {
            return String::new();
        }
        let mut out = Vec::with_capacity(self.body.len() * 20 + 1024);
        let mut inflater = flate2::Decompress::new(false);
        let input = &self.body[10..];
        loop {
            let (consumed, produced) = (inflater.total_in() as usize, out.len());
            let status = inflater
                .decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            let done = inflater.total_in() as usize == input.len() && out.len() < out.capacity();
            let stuck = inflater.total_in() as usize == consumed && out.len() == produced;
            if done || stuck || status == flate2::Status::StreamEnd {
                break;
            }
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Read until `done(text)` or the stream ends; `false` if neither within `wait`.
    pub async fn until(&mut self, wait: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.dechunk();
            if done(&self.text()) {
                return true;
            }
            if self.ended {
                return false;
            }
            let before = self.raw.len();
            match tokio::time::timeout_at(deadline, read_more(&mut self.tcp, &mut self.raw)).await {
                Err(_) => return false,
                Ok(0) => {
                    self.ended = true;
                }
                Ok(_) => self.wire += self.raw.len() - before,
            }
        }
    }

    /// Read until the server ends the stream (its last chunk).
    pub async fn until_end(&mut self, wait: Duration) -> bool {
        self.until(wait, |_| false).await;
        self.ended
    }

    /// Move whole chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line]).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if self.raw.len() < line + 2 + size + 2 {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line + 2..line + 2 + size]);
            self.raw.drain(..line + 2 + size + 2);
            if size == 0 {
                self.ended = true;
                return;
            }
        }
    }

    /// The events of the stream so far: (event, id, data) of every block with data.
    pub fn events(&self) -> Vec<(String, u64, String)> {
        events(&self.text())
    }
}

/// The (event, id, data) of every SSE block with `data:` in `text`.
pub fn events(text: &str) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut event, mut id, mut data) = (String::new(), 0, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(v.to_string());
            }
        }
        if let Some(data) = data {
            out.push((event, id, data));
        }
    }
    out
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

async fn read_more(tcp: &mut TcpStream, into: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 16 << 10];
    let n = tcp.read(&mut buf).await.unwrap_or(0);
    into.extend_from_slice(&buf[..n]);
    n
}

/// Read a response head: the head, and what was read after it.
async fn read_head(tcp: &mut TcpStream, mut buf: Vec<u8>) -> (String, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8(buf).unwrap(), rest);
        }
        let n = tokio::time::timeout_at(deadline, read_more(tcp, &mut buf))
            .await
            .expect("a response head within 10 s");
        assert!(n > 0, "connection closed before a response head");
    }
}

/// `tests/clients/ws_python.py <args>`, its stdout read line by line.
pub struct PythonWs {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PythonWs {
    pub fn spawn(args: &[&str]) -> PythonWs {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ws_python.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        PythonWs { child, lines }
    }

    /// The next line as JSON; `None` once the script has ended or after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<serde_json::Value> {
        let line = tokio::time::timeout(wait, self.lines.next_line())
            .await
            .ok()?
            .ok()??;
        Some(serde_json::from_str(&line).unwrap())
    }

    /// Whether the script exited cleanly (a missing `websockets` module fails here).
    pub async fn succeeded(mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_ok_and(|s| s.is_ok_and(|s| s.success()))
    }
}
