//! The accepting socket: every connection gets a write timeout, so a client that stops reading
//! is dropped instead of holding its buffers and its task forever.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::metrics::Metrics;

/// Default of `--write-timeout`: a phone on a bad mobile link stalls for seconds, not half a
/// minute; a socket that accepts no byte for 30 s is a client that stopped reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`TcpListener`] whose connections fail a write that makes no progress for `timeout`.
pub struct TimeoutListener {
    inner: TcpListener,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl TimeoutListener {
    pub fn new(inner: TcpListener, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        TimeoutListener {
            inner,
            timeout,
            metrics,
        }
    }
}

impl TimeoutListener {
    /// The next connection, or the error of `accept` (out of files, most likely, when it is
    /// not a client that gave up before it was accepted: see [`is_transient`]).
    pub async fn accept(&mut self) -> io::Result<(TimeoutStream, std::net::SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        // Without it, a small write waits for the acknowledgement of the one before (Nagle):
        // the second change of a cycle on a WebSocket following several topics would wait a
        // round trip, and up to the client's delayed-ACK timer (40 ms on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let io = TimeoutStream {
            inner: stream,
            timeout: self.timeout,
            deadline: None,
            timed_out: false,
            metrics: self.metrics.clone(),
        };
        Ok((io, addr))
    }

    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accept error that only means a client gave up before it was accepted.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A [`TcpStream`] whose writes fail with `TimedOut` after `timeout` without progress. The
/// timer exists only while a write is blocked: an idle or a reading connection costs nothing.
pub struct TimeoutStream {
    inner: TcpStream,
    timeout: Duration,
    deadline: Option<Blocked>,
    /// A write timed out: the connection is dead, every later write fails at once.
    timed_out: bool,
    metrics: Arc<Metrics>,
}

/// A write that made no progress, counted in `apura_blocked_writes` while it lasts, and its
/// deadline.
pub struct Blocked {
    deadline: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
}

impl Blocked {
    pub fn new(timeout: Duration, metrics: &Arc<Metrics>) -> Self {
        metrics.blocked_writes.fetch_add(1, Relaxed);
        Blocked {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            metrics: metrics.clone(),
        }
    }

    /// Whether the write has now waited its whole timeout (counted in
    /// `apura_write_timeouts_total`), registering `cx` for the deadline otherwise.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let expired = self.deadline.as_mut().poll(cx).is_ready();
        if expired {
            self.metrics.write_timeouts.fetch_add(1, Relaxed);
        }
        expired
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.metrics.blocked_writes.fetch_sub(1, Relaxed);
    }
}

impl TimeoutStream {
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The socket, with the write timeout and the metrics it counts in.
    pub fn into_parts(self) -> (TcpStream, Duration, Arc<Metrics>) {
        (self.inner, self.timeout, self.metrics)
    }

    /// After the inner write returned `Pending`: arm the timer if needed and see if it fired.
    fn blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let (timeout, metrics) = (self.timeout, &self.metrics);
        let blocked = self
            .deadline
            .get_or_insert_with(|| Blocked::new(timeout, metrics));
        if blocked.expired(cx) {
            self.deadline = None;
            self.timed_out = true;
            return Err(timed_out());
        }
        Ok(())
    }

    fn progress<T>(
        &mut self,
        poll: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                self.blocked(cx)?;
                Poll::Pending
            }
            ready => {
                self.deadline = None;
                ready
            }
        }
    }
}

pub fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "client read nothing within the write timeout",
    )
}

impl AsyncRead for TimeoutStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TimeoutStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(poll, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(poll, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(poll, cx)
    }
}
