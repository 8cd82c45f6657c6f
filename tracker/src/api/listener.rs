//! The TCP listener the HTTP servers accept on: at most `http.max_connections` open
//! connections, each closed after `http.idle_timeout_ms` without a byte either way.
//!
//! The cap is a semaphore permit taken *before* `accept` and held by the connection's
//! stream until it is dropped. At capacity the server simply stops accepting, so further
//! clients wait in the kernel's backlog (and see a slow connect, not an error), and the
//! tracker's file descriptors and memory stay bounded however many clients arrive.
//!
//! axum's server gives hyper no timer, so hyper has no header-read or keep-alive timeout of
//! its own; without the idle timeout, a client that connects and says nothing would hold a
//! permit forever, and `max_connections` such clients would shut the API. The idle timeout
//! is longer than the request timeout (validated), so a request still being answered is
//! never cut off: the handler answers or times out, and writing that answer is activity.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A [`TcpListener`] that holds one permit per open connection.
#[derive(Debug)]
pub struct CappedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl CappedListener {
    pub fn new(inner: TcpListener, max_connections: usize, idle_timeout: Duration) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            idle_timeout,
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            // The semaphore lives in `self` and nothing closes it.
            Err(_) => unreachable!("the connection semaphore is never closed"),
        };
        // axum's listener logs and retries accept errors (e.g. EMFILE) itself.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let stream = CappedStream {
            stream,
            _permit: permit,
            idle_timeout: self.idle_timeout,
            last_activity: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection: the stream, its permit, and its idle clock.
#[derive(Debug)]
pub struct CappedStream {
    stream: TcpStream,
    /// Released when the connection is dropped, letting the listener accept another.
    _permit: OwnedSemaphorePermit,
    idle_timeout: Duration,
    /// Updated on every read or write that made progress: cheaper than resetting the timer
    /// each time. The timer is re-armed from it only when it fires.
    last_activity: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl CappedStream {
    /// Ready with an error once the connection has been idle for `idle_timeout`; otherwise
    /// pending, with the timer registered to wake this task.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last_activity + self.idle_timeout;
            if Instant::now() >= due {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for longer than http.idle_timeout_ms",
                ));
            }
            // There was activity since the timer was set: wait for the rest of the period.
            self.deadline.as_mut().reset(due);
        }
    }

    /// What one poll of the stream comes to. Any answer, data or error, is activity and
    /// restarts the idle clock; waiting counts as idle time, in either direction: a client
    /// that stops reading our answer is as idle as one that sends nothing.
    fn track<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.last_activity = Instant::now();
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.track(cx, poll)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.track(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.track(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
