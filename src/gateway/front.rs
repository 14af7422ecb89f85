//! The front door: the first request of every accepted connection is looked at before hyper
//! sees it. A `GET /events` is served on the bare socket: the response head once, then the
//! shared frame bytes written straight to the socket, so a stream holds no HTTP connection
//! state or buffers for its whole life (hyper keeps 16 KiB or more per connection). Anything
//! else, including a later request on a kept-alive connection, goes to hyper (the router) with
//! the bytes already read put back in front.
//!
//! The stream's body is chunked, as hyper would send it (any HTTP/1.1 client or proxy reads
//! it), each frame one chunk leaving in one vectored write; the connection closes when the
//! stream ends (`Connection: close`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::AppState;
use super::listener::{TimeoutListener, TimeoutStream};
use super::sse::{self, EventsQuery};

/// A request head larger than this goes to hyper, which answers 431.
const HEAD_LIMIT: usize = 8 << 10;
/// A connection that has not sent a whole request head by then is closed.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections handed to hyper and not yet accepted by it.
const QUEUE: usize = 1024;
/// What every response of the gateway carries for browsers on other origins (the router's
/// CORS layer adds the same).
pub const CORS_HEADERS: [(&str, &str); 2] = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "etag"),
];

/// The listener hyper serves: the connections the front door did not keep.
pub struct FrontDoor {
    handed: mpsc::Receiver<(Replay, SocketAddr)>,
    local: SocketAddr,
}

impl FrontDoor {
    /// Accept on `listener` until the returned listener is dropped; streams started here are
    /// tracked by `streams`, so that shutdown can wait for them.
    pub fn start(
        mut listener: TimeoutListener,
        state: AppState,
        streams: TaskTracker,
    ) -> io::Result<FrontDoor> {
        use axum::serve::Listener;
        let local = listener.local_addr()?;
        let (tx, handed) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            loop {
                let (io, addr) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tx, state) = (tx.clone(), state.clone());
                streams.spawn(async move {
                    if let Some(replay) = first_request(io, &state).await {
                        let _ = tx.send((replay, addr)).await;
                    }
                });
            }
        });
        Ok(FrontDoor { handed, local })
    }
}

impl axum::serve::Listener for FrontDoor {
    type Io = Replay;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handed.recv().await {
            Some(conn) => conn,
            // The accept loop only stops once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Read the first request head. Serve it here if it opens an event stream and return `None`;
/// otherwise return the connection for hyper, with what was read.
async fn first_request(mut io: TimeoutStream, state: &AppState) -> Option<Replay> {
    let mut buf = BytesMut::with_capacity(1024);
    let open = loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        let read = tokio::select! {
            _ = state.shutdown.cancelled() => return None,
            read = tokio::time::timeout(HEAD_TIMEOUT, io.read_buf(&mut buf)) => read,
        };
        if !matches!(read, Ok(Ok(n)) if n > 0) {
            return None;
        }
        match look(&buf) {
            Look::More => continue,
            Look::Hyper => {
                return Some(Replay {
                    read: buf.freeze(),
                    io,
                });
            }
            Look::Stream(open) => break open,
        }
    };
    // Nothing of the request is kept for the stream's life.
    drop(buf);
    serve_stream(io, state, open).await;
    None
}

/// What the bytes read so far call for.
enum Look {
    More,
    Hyper,
    Stream(OpenStream),
}

fn look(buf: &[u8]) -> Look {
    const PREFIX: &[u8] = b"GET /events";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] || buf.len() >= HEAD_LIMIT {
        return Look::Hyper;
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Look::More,
        Ok(httparse::Status::Complete(_)) => stream_request(&req).map_or(Look::Hyper, Look::Stream),
        Err(_) => Look::Hyper,
    }
}

/// What a stream request asks for.
struct OpenStream {
    query: EventsQuery,
    last_event_id: Option<String>,
}

/// A plain `GET /events?…` over HTTP/1.1 with a query serde can read; anything unusual (an
/// upgrade, a body, `Expect`, HTTP/1.0, a query it cannot read) is left to hyper and the router.
fn stream_request(req: &httparse::Request) -> Option<OpenStream> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    let query = match target.strip_prefix("/events")? {
        "" => "",
        rest => rest.strip_prefix('?')?,
    };
    let mut last_event_id = None;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "upgrade" | "content-length" | "transfer-encoding" | "expect" => return None,
            "last-event-id" => last_event_id = Some(std::str::from_utf8(h.value).ok()?.into()),
            _ => {}
        }
    }
    let query = serde_urlencoded::from_str(query).ok()?;
    Some(OpenStream {
        query,
        last_event_id,
    })
}

/// Answer a stream request on the bare socket, then send its frames until either side ends.
async fn serve_stream(mut io: TimeoutStream, state: &AppState, req: OpenStream) {
    let since = sse::resume_point(req.last_event_id.as_deref(), &req.query);
    let frames = match sse::open(state, req.query.topics.as_deref().unwrap_or(""), since) {
        Ok(frames) => frames,
        Err(e) => {
            let _ = write_response(&mut io, e.into_response()).await;
            return;
        }
    };
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for (name, value) in sse::HEADERS.iter().chain(&CORS_HEADERS) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(io);
    // The client sends nothing more: reading tells when it has gone.
    let gone = async move {
        let mut b = [0u8; 64];
        while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
    };
    tokio::pin!(gone, frames);
    loop {
        tokio::select! {
            biased;
            _ = &mut gone => return,
            frame = frames.next() => match frame {
                Some(bytes) => {
                    if write_chunk(&mut wr, &bytes).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
        }
    }
    // The last chunk, then the end of the connection.
    if wr.write_all(b"0\r\n\r\n").await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// Write one frame as an HTTP/1.1 chunk: size line, the shared bytes, CRLF, in one vectored
/// write (no copy of the frame).
async fn write_chunk(wr: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut size = [0u8; 18];
    let len = {
        let mut cursor = &mut size[..];
        write!(cursor, "{:x}\r\n", frame.len())?;
        18 - cursor.len()
    };
    let mut chunk = Buf::chain(Buf::chain(&size[..len], frame), &b"\r\n"[..]);
    wr.write_all_buf(&mut chunk).await
}

/// Write a whole response (an error: small) and close the connection.
async fn write_response(io: &mut TimeoutStream, resp: Response) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut head = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let cors = CORS_HEADERS.iter().map(|(n, v)| (*n, v.as_bytes()));
    for (name, value) in headers.chain(cors) {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    io.write_all(&head).await?;
    io.write_all(&body).await?;
    io.shutdown().await
}

/// A connection for hyper: the bytes the front door read, then the socket.
pub struct Replay {
    read: Bytes,
    io: TimeoutStream,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.read.has_remaining() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
