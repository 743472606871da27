//! One connection's life: what every connection of a server shares, the task that serves a
//! connection until it ends, its clock closes it or shutdown drains it, and the socket that tells
//! the clock when bytes arrive (and tells HTTP/1 from HTTP/2 by the first bytes).

use super::ServeOptions;
use super::body::Serve;
use super::clock::{Clock, Quiet, Verdict};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Acquire};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// What every connection of one server shares.
pub(super) struct Shared {
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    pub(super) header_timeout: Duration,
    body_timeout: Duration,
    pub(super) keepalive: Duration,
    /// The longest a connection's watchdog sleeps: the shorter of the head and keep-alive
    /// timeouts (see [`Clock::verdict`]).
    pub(super) look_every: Duration,
    /// Set before the shutdown signal is sent (see [`Quiet`]).
    pub(super) stopping: AtomicBool,
}

impl Shared {
    pub(super) fn new(app: Router, options: ServeOptions) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Off: its clock would also time the wait for the next request (see the module doc in
        // `mod.rs`).
        builder.http1().header_read_timeout(None);
        // What `axum::serve` enables (HTTP/2 websockets); kept so the protocol surface is the same.
        builder.http2().enable_connect_protocol();
        Self {
            // Routes become `Route`s once, here (what `into_make_service` does), and every
            // connection serves a clone of this router: an `Arc`. Serving the `Router` as a
            // make-service instead would rebuild its route table for every connection (axum
            // re-applies the state), which costs about 9 KiB per open stream and the CPU to build
            // it.
            router: app.with_state(()),
            builder,
            header_timeout: options.header_timeout,
            body_timeout: options.body_timeout,
            keepalive: options.keepalive,
            look_every: options.header_timeout.min(options.keepalive),
            stopping: AtomicBool::new(false),
        }
    }
}

/// One connection's life: served until it ends, its clock runs out, or shutdown drains it.
pub(super) async fn connection(
    tcp: TcpStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let clock = Arc::new(Clock::new(shared.body_timeout));
    let io = TokioIo::new(Socket {
        tcp,
        clock: clock.clone(),
        protocol: Protocol::Sniffing(0),
    });
    let service = Serve {
        router: shared.router.clone(),
        clock: clock.clone(),
    };
    let served = shared.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let watchdog = Quiet::new(
        tokio::time::sleep_until(clock.opened + shared.look_every),
        Sleep::is_elapsed,
    );
    tokio::pin!(watchdog);
    let stopping = Quiet::new(stop.wait_for(|stop| *stop), |_| {
        shared.stopping.load(Acquire)
    });
    tokio::pin!(stopping);
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            finished = served.as_mut() => {
                if let Err(e) = finished {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = watchdog.as_mut() => match clock.verdict(Instant::now(), &shared) {
                Verdict::Keep(until) => watchdog.as_mut().inner().reset(until),
                Verdict::Close(why) => {
                    tracing::debug!("closing the connection: {why}");
                    return;
                }
            },
            _ = stopping.as_mut(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Which protocol a connection speaks, from its first bytes.
enum Protocol {
    /// How many bytes of the HTTP/2 preface matched so far.
    Sniffing(u8),
    Http1,
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The client's socket, telling the clock when bytes arrive.
struct Socket {
    tcp: TcpStream,
    clock: Arc<Clock>,
    protocol: Protocol,
}

impl Socket {
    fn arrived(&mut self, bytes: &[u8]) {
        match self.protocol {
            Protocol::Http1 => self.clock.bytes_arrived(),
            Protocol::Http2 => {}
            Protocol::Sniffing(matched) => {
                // The first request's head is timed from the accept anyway; only the protocol is
                // settled here.
                let rest = &H2_PREFACE[usize::from(matched)..];
                let n = bytes.len().min(rest.len());
                self.protocol = if bytes[..n] != rest[..n] {
                    Protocol::Http1
                } else if n == rest.len() {
                    Protocol::Http2
                } else {
                    Protocol::Sniffing(matched + n as u8)
                };
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.arrived(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
