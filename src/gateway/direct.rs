//! Streams of one topic, written by the publisher itself: SSE, and WebSockets while they
//! follow one topic (see [`super::ws`]).
//!
//! Most readers follow one city. Their stream needs no ordering across topics (see
//! [`super::ordered`]) and little state per connection: the version last sent and, on a gzip
//! stream (what a browser asks for), the CRC-32 and length of everything sent, which the
//! publisher counts only for what it did write (see [`Sink::offer`]). So the task that applies
//! a cycle writes each new frame straight to their sockets, one non-blocking write each,
//! instead of waking one task per stream to do it. The heartbeat's timer writes their SSE
//! comments the same way ([`Sink::beat`]). The stream's own task wakes only when such a write
//! could not be made whole (a client that reads slowly), for a WebSocket's ping, the drain and
//! the client's going away; it then sends the topic's latest version itself, with the write
//! timeout of every other stream.
//!
//! Measured with 19,000 subscribers (half SSE, half WebSocket) and a change every 5 s, before
//! and after, alternating, 3 runs each: the gateway's CPU per delivery 15.3 → 13.3 µs, the
//! fan-out p99 218 → 198 ms (BENCHMARKS.md, "SSE written by the publisher"); with compressed
//! streams (gzip SSE), 15.8 → 14.1 µs (BENCHMARKS.md, "gzip streams written by the publisher").
//!
//! A WebSocket's socket is shared with tungstenite, which writes the connection's pongs, pings,
//! errors and close: it writes through [`SinkIo`], which takes a write whole or not at all, so
//! that frames of the two writers never interleave. Half SSE, half WebSocket, 4 runs each way:
//! 13.2 → 11.2 µs per delivery; WebSockets only, 15.7 → 11.2 (BENCHMARKS.md, "WebSockets
//! written by the publisher").

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use super::AppState;
use super::hub::{Encoded, Frame};
use super::listener::{Blocked, TimeoutStream, timed_out};
use super::sse::{Admitted, ConnectionGuard};
use super::wire::sse::{self as wire, Encoder, LAST_CHUNK, Piece};
use super::wire::ws as ws_wire;
use super::ws::BUSY_PING_EVERY;
use crate::metrics::{Metrics, StreamForm, StreamKind, Tally};

/// One stream's socket, shared by its task and the publisher; whoever writes holds `state`'s
/// lock for the write (the publisher) or its `busy` flag (the task).
pub struct Sink {
    socket: TcpStream,
    state: Mutex<State>,
    /// The publisher left something to the task.
    wake: Notify,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

struct State {
    /// The version last written, or being written.
    last: u64,
    /// How frames are written: SSE (identity or gzip, and what gzip's trailer needs of
    /// everything written) or WebSocket.
    writer: Writer,
    /// The task is writing: the publisher leaves the stream to it.
    busy: bool,
    /// The rest of a frame written only in part, in pieces (empty: none): whoever writes next
    /// writes it first. The document's piece is a slice of the version's bytes, shared with
    /// every stream: a client that stops reading holds no copy of it.
    rest: Vec<Bytes>,
    /// A change the publisher could not write: the task sends the topic's latest version.
    behind: bool,
    /// A document went out since the last heartbeat.
    wrote: bool,
    /// An SSE heartbeat the socket did not take: the task writes it.
    beat_due: bool,
    /// A WebSocket's heartbeats since its last ping, and a ping its task is to send.
    beats: u32,
    ping_due: bool,
    /// The next document goes as a `snapshot` (the stream's first, when the client holds an
    /// older version than the hub).
    snapshot_due: bool,
    /// The stream is ending or broken: the publisher writes nothing more.
    closed: bool,
    /// The publisher leaves this connection alone: a WebSocket that follows more than one topic
    /// now, or is closing, written by its task alone (see [`Sink::detach`]).
    detached: bool,
}

/// How a stream's frames go on the wire.
#[derive(Clone)]
enum Writer {
    /// SSE in HTTP/1.1 chunks, identity or gzip.
    Sse(Encoder),
    /// Unmasked WebSocket text frames (no permessage-deflate).
    Ws,
}

/// One frame ready to write: a head, the bytes of a version (borrowed from it), a tail.
struct Framed<'a> {
    head: [u8; 18],
    head_len: usize,
    body: Body<'a>,
    tail: &'static [u8],
    form: StreamForm,
    kind: StreamKind,
}

/// A frame's body: a version's bytes, borrowed while the frame is written, so that a delivery
/// costs no count on bytes every publishing thread shares (a stream that takes the frame only
/// in part keeps a shared copy, see [`Framed::rest`]); or a piece of the stream's own.
enum Body<'a> {
    Version(&'a Bytes),
    Own(Bytes),
}

impl Body<'_> {
    fn bytes(&self) -> &Bytes {
        match self {
            Body::Version(bytes) => bytes,
            Body::Own(bytes) => bytes,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }
}

impl Framed<'_> {
    fn len(&self) -> usize {
        self.head_len + self.body.len() + self.tail.len()
    }

    fn slices(&self) -> [IoSlice<'_>; 3] {
        [
            IoSlice::new(&self.head[..self.head_len]),
            IoSlice::new(self.body.bytes()),
            IoSlice::new(self.tail),
        ]
    }

    /// What is left after the first `written` bytes: the head's few bytes copied, the body
    /// and the tail shared.
    fn rest(&self, mut written: usize) -> Vec<Bytes> {
        let head = Bytes::copy_from_slice(&self.head[..self.head_len]);
        let mut rest = Vec::with_capacity(3);
        for piece in [
            head,
            self.body.bytes().clone(),
            Bytes::from_static(self.tail),
        ] {
            if written >= piece.len() {
                written -= piece.len();
            } else {
                rest.push(piece.slice(written..));
                written = 0;
            }
        }
        rest
    }
}

impl Writer {
    /// `enc` as `frame` on this stream, counted by gzip as sent.
    fn framed<'a>(&mut self, enc: &'a Encoded, frame: Frame) -> Framed<'a> {
        match self {
            Writer::Sse(encoder) => {
                let form = encoder.form();
                Writer::chunk(Body::Version(encoder.document(enc, frame)), form)
            }
            Writer::Ws => Writer::ws(enc.ws(frame).as_ref()),
        }
    }

    /// An SSE piece in its HTTP/1.1 chunk.
    fn chunk(body: Body<'_>, form: StreamForm) -> Framed<'_> {
        let (head, head_len) = wire::chunk_size(body.len());
        Framed {
            head,
            head_len,
            body,
            tail: b"\r\n",
            form,
            kind: StreamKind::Sse,
        }
    }

    /// A whole WebSocket text frame.
    fn ws(body: &Bytes) -> Framed<'_> {
        let (short, head_len) = ws_wire::text_head(body.len());
        let mut head = [0u8; 18];
        head[..head_len].copy_from_slice(&short[..head_len]);
        Framed {
            head,
            head_len,
            body: Body::Version(body),
            tail: b"",
            form: StreamForm::Identity,
            kind: StreamKind::Ws,
        }
    }

    /// An SSE heartbeat comment; nothing on a WebSocket, which its task pings.
    fn heartbeat(&mut self) -> Option<Framed<'static>> {
        match self {
            Writer::Sse(encoder) => {
                let form = encoder.form();
                Some(Writer::chunk(
                    Body::Own(encoder.encode(&Piece::Heartbeat)),
                    form,
                ))
            }
            Writer::Ws => None,
        }
    }

    fn encoder(&mut self) -> &mut Encoder {
        match self {
            Writer::Sse(encoder) => encoder,
            Writer::Ws => unreachable!("an SSE stream's encoder"),
        }
    }
}

impl Sink {
    /// A sink on `socket` that has written nothing, open to the publisher.
    fn new(socket: TcpStream, writer: Writer, timeout: Duration, metrics: Arc<Metrics>) -> Sink {
        Sink {
            socket,
            state: Mutex::new(State {
                last: 0,
                writer,
                busy: false,
                rest: Vec::new(),
                behind: false,
                wrote: false,
                beat_due: false,
                beats: 0,
                ping_due: false,
                snapshot_due: false,
                closed: false,
                detached: false,
            }),
            wake: Notify::new(),
            metrics,
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// One non-blocking `sendmsg` of `slices`: what the socket took, or `WouldBlock`.
    ///
    /// `sendmsg` rather than `writev` (what `TcpStream::try_write_vectored` calls): it goes
    /// to the socket without the file layer. With 18,000 loopback connections,
    /// `loadtest/write-floor.py` measured 5.2 µs of system CPU per `sendmsg` against 5.4 per
    /// `writev`, and the gateway's CPU per delivery with 19,000 subscribers went from 9.8 to
    /// 9.0 µs (BENCHMARKS.md, "`sendmsg` instead of `writev`").
    fn send(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        self.socket.try_io(Interest::WRITABLE, || {
            SockRef::from(&self.socket).send_vectored(slices)
        })
    }

    /// The publisher's write: [`Sink::send`] without tokio's readiness check, whose state lives
    /// in an allocation of its own per socket, one more cache miss per delivery. A `WouldBlock`
    /// here hands the stream to its task, whose first write (through [`Sink::send`]) meets it
    /// again and clears the readiness before it waits. With the version's bytes borrowed (see
    /// [`Body`]): 9.5 → 9.1 µs of CPU per delivery with 19,000 subscribers, alternating, 3
    /// runs each (BENCHMARKS.md, "A delivery without tokio's readiness check").
    fn send_now(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        SockRef::from(&self.socket).send_vectored(slices)
    }

    /// Write `enc` (a complete cycle's version of this stream's topic) now if the socket takes
    /// it, else leave it to the stream's task. Never waits.
    pub fn offer(&self, enc: &Encoded, tally: &mut Tally<'_>) {
        let mut st = self.lock();
        if st.closed || st.detached || enc.version <= st.last {
            return;
        }
        if st.busy || st.snapshot_due {
            st.behind = true;
            drop(st);
            self.wake.notify_one();
            return;
        }
        // Put back if nothing is written: gzip's trailer counts only what the client got.
        let before = st.writer.clone();
        let framed = st.writer.framed(enc, Frame::Update);
        let settle = |st: &mut State, written: bool| {
            if written {
                st.last = enc.version;
                st.wrote = true;
            } else {
                st.behind = true;
            }
        };
        if self.write_now(st, &framed, before, settle) {
            tally.delivered(framed.kind, Some(enc.published_at));
            tally.wrote(framed.form, framed.body.len());
        }
    }

    /// Write `framed` now, never waiting, with `st` held: what the socket takes only in part is
    /// kept for the task to finish. When the socket has no room, `before` (the writer as it was)
    /// is put back, since gzip's trailer counts only what the client got, and `settle` marks
    /// what the task is to send instead; it marks a write that went out too. Whether it did.
    fn write_now(
        &self,
        mut st: MutexGuard<'_, State>,
        framed: &Framed<'_>,
        before: Writer,
        settle: impl FnOnce(&mut State, bool),
    ) -> bool {
        match self.send_now(&framed.slices()) {
            Ok(written) => {
                settle(&mut st, true);
                if written < framed.len() {
                    st.rest = framed.rest(written);
                    st.busy = true;
                }
                let handed = st.busy;
                drop(st);
                if handed {
                    self.wake.notify_one();
                }
                true
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    st.writer = before;
                    settle(&mut st, false);
                } else {
                    st.closed = true;
                }
                drop(st);
                self.wake.notify_one();
                false
            }
        }
    }

    /// A heartbeat tick, from the heartbeat's sweep (see [`crate::gateway::Heartbeat`]), never
    /// waiting: an SSE stream sent nothing since the last tick gets a comment, written now if
    /// the socket takes it, else by the task; a WebSocket following one topic has its task
    /// send a ping if it was sent nothing, or every [`BUSY_PING_EVERY`] ticks. `false` once the
    /// stream is closed: the sweep forgets it.
    pub fn beat(&self) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        // A detached WebSocket's task keeps its own beat.
        if st.detached {
            return true;
        }
        let wrote = std::mem::take(&mut st.wrote);
        if let Writer::Ws = st.writer {
            st.beats += 1;
            if !wrote || st.beats >= BUSY_PING_EVERY {
                st.beats = 0;
                st.ping_due = true;
                drop(st);
                self.wake.notify_one();
            }
            return true;
        }
        if wrote {
            return true;
        }
        if st.busy || st.snapshot_due {
            st.beat_due = true;
            drop(st);
            self.wake.notify_one();
            return true;
        }
        let before = st.writer.clone();
        if let Some(framed) = st.writer.heartbeat() {
            if self.write_now(st, &framed, before, |st, written| st.beat_due = !written) {
                self.metrics.wrote(framed.form, framed.body.len());
            }
        }
        true
    }

    /// Whether the heartbeat asked for a ping since the last call (a WebSocket following one
    /// topic, see [`Sink::beat`]).
    pub fn take_ping_due(&self) -> bool {
        std::mem::take(&mut self.lock().ping_due)
    }

    /// Write `pieces` from the task, in vectored writes, waiting for the socket at most the
    /// write timeout without progress. The pieces are shared, not copied: a client that stops
    /// reading holds no copy of a document.
    async fn write_pieces(&self, mut pieces: Vec<Bytes>) -> io::Result<()> {
        let mut blocked: Option<Blocked> = None;
        while !pieces.is_empty() {
            let slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
            match self.send(&slices) {
                Ok(mut n) => {
                    drop(slices);
                    blocked = None;
                    while n > 0 {
                        if n >= pieces[0].len() {
                            n -= pieces.remove(0).len();
                        } else {
                            pieces[0].advance(n);
                            n = 0;
                        }
                    }
                    pieces.retain(|p| !p.is_empty());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let b =
                        blocked.get_or_insert_with(|| Blocked::new(self.timeout, &self.metrics));
                    std::future::poll_fn(|cx| {
                        if b.expired(cx) {
                            return std::task::Poll::Ready(Err(timed_out()));
                        }
                        self.socket.poll_write_ready(cx)
                    })
                    .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn write_framed(&self, framed: &Framed<'_>) -> io::Result<()> {
        self.write_pieces(framed.rest(0)).await
    }

    async fn write_chunk(&self, frame: &[u8]) -> io::Result<()> {
        let (size, n) = wire::chunk_size(frame.len());
        let mut chunk = Vec::with_capacity(n + frame.len() + 2);
        chunk.extend_from_slice(&size[..n]);
        chunk.extend_from_slice(frame);
        chunk.extend_from_slice(b"\r\n");
        self.write_pieces(vec![Bytes::from(chunk)]).await
    }
}

/// The task's side of a stream: its topic's channel (read, never waited on) and the version
/// the hub has completed.
pub struct Stream {
    pub sink: Arc<Sink>,
    pub topic: watch::Receiver<Arc<Encoded>>,
    pub complete: Arc<AtomicU64>,
}

impl Stream {
    /// Write what the publisher left, a heartbeat the socket did not take, and the topic's
    /// latest complete version if this stream has not had it: the task holds the socket until
    /// nothing is left.
    pub async fn flush(&self) -> io::Result<()> {
        let sink = &self.sink;
        {
            let mut st = sink.lock();
            if st.closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            st.busy = true;
        }
        let flushed = async {
            loop {
                let (rest, heartbeat) = {
                    let mut st = sink.lock();
                    st.behind = false;
                    let heartbeat = std::mem::take(&mut st.beat_due)
                        .then(|| st.writer.heartbeat())
                        .flatten();
                    (std::mem::take(&mut st.rest), heartbeat)
                };
                sink.write_pieces(rest).await?;
                if let Some(heartbeat) = heartbeat {
                    sink.write_framed(&heartbeat).await?;
                    sink.metrics.wrote(heartbeat.form, heartbeat.body.len());
                }
                let latest = self.topic.borrow().clone();
                let due = {
                    let mut st = sink.lock();
                    (latest.version > st.last && latest.version <= self.complete.load(Acquire))
                        .then(|| {
                            st.last = latest.version;
                            st.wrote = true;
                            let snapshot = std::mem::take(&mut st.snapshot_due);
                            let frame = if snapshot {
                                Frame::Snapshot
                            } else {
                                Frame::Update
                            };
                            (snapshot, st.writer.framed(&latest, frame))
                        })
                };
                if let Some((snapshot, framed)) = due {
                    sink.write_framed(&framed).await?;
                    sink.metrics
                        .delivered(framed.kind, (!snapshot).then_some(latest.published_at));
                    sink.metrics.wrote(framed.form, framed.body.len());
                }
                let mut st = sink.lock();
                if st.rest.is_empty() && !st.behind && !st.beat_due {
                    st.busy = false;
                    return Ok(());
                }
            }
        }
        .await;
        if flushed.is_err() {
            sink.lock().closed = true;
        }
        flushed
    }
}

/// Serve an admitted stream of one topic after version `since`, gzip-compressed with `gzip`:
/// the response head is already written on `io`.
pub async fn serve(
    io: TimeoutStream,
    state: &AppState,
    admitted: Admitted,
    since: u64,
    gzip: bool,
) {
    let Admitted { mut subs, guard } = admitted;
    let Some((name, topic)) = subs.pop() else {
        return;
    };
    let _guard: ConnectionGuard = guard;
    let (socket, timeout, metrics) = io.into_parts();
    let current = topic.borrow().version;
    let mut sink = Sink::new(socket, Writer::Sse(Encoder::new(gzip)), timeout, metrics);
    {
        let st = sink.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        st.last = since.min(current);
        st.busy = true;
        st.snapshot_due = current > since;
    }
    let sink = Arc::new(sink);
    let stream = Stream {
        sink: sink.clone(),
        topic,
        complete: state.hub.complete(),
    };
    // `retry:` first, with the stream's task holding the socket; the publisher may offer
    // changes as soon as the sink is attached, and leaves them to the task until then.
    let (first, form) = {
        let mut st = sink.lock();
        let retry = Piece::Retry(state.sse_retry.as_millis() as u64);
        let encoder = st.writer.encoder();
        (encoder.encode(&retry), encoder.form())
    };
    if sink.write_chunk(&first).await.is_err() {
        return;
    }
    sink.metrics.wrote(form, first.len());
    state.hub.attach(&name, &sink);
    state.heartbeat.enlist(&sink);
    if stream.flush().await.is_err() {
        return;
    }

    let closing = state.closing();
    tokio::pin!(closing);
    let mut junk = 0;
    loop {
        tokio::select! {
            biased;
            heard = heard(&sink.socket) => match heard {
                Heard::Gone => break,
                Heard::Sent(n) => {
                    junk += n;
                    if junk > JUNK_LIMIT {
                        sink.metrics.client_errors.fetch_add(1, Relaxed);
                        break;
                    }
                }
            },
            _ = &mut closing => {
                farewell(&stream, state).await;
                return;
            }
            _ = sink.wake.notified() => if stream.flush().await.is_err() { break },
        }
    }
    sink.lock().closed = true;
}

/// What [`Sink::put`] made of a write.
enum Put {
    /// All of it is written or kept: nothing is left to the caller.
    Done,
    /// The socket has no room; `progressed` if some of what was kept went out.
    Blocked {
        progressed: bool,
    },
    Failed(io::Error),
}

impl Sink {
    /// A WebSocket's socket: written by its task through [`SinkIo`], and by the publisher
    /// while the connection follows one topic (see [`Sink::follow`]).
    pub fn websocket(socket: TcpStream, timeout: Duration, metrics: Arc<Metrics>) -> Arc<Sink> {
        let mut sink = Sink::new(socket, Writer::Ws, timeout, metrics);
        sink.state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .detached = true;
        Arc::new(sink)
    }

    /// Let the publisher write this connection's topic from now on: the client holds version
    /// `last` of it, and with `snapshot` the task sends the topic's current version first, as a
    /// snapshot. Until the task's next [`Stream::flush`] the publisher leaves changes to it.
    pub fn follow(&self, last: u64, snapshot: bool) {
        let mut st = self.lock();
        st.last = last;
        st.snapshot_due = snapshot;
        st.busy = true;
        st.behind = false;
        st.detached = false;
    }

    /// Shut the publisher out: the version last written (or being written) and whether the
    /// snapshot is still due. Whatever the publisher left half written goes out before the
    /// task's next frame (see [`SinkIo`]).
    pub fn detach(&self) -> (u64, bool) {
        let mut st = self.lock();
        st.detached = true;
        (st.last, st.snapshot_due)
    }

    /// Wait until the publisher leaves something to the task.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Write `buf` whole, after what is left of earlier frames, keeping what the socket does not
    /// take: the publisher never writes a frame into the middle of another.
    fn put(&self, buf: &[u8]) -> Put {
        let mut st = self.lock();
        if st.closed {
            return Put::Failed(io::ErrorKind::BrokenPipe.into());
        }
        let mut progressed = false;
        while let Some(piece) = st.rest.first_mut() {
            match self.send(&[IoSlice::new(piece)]) {
                Ok(n) if n == piece.len() => {
                    st.rest.remove(0);
                    progressed = true;
                }
                Ok(n) => {
                    piece.advance(n);
                    return Put::Blocked { progressed: true };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Put::Blocked { progressed };
                }
                Err(e) => {
                    st.closed = true;
                    return Put::Failed(e);
                }
            }
        }
        if buf.is_empty() {
            return Put::Done;
        }
        match self.send(&[IoSlice::new(buf)]) {
            Ok(n) => {
                if n < buf.len() {
                    // Kept, and the publisher kept out until the task has written it.
                    st.rest = vec![Bytes::copy_from_slice(&buf[n..])];
                    st.busy = true;
                    drop(st);
                    self.wake.notify_one();
                }
                Put::Done
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Put::Blocked { progressed },
            Err(e) => {
                st.closed = true;
                Put::Failed(e)
            }
        }
    }
}

/// A WebSocket's socket as tungstenite sees it, shared with the publisher through its [`Sink`]:
/// the bytes read before the upgrade first, then the socket. A write is taken whole or not at
/// all (what the socket does not take is kept in the sink), so that tungstenite's frames and
/// the publisher's never interleave; the write timeout holds as on every connection.
pub struct SinkIo {
    sink: Arc<Sink>,
    read: Bytes,
    blocked: Option<Blocked>,
    /// What must live as long as the connection (its place in admission).
    _keep: Box<dyn Send + Sync>,
}

impl SinkIo {
    pub fn new(sink: Arc<Sink>, read: Bytes, keep: Box<dyn Send + Sync>) -> Self {
        SinkIo {
            sink,
            read,
            blocked: None,
            _keep: keep,
        }
    }

    fn poll_put(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.sink.put(buf) {
                Put::Done => {
                    self.blocked = None;
                    return Poll::Ready(Ok(buf.len()));
                }
                Put::Failed(e) => return Poll::Ready(Err(e)),
                Put::Blocked { progressed } => {
                    if progressed {
                        self.blocked = None;
                    }
                    let (timeout, metrics) = (self.sink.timeout, &self.sink.metrics);
                    let blocked = self
                        .blocked
                        .get_or_insert_with(|| Blocked::new(timeout, metrics));
                    if blocked.expired(cx) {
                        self.blocked = None;
                        self.sink.lock().closed = true;
                        return Poll::Ready(Err(timed_out()));
                    }
                    ready!(self.sink.socket.poll_write_ready(cx))?;
                }
            }
        }
    }
}

impl AsyncRead for SinkIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.sink.socket.poll_read_ready(cx))?;
            match self.sink.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SinkIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_put(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_put(cx, &[]).map_ok(|_| ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_put(cx, &[]))?;
        let _ = socket2::SockRef::from(&self.sink.socket).shutdown(std::net::Shutdown::Write);
        Poll::Ready(Ok(()))
    }
}

/// Bytes an SSE client may send after its request before its stream is closed, counted in
/// `apura_client_errors_total`. An event stream's client sends nothing more (a stray empty
/// line at most); one that keeps sending would have the stream's task read for it without
/// end: one such client, sending as fast as it could, kept a core of the gateway busy and
/// other clients' requests waiting seconds.
pub(super) const JUNK_LIMIT: usize = 1024;

/// What the client of a stream did.
enum Heard {
    /// It has gone: end of stream or an error.
    Gone,
    /// It sent this many bytes, dropped.
    Sent(usize),
}

/// Wait until the socket is readable, then read what the client sent.
async fn heard(socket: &TcpStream) -> Heard {
    if socket.readable().await.is_err() {
        return Heard::Gone;
    }
    // 64 bytes at a time: the count is summed over reads, 17 of them reach the limit.
    let mut buf = [0u8; 64];
    match socket.try_read(&mut buf) {
        Ok(0) => Heard::Gone,
        Ok(n) => Heard::Sent(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Heard::Sent(0),
        Err(_) => Heard::Gone,
    }
}

/// The end of a stream at the drain: a randomised `retry:`, so that its client comes back at a
/// time of its own, then the last chunk.
async fn farewell(stream: &Stream, state: &AppState) {
    let sink = &stream.sink;
    let drain_ms = state.drain.as_millis().max(1) as u64;
    let retry = Piece::Retry(rand::random_range(1_000..1_000 + 2 * drain_ms));
    // The publisher is shut out from here on; what it left goes first.
    let (rest, retry, end, form) = {
        let mut st = sink.lock();
        st.closed = true;
        let rest = std::mem::take(&mut st.rest);
        let encoder = st.writer.encoder();
        let retry = encoder.encode(&retry);
        // gzip's final block and trailer: the stream ends whole.
        let end = encoder.encode(&Piece::End);
        (rest, retry, end, encoder.form())
    };
    let ended = async {
        sink.write_pieces(rest).await?;
        for piece in [retry, end] {
            if !piece.is_empty() {
                sink.write_chunk(&piece).await?;
                sink.metrics.wrote(form, piece.len());
            }
        }
        sink.write_pieces(vec![Bytes::from_static(LAST_CHUNK)])
            .await
    };
    if ended.await.is_ok() {
        // The end of the connection, as the other streams end theirs.
        let _ = socket2::SockRef::from(&sink.socket).shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::Document;
    use crate::documents::Draft;
    use crate::gateway::hub::Encoded;

    fn encoded(version: u64) -> Encoded {
        let draft = Draft {
            topic: "t".into(),
            body: Bytes::from(format!(r#"{{"topic":"t","n":{version}}}"#)),
        };
        Encoded::new(&Document::stamp(&draft, version, 1000))
    }

    /// A loopback connection: the client's end and the server's.
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        (client, socket)
    }

    /// Fill `socket` while its client reads nothing: the bytes it took.
    fn fill(socket: &TcpStream) -> usize {
        let block = vec![b'x'; 64 << 10];
        let mut filled = 0;
        while let Ok(n) = socket.try_write(&block) {
            filled += n;
        }
        filled
    }

    /// A gzip stream whose socket has no room: the publisher writes nothing, hands the change
    /// to the task, and leaves the trailer's count as it was.
    #[tokio::test]
    async fn a_change_the_socket_has_no_room_for_is_left_to_the_task_and_not_counted() {
        let (_client, socket) = connected().await;
        fill(&socket);
        let mut encoder = Encoder::new(true);
        encoder.encode(&Piece::Retry(1000));
        let crc = |e: &Encoder| e.clone().encode(&Piece::End);
        let before = crc(&encoder);
        let sink = Sink::new(
            socket,
            Writer::Sse(encoder),
            Duration::from_secs(1),
            Arc::default(),
        );
        sink.lock().last = 1;
        sink.offer(&encoded(2), &mut Metrics::default().tally());
        let st = sink.lock();
        assert!(st.behind && st.rest.is_empty() && !st.closed);
        assert_eq!(st.last, 1, "nothing was written");
        let Writer::Sse(encoder) = &st.writer else {
            unreachable!()
        };
        assert_eq!(crc(encoder), before, "the trailer counts nothing more");
    }

    /// A heartbeat the socket has no room for: the sweep writes nothing and counts nothing,
    /// and the task writes it once the client reads again; a stream that had news gets none.
    #[tokio::test]
    async fn a_heartbeat_the_socket_has_no_room_for_is_left_to_the_task() {
        use tokio::io::AsyncReadExt;
        let (mut client, socket) = connected().await;
        let filled = fill(&socket);
        let crc = |sink: &Sink| match &sink.lock().writer {
            Writer::Sse(e) => e.clone().encode(&Piece::End),
            Writer::Ws => unreachable!(),
        };
        let sink = Arc::new(Sink::new(
            socket,
            Writer::Sse(Encoder::new(true)),
            Duration::from_secs(5),
            Arc::default(),
        ));
        let before = crc(&sink);
        sink.lock().wrote = true;
        assert!(sink.beat());
        assert!(
            !sink.lock().beat_due,
            "news since the last tick: no heartbeat"
        );
        assert!(sink.beat());
        assert!(sink.lock().beat_due && !sink.lock().closed);
        assert_eq!(crc(&sink), before, "the trailer counts nothing more");

        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            while got.len() <= filled {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            got.split_off(filled)
        });
        let (_tx, topic) = watch::channel(Arc::new(encoded(0)));
        let stream = Stream {
            sink: sink.clone(),
            topic,
            complete: Arc::default(),
        };
        tokio::time::timeout(Duration::from_secs(5), stream.flush())
            .await
            .expect("the task ends its flush")
            .unwrap();
        assert!(!sink.lock().beat_due);
        assert_ne!(crc(&sink), before, "the heartbeat is counted once written");
        let chunk = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the heartbeat reaches the client")
            .unwrap();
        assert!(chunk.ends_with(b"\r\n") && chunk.len() > 5, "{chunk:?}");
        sink.lock().closed = true;
        assert!(!sink.beat(), "a closed stream leaves the sweep");
    }

    /// A frame the task writes while the publisher's last frame is half written goes after
    /// its rest, never into it.
    #[tokio::test]
    async fn a_frame_from_the_task_waits_for_the_rest_of_the_publishers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, socket) = connected().await;
        let sink = Sink::websocket(socket, Duration::from_secs(10), Arc::default());
        sink.follow(1, false);
        sink.lock().busy = false;
        // 4 MB: more than the socket's buffers take at once.
        let draft = Draft {
            topic: "t".into(),
            body: Bytes::from(format!(r#"{{"pad":"{}"}}"#, "x".repeat(4 << 20))),
        };
        let big = Encoded::new(&Document::stamp(&draft, 2, 1000));
        sink.offer(&big, &mut Metrics::default().tally());
        let message = Bytes::from(big.ws(Frame::Update).clone());
        {
            let st = sink.lock();
            assert!(!st.rest.is_empty(), "the publisher wrote part of it");
            let shared = message.as_ptr_range();
            assert!(
                st.rest.iter().any(|p| shared.contains(&p.as_ptr())),
                "what is left of the document is the shared version's bytes, not a copy"
            );
        }
        let mut io = SinkIo::new(sink.clone(), Bytes::new(), Box::new(()));
        let task = tokio::spawn(async move {
            io.write_all(b"PONG").await.unwrap();
            io.flush().await.unwrap();
        });
        let (head, n) = ws_wire::text_head(message.len());
        let mut want = head[..n].to_vec();
        want.extend_from_slice(&message);
        want.extend_from_slice(b"PONG");
        let mut got = vec![0u8; want.len()];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("everything arrives")
            .unwrap();
        assert!(got == want, "the document whole, then the task's frame");
        task.await.unwrap();
    }
}
