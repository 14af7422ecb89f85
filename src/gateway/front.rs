//! The front door: every accepted connection is counted (see [`super::admission`]) and its first
//! request head read here, whole, within `--head-timeout`, before hyper sees it. A `GET /events`
//! is served on the bare socket: the response head once, then the shared frame bytes written
//! straight to the socket, so a stream holds no HTTP connection state or buffers for its whole
//! life (hyper keeps 16 KiB or more per connection); a stream of one topic of whole documents
//! is then written by the publisher itself ([`super::direct`]). Anything else goes to hyper (the
//! router) with the bytes already read put back in front; hyper then bounds the wait for each
//! later request (`--idle-timeout` while idle, `--head-timeout` once a head has begun).
//!
//! A plain `GET` or `HEAD` of a document (`/cities.json`, `/brazil.json`, `/cities/….json`,
//! `/states/….json`) is answered here too, on the bare socket, from the version's precomputed
//! head and body (identity or gzip, [`super::wire::get_answer`]), and the connection kept for
//! the next request, under the same idle and head timeouts; the first request that is anything
//! else, or a document this gateway does not hold, goes to hyper with the connection. Through
//! hyper and the router, `wrk` got 0.87× nginx's requests per second for the same file; answered
//! here, 1.02–1.30× (BENCHMARKS.md, "GET of one city document on the bare socket").
//!
//! The stream's body is chunked, as hyper would send it (any HTTP/1.1 client or proxy reads
//! it), each frame one chunk leaving in one vectored write; the connection closes when the
//! stream ends (`Connection: close`).

mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::AppState;
use super::admission::{ClientAddr, Refusal, Ticket};
use super::direct;
use super::listener::{TimeoutListener, TimeoutStream, is_transient};
use super::sse::{self, EventsQuery};
use super::wire::sse as wire;
use proxy::{Proxy, proxy_header};

/// A request head larger than this is refused with 431 (nginx's default allows 8 KiB a line
/// and 32 KiB in all; browsers send well under 8 KiB).
pub const HEAD_LIMIT: usize = 16 << 10;
/// Most header lines in a request head (hyper's own limit): past it, 431.
const MAX_HEADERS: usize = 100;
/// Failing responses in a row (4xx, 503) after which a kept-alive connection is closed: a
/// client pipelining requests that fail gets a few answers, then has to reconnect.
pub const MAX_FAILURES: u64 = 4;
/// Connections refused at the door whose 503 is still being written (each holds a file for
/// at most [`REFUSAL_LINGER`]); past this, a refused connection is closed without an answer.
const MAX_LINGERING: usize = 256;
/// How long a refused connection may take to read its 503.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// After the drain, how long a response still being written may take.
const LAST_RESPONSES: Duration = Duration::from_secs(5);
/// What every response of the gateway carries for browsers on other origins (the router's
/// CORS layer adds the same).
pub const CORS_HEADERS: [(&str, &str); 2] = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "etag"),
];

/// How the door treats connections.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    /// Time for a whole request head, from the connection's accept (first request) or from its
    /// first byte (later requests).
    pub head_timeout: Duration,
    /// Time a kept-alive connection may wait idle for its next request.
    pub idle_timeout: Duration,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the client.
    pub proxy_protocol: bool,
}

/// Accept on `listener` until `stop`; every connection's task is tracked by `tasks`, so that
/// shutdown can wait for them.
pub async fn run(
    mut listener: TimeoutListener,
    state: AppState,
    router: Router,
    door: Door,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut last_complaint: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (io, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                // Out of files, most likely (the reserve used up by something else): close
                // the oldest waiting connection and try again soon.
                if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(error = %e, "accept failed; closing waiting connections");
                    last_complaint = Some(Instant::now());
                }
                state.admission.evict_oldest();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        match state.admission.accept() {
            Ok(ticket) => {
                let (state, router, stop) = (state.clone(), router.clone(), stop.clone());
                tasks.spawn(connection(io, peer, ticket, state, router, door, stop));
            }
            Err(refusal) => refuse(io, refusal, &tasks),
        }
    }
}

/// Answer 503 on a connection that is not taken in, then close it.
fn refuse(mut io: TimeoutStream, refusal: Refusal, tasks: &TaskTracker) {
    static LINGERING: AtomicUsize = AtomicUsize::new(0);
    if LINGERING.fetch_add(1, Relaxed) >= MAX_LINGERING {
        LINGERING.fetch_sub(1, Relaxed);
        return;
    }
    tasks.spawn(async move {
        answer_and_close(&mut io, &[], refusal.error().into_response()).await;
        LINGERING.fetch_sub(1, Relaxed);
    });
}

/// Answer `resp` to the request head the client sends, and close, all within
/// [`REFUSAL_LINGER`]: an HTTP client takes an answer sent before its request for an error,
/// and closing a socket with unread bytes resets the connection, losing the answer.
///
/// Boxed: a refusal is rare, and every connection's task would otherwise keep room for its
/// state (the response, a read buffer, the timer) for the connection's whole life. Awaited in
/// place from the loop that answers documents too, it made each connection's task 3,872 bytes
/// instead of 3,528, SSE and WebSocket streams included (`PHASES=kinds SUBS=19000`: 0.4 KiB
/// more per connection; BENCHMARKS.md, "A kilobyte per connection back").
fn answer_and_close<'a>(
    io: &'a mut TimeoutStream,
    read: &'a [u8],
    resp: Response,
) -> Pin<Box<impl Future<Output = ()> + 'a>> {
    Box::pin(answer_and_close_now(io, read, resp))
}

async fn answer_and_close_now(io: &mut TimeoutStream, read: &[u8], resp: Response) {
    let answer = async {
        let mut head = read.to_vec();
        let mut sink = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_LIMIT {
            let n = io.read(&mut sink).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&sink[..n]);
        }
        write_response(io, resp).await?;
        while io.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
}

/// Why reading a first head ended without one.
enum Stop {
    /// The client closed, the read failed, or the PROXY header was missing or malformed.
    Closed,
    /// The client's address holds its share of the connections (what was read with it).
    Refused(Refusal, BytesMut),
}

/// One connection: its first request head, then the stream it asks for or hyper.
async fn connection(
    mut io: TimeoutStream,
    peer: SocketAddr,
    mut ticket: Ticket,
    state: AppState,
    router: Router,
    door: Door,
    stop: CancellationToken,
) {
    let metrics = state.metrics.clone();
    let deadline = Instant::now() + door.head_timeout;
    ticket.wait();
    let conn = ticket.conn.clone();
    let read = tokio::select! {
        biased;
        _ = conn.evicted() => return,
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep_until(deadline) => {
            metrics.head_timeouts.fetch_add(1, Relaxed);
            return;
        }
        read = read_head(&mut io, &mut ticket, peer.ip(), door.proxy_protocol, &state) => read,
    };
    let (buf, client, look) = match read {
        Ok(head) => head,
        Err(Stop::Closed) => return,
        Err(Stop::Refused(refusal, read)) => {
            answer_and_close(&mut io, &read, refusal.error().into_response()).await;
            return;
        }
    };
    ticket.busy();
    match look {
        Look::Stream(open) => {
            // Nothing of the request is kept for the stream's life.
            drop(buf);
            serve_stream(io, &state, open, client).await;
        }
        Look::TooLarge => {
            metrics.client_errors.fetch_add(1, Relaxed);
            answer_and_close(&mut io, &buf, head_too_large()).await;
        }
        Look::Document(_) => {
            if let Some((io, rest, ticket)) =
                serve_documents(io, buf, ticket, &state, door, &stop).await
            {
                ticket.busy();
                hand_to_hyper(io, rest, ticket, client, &state, router, door, stop).await;
            }
        }
        Look::Hyper | Look::More => {
            hand_to_hyper(io, buf, ticket, client, &state, router, door, stop).await;
        }
    }
}

/// The rest of a connection goes to hyper, `read` (bytes read and not answered) first.
#[allow(clippy::too_many_arguments)]
async fn hand_to_hyper(
    io: TimeoutStream,
    read: BytesMut,
    ticket: Ticket,
    client: IpAddr,
    state: &AppState,
    router: Router,
    door: Door,
    stop: CancellationToken,
) {
    let keep = Arc::new(KeepAlive {
        ticket,
        phase: Mutex::new(Phase::Busy),
    });
    let replay = Replay {
        read: read.freeze(),
        io,
        keep: keep.clone(),
        door,
        timer: None,
    };
    serve_hyper(replay, keep, client, state, router, door, stop).await;
}

/// The answer to a request head over [`HEAD_LIMIT`] bytes or [`MAX_HEADERS`] lines, the first
/// on its connection or a later one: the connection is closed after it.
fn head_too_large() -> Response {
    let body = serde_json::json!({
        "error": "head_too_large",
        "message": format!("request head over {HEAD_LIMIT} bytes or {MAX_HEADERS} headers"),
    });
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        axum::Json(body),
    )
        .into_response()
}

/// Answer document requests on the bare socket while they come (`buf` starts with a whole
/// one), waiting for each next request as hyper would: closed after `--idle-timeout` idle or
/// `--head-timeout` from its first byte, and open to eviction while it waits. The first request
/// that is anything else is returned with the connection, for hyper; `None` when the
/// connection has ended.
async fn serve_documents(
    mut io: TimeoutStream,
    mut buf: BytesMut,
    ticket: Ticket,
    state: &AppState,
    door: Door,
    stop: &CancellationToken,
) -> Option<(TimeoutStream, BytesMut, Ticket)> {
    let metrics = state.metrics.clone();
    let mut out = Vec::with_capacity(4096);
    // When the next request's wait began, and whether its first byte has come: idle until
    // then, a whole head in time after, however its bytes trickle.
    let mut waiting = (Instant::now(), false);
    loop {
        let doc = match look(&buf) {
            Look::Document(d) if state.hub.is_ready() => d,
            Look::More => {
                let idle = buf.is_empty();
                if idle {
                    ticket.wait();
                } else if !waiting.1 {
                    waiting = (Instant::now(), true);
                }
                let deadline = waiting.0
                    + if idle {
                        door.idle_timeout
                    } else {
                        door.head_timeout
                    };
                let conn = ticket.conn.clone();
                if buf.len() == buf.capacity() {
                    buf.reserve(buf.len().max(1024));
                }
                let read = tokio::select! {
                    biased;
                    _ = conn.evicted() => return None,
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep_until(deadline) => {
                        if idle {
                            metrics.idle_timeouts.fetch_add(1, Relaxed);
                        } else {
                            metrics.head_timeouts.fetch_add(1, Relaxed);
                        }
                        return None;
                    }
                    read = io.read_buf(&mut buf) => read,
                };
                if !matches!(read, Ok(n) if n > 0) {
                    return None;
                }
                if buf.len() >= HEAD_LIMIT && matches!(look(&buf), Look::More) {
                    metrics.client_errors.fetch_add(1, Relaxed);
                    answer_and_close(&mut io, &buf, head_too_large()).await;
                    return None;
                }
                continue;
            }
            Look::TooLarge => {
                metrics.client_errors.fetch_add(1, Relaxed);
                answer_and_close(&mut io, &buf, head_too_large()).await;
                return None;
            }
            _ => return Some((io, buf, ticket)),
        };
        let Some(enc) = state.hub.get(&doc.topic) else {
            // Not a document here: the router's answer (404), as for any other request.
            return Some((io, buf, ticket));
        };
        ticket.busy();
        buf.advance(doc.len);
        metrics.get_requests.fetch_add(1, Relaxed);
        let not_modified = doc
            .if_none_match
            .as_deref()
            .is_some_and(|inm| super::http::if_none_match(inm, enc.etag.to_str().unwrap_or("")));
        if not_modified {
            metrics.not_modified.fetch_add(1, Relaxed);
        }
        ticket.conn.failures.store(0, Relaxed);
        out.clear();
        let large = DATE.with_borrow_mut(|d| {
            super::wire::get_answer(&mut out, &enc, doc.gzip, doc.head, not_modified, d.now())
        });
        let written = match large {
            None => io.write_all(&out).await,
            Some(body) => io.write_all_buf(&mut Buf::chain(&out[..], body)).await,
        };
        if written.is_err() {
            return None;
        }
        if out.capacity() > 64 << 10 {
            // A large document's answer is not kept for the connection's life.
            out = Vec::with_capacity(4096);
        }
        waiting = (Instant::now(), false);
    }
}

/// The `date` header's value, formatted once a second per thread.
struct HttpDate {
    second: u64,
    text: String,
}

impl HttpDate {
    fn now(&mut self) -> &str {
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

thread_local! {
    static DATE: std::cell::RefCell<HttpDate> =
        const { std::cell::RefCell::new(HttpDate { second: 0, text: String::new() }) };
}

/// Read until the first request head is whole (after the PROXY header, when one is expected):
/// the bytes read, the client's address, and what the head calls for.
async fn read_head(
    io: &mut TimeoutStream,
    ticket: &mut Ticket,
    peer: IpAddr,
    proxy_protocol: bool,
    state: &AppState,
) -> Result<(BytesMut, IpAddr, Look), Stop> {
    let mut buf = BytesMut::with_capacity(1024);
    let mut client = None;
    if !proxy_protocol {
        ticket
            .claim(peer)
            .map_err(|refusal| Stop::Refused(refusal, BytesMut::new()))?;
        client = Some(peer);
    }
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len());
        }
        if !matches!(io.read_buf(&mut buf).await, Ok(n) if n > 0) {
            return Err(Stop::Closed);
        }
        if client.is_none() {
            match proxy_header(&buf) {
                Proxy::More => continue,
                Proxy::Invalid => {
                    state.metrics.proxy_header_errors.fetch_add(1, Relaxed);
                    return Err(Stop::Closed);
                }
                Proxy::Done(len, addr) => {
                    buf.advance(len);
                    let addr = addr.unwrap_or(peer);
                    if let Err(refusal) = ticket.claim(addr) {
                        return Err(Stop::Refused(refusal, buf));
                    }
                    client = Some(addr);
                }
            }
            if buf.is_empty() {
                continue;
            }
        }
        match look(&buf) {
            Look::More => continue,
            look => return Ok((buf, client.unwrap_or(peer), look)),
        }
    }
}

/// What the bytes read so far call for.
enum Look {
    More,
    Hyper,
    TooLarge,
    Stream(OpenStream),
    Document(DocumentRequest),
}

/// A document request the front door answers itself.
struct DocumentRequest {
    topic: String,
    /// `HEAD`: the answer without its body.
    head: bool,
    /// `Accept-Encoding` allows gzip.
    gzip: bool,
    if_none_match: Option<String>,
    /// Bytes of the request head.
    len: usize,
}

/// A plain `GET` or `HEAD` of a document over HTTP/1.1: one `Host`, no query, no body, no
/// upgrade, no `Expect`, no `Connection: close`, one `If-None-Match` at most, in printable
/// ASCII; anything else is left to hyper and the router, which answer it the same way or as
/// the case needs.
fn document_request(req: &httparse::Request, len: usize) -> Option<DocumentRequest> {
    let head = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let topic = match req.path? {
        "/cities.json" => crate::documents::CITIES_TOPIC.to_string(),
        "/brazil.json" => crate::documents::BRAZIL_TOPIC.to_string(),
        path => {
            let plain = |t: &str| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if let Some(t) = path
                .strip_prefix("/cities/")
                .and_then(|f| f.strip_suffix(".json"))
            {
                let city = ["mayors-", "councillors-", "zones-"]
                    .iter()
                    .any(|p| t.starts_with(p));
                (city && plain(t)).then(|| t.to_string())?
            } else if let Some(uf) = path
                .strip_prefix("/states/")
                .and_then(|f| f.strip_suffix(".json"))
            {
                (uf.len() == 2 && uf.bytes().all(|b| b.is_ascii_lowercase()))
                    .then(|| format!("state-{uf}"))?
            } else {
                return None;
            }
        }
    };
    let mut if_none_match = None;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "upgrade" | "content-length" | "transfer-encoding" | "expect" => return None,
            "host" => hosts += 1,
            "connection"
                if h.value
                    .to_ascii_lowercase()
                    .windows(5)
                    .any(|w| w == b"close") =>
            {
                return None;
            }
            "if-none-match" => {
                let printable = h
                    .value
                    .iter()
                    .all(|b| (0x20..0x7f).contains(b) || *b == b'\t');
                if if_none_match.is_some() || !printable {
                    return None;
                }
                if_none_match = Some(std::str::from_utf8(h.value).ok()?.to_string());
            }
            _ => {}
        }
    }
    if hosts != 1 {
        return None;
    }
    let gzip = accepts_gzip(req);
    Some(DocumentRequest {
        topic,
        head,
        gzip,
        if_none_match,
        len,
    })
}

fn look(buf: &[u8]) -> Look {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= HEAD_LIMIT => Look::TooLarge,
        Ok(httparse::Status::Partial) => Look::More,
        Ok(httparse::Status::Complete(len)) => match stream_request(&req) {
            Some(open) => Look::Stream(open),
            None => document_request(&req, len).map_or(Look::Hyper, Look::Document),
        },
        Err(httparse::Error::TooManyHeaders) => Look::TooLarge,
        // Not HTTP/1: hyper answers 400.
        Err(_) => Look::Hyper,
    }
}

/// What a stream request asks for.
struct OpenStream {
    query: EventsQuery,
    last_event_id: Option<String>,
    /// `Accept-Encoding` allows gzip.
    gzip: bool,
}

/// A plain `GET /events?…` over HTTP/1.1 with one `Host` and a query serde can read; anything
/// unusual (no `Host`, an upgrade, a body, `Expect`, HTTP/1.0, a query it cannot read) is left
/// to hyper and the router.
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
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "upgrade" | "content-length" | "transfer-encoding" | "expect" => return None,
            "host" => hosts += 1,
            "last-event-id" => last_event_id = Some(std::str::from_utf8(h.value).ok()?.into()),
            _ => {}
        }
    }
    if hosts != 1 {
        return None;
    }
    let query = serde_urlencoded::from_str(query).ok()?;
    let gzip = accepts_gzip(req);
    Some(OpenStream {
        query,
        last_event_id,
        gzip,
    })
}

/// Whether the request's `Accept-Encoding` lines, all of them, allow gzip.
fn accepts_gzip(req: &httparse::Request) -> bool {
    super::wire::accepts_gzip(
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
            .map(|h| h.value),
    )
}

/// Answer a stream request on the bare socket, then send its frames until either side ends.
async fn serve_stream(mut io: TimeoutStream, state: &AppState, req: OpenStream, client: IpAddr) {
    let since = sse::resume_point(req.last_event_id.as_deref(), &req.query);
    // A stream of several topics sends the frames that are ready together in one write: the
    // changes of one cycle reach the client at once, in one system call. With one topic a
    // second frame is never ready, and looking for it would cost a poll per frame.
    let several = req.query.topics.as_deref().is_some_and(|t| t.contains(','));
    let form = sse::Form {
        gzip: req.gzip,
        delta: req.query.delta(),
    };
    let admitted = match sse::admit(state, req.query.topics.as_deref().unwrap_or(""), client) {
        Ok(admitted) => admitted,
        Err(e) => {
            let _ = write_response(&mut io, e.into_response()).await;
            return;
        }
    };
    let encoding = req.gzip.then_some(&wire::GZIP);
    let head = wire::response_head(CORS_HEADERS.iter().chain(encoding));
    if io.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // One topic, whole documents: the publisher writes the frames itself.
    if admitted.subs.len() == 1 && !form.delta {
        direct::serve(io, state, admitted, since, form.gzip).await;
        return;
    }
    let frames = sse::frames(state, admitted, since, form);
    let (mut rd, mut wr) = tokio::io::split(io);
    // The client sends nothing more: reading tells when it has gone. One that keeps sending
    // is cut off (see `direct::JUNK_LIMIT`).
    let metrics = state.metrics.clone();
    let gone = async move {
        // Small: it lives in the connection's task for the stream's life (a buffer of the
        // limit's size made every connection's task, whatever it serves, 1 KiB larger). The
        // count is summed over reads.
        let mut b = [0u8; 64];
        let mut junk = 0;
        while let Ok(n @ 1..) = rd.read(&mut b).await {
            junk += n;
            if junk > direct::JUNK_LIMIT {
                metrics.client_errors.fetch_add(1, Relaxed);
                break;
            }
        }
    };
    tokio::pin!(gone, frames);
    // The frames of one chunk, the same vector for every chunk.
    let mut run = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut gone => return,
            frame = frames.next() => match frame {
                Some(bytes) => {
                    run.push(bytes);
                    let ended = several && with_ready(frames.as_mut(), &mut run).await;
                    let written = wire::write_chunk(&mut wr, &run).await;
                    run.clear();
                    if written.is_err() {
                        return;
                    }
                    if ended {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    // The last chunk, then the end of the connection.
    if wr.write_all(wire::LAST_CHUNK).await.is_ok() {
        let _ = wr.shutdown().await;
    }
}

/// Add to `run` every frame ready now, to be written as one chunk (SSE frames, and gzip
/// segments of one stream, follow each other as they are); whether the stream ended. Polled
/// with this task's waker: a frame not ready yet wakes the task as usual.
async fn with_ready(
    mut frames: Pin<&mut impl futures_util::Stream<Item = Bytes>>,
    run: &mut Vec<Bytes>,
) -> bool {
    let mut ended = false;
    std::future::poll_fn(|cx| {
        loop {
            match frames.as_mut().poll_next(cx) {
                Poll::Ready(Some(next)) => run.push(next),
                Poll::Ready(None) => {
                    ended = true;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Ready(()),
            }
        }
    })
    .await;
    ended
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

/// Serve a connection with hyper until it ends, is closed to make room, or the gateway stops.
async fn serve_hyper(
    replay: Replay,
    keep: Arc<KeepAlive>,
    client: IpAddr,
    state: &AppState,
    router: Router,
    door: Door,
    stop: CancellationToken,
) {
    let router = TowerToHyperService::new(router);
    let metrics = state.metrics.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use hyper::service::Service;
            req.extensions_mut().insert(ClientAddr(client));
            keep.busy();
            let response = router.call(req);
            let (keep, metrics) = (keep.clone(), metrics.clone());
            async move {
                let Ok(mut resp) = response.await;
                let status = resp.status();
                let streaming = status == StatusCode::SWITCHING_PROTOCOLS
                    || resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
                let conn = &keep.ticket.conn;
                if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE {
                    if conn.failures.fetch_add(1, Relaxed) + 1 >= MAX_FAILURES {
                        metrics.failing_connections_closed.fetch_add(1, Relaxed);
                        resp.headers_mut()
                            .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    }
                } else {
                    conn.failures.store(0, Relaxed);
                }
                // A stream or an upgraded connection never waits again; any other response makes
                // the connection wait for its next request once its body is written.
                let then = (!streaming).then_some(keep);
                Ok::<_, Infallible>(resp.map(|body| IdleAfter { body, keep: then }))
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own bound on a later request (idle wait and head), behind the door's own.
    // Its buffer bounded too: a later request's head over the limit is answered by the door
    // when it comes to the bare socket; one that comes to hyper gets hyper's own 431, without
    // a body, rather than hyper's default of ~400 KiB held per connection. (Its default limit
    // of header lines is already `MAX_HEADERS`, 100; setting it would put them on the heap.)
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(door.idle_timeout + door.head_timeout)
        .max_buf_size(HEAD_LIMIT.max(8192));
    let conn = builder
        .serve_connection(TokioIo::new(replay), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(LAST_RESPONSES, conn).await;
        }
    }
}

/// Where a kept-alive connection stands.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// A request is being answered, or the connection carries a stream or a WebSocket.
    Busy,
    /// Waiting for the next request since then.
    Idle(Instant),
    /// The next request's head began then.
    Head(Instant),
}

/// A hyper connection's place in admission and where it stands, shared by its socket and its
/// service.
struct KeepAlive {
    ticket: Ticket,
    phase: Mutex<Phase>,
}

impl KeepAlive {
    fn busy(&self) {
        *self.phase.lock().expect("phase poisoned") = Phase::Busy;
        self.ticket.busy();
    }

    fn idle(&self) {
        *self.phase.lock().expect("phase poisoned") = Phase::Idle(Instant::now());
        self.ticket.wait();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().expect("phase poisoned")
    }
}

/// A response body that marks its connection idle once written (hyper drops it then).
struct IdleAfter<B> {
    body: B,
    keep: Option<Arc<KeepAlive>>,
}

impl<B> Drop for IdleAfter<B> {
    fn drop(&mut self) {
        if let Some(keep) = self.keep.take() {
            keep.idle();
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for IdleAfter<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection for hyper: the bytes the front door read, then the socket; a read waiting past
/// the idle or head deadline, or on a connection closed to make room, fails.
pub struct Replay {
    read: Bytes,
    io: TimeoutStream,
    keep: Arc<KeepAlive>,
    door: Door,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Replay {
    /// What an upgraded connection is made of: the bytes read and not yet used, the socket, and
    /// what keeps its place in admission (to be held as long as the connection).
    pub fn into_parts(self) -> (Bytes, TimeoutStream, Box<dyn Send + Sync>) {
        (self.read, self.io, Box::new(self.keep))
    }

    /// After a read that waits: fail it if the connection was closed to make room or waited
    /// too long.
    fn waiting(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.keep.ticket.conn.poll_evicted(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        let (deadline, idle) = match self.keep.phase() {
            Phase::Busy => return Ok(()),
            Phase::Idle(since) => (since + self.door.idle_timeout, true),
            Phase::Head(since) => (since + self.door.head_timeout, false),
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_ready() {
            let metrics = self.io.metrics();
            if idle {
                metrics.idle_timeouts.fetch_add(1, Relaxed);
            } else {
                metrics.head_timeouts.fetch_add(1, Relaxed);
            }
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the idle or head timeout",
            ));
        }
        Ok(())
    }
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
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Pending => {
                self.waiting(cx)?;
                Poll::Pending
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if let Phase::Idle(_) = self.keep.phase() {
                    *self.keep.phase.lock().expect("phase poisoned") = Phase::Head(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for Replay {
    write_through!(io);
}
