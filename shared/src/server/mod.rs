//! Serving an app on a plain listener, shared by every binary that is not running under Lambda:
//! the accept loop, the clocks that keep a client from holding a connection for free, and
//! graceful shutdown.
//!
//! **Shutdown.** On the shutdown signal the listener stops accepting, requests in flight (streams
//! included) run to their end, and after the grace period whatever is left is cut off so the
//! process can exit: serverless hosts scale in this way all day.
//!
//! **Client timeouts** ([`ServeOptions`], from the settings). Every open connection holds a file
//! descriptor, so none is held for nothing:
//! - **request head**, `API_GATEWAY_HEADER_TIMEOUT_SECS` (default 10 s): a new connection must
//!   deliver its first request head within this time of being accepted, and on a kept-alive
//!   connection a head whose first byte has arrived must be complete within this time of that
//!   byte; otherwise the connection is closed without an answer;
//! - **keep-alive**, `API_GATEWAY_KEEPALIVE_SECS` (default 60 s): a connection with no request in
//!   flight and no byte of the next one is closed this long after its last response ended;
//! - **request body**, `API_GATEWAY_BODY_TIMEOUT_SECS` (default 30 s): a body of which nothing
//!   arrives for this long (measured between pieces, not over the whole body) fails its request:
//!   the handler sees a read error, and its answer is replaced here by a `408` with an
//!   OpenAI-shaped error (`code: request_timeout`, the request id kept); over HTTP/1 the
//!   connection is closed after it.
//!
//! A request whose head and body are in is not timed here: the backend's answer and its relay
//! (streams included) have their own limits upstream.
//!
//! Why not hyper's `header_read_timeout`: in hyper 1.x its clock starts whenever the connection is
//! ready to read a head, which on a kept-alive connection is the moment the previous response
//! ended; it would close every idle connection after the head timeout, and the keep-alive setting
//! could never be longer. It is off, and each connection keeps a clock of its own instead: the
//! socket, the service and the response body only record what the connection waits for and since
//! when (two clock reads per request), and one timer per connection reads that record when it
//! fires. It fires at the earliest deadline it knows of and at least once per the shorter of the
//! head and keep-alive timeouts, so a wait that began since it last looked is still timed from
//! its start. HTTP/2 connections (prior knowledge) are timed the same way, except that frames
//! arriving between requests (pings, window updates) do not start the head clock: there a request
//! begins once its headers are complete.
//!
//! **Accepting.** HTTP/1.1 and HTTP/2 as `axum::serve` serves them (the same hyper-util builder),
//! `TCP_NODELAY` on every connection. When the process is out of file descriptors (`EMFILE`,
//! `ENFILE`) new connections wait in the listen backlog: the loop warns once per shortage, tries
//! again every 50 ms instead of spinning, and says so at `info` once it has caught up with the
//! backlog. Other accept errors are logged at `debug`. At start-up [`raise_open_files_limit`]
//! lifts the soft open-files limit to the hard limit.

mod accept;
mod body;
mod clock;
mod connection;
#[cfg(test)]
mod tests;

use crate::settings::Settings;
use accept::accept_loop;
use axum::Router;
use connection::Shared;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Release;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How a server treats its clients: the drain on shutdown and the three client timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long requests in flight may run after the shutdown signal.
    pub grace: Duration,
    /// How long a client may take to send a request head.
    pub header_timeout: Duration,
    /// How long a request body may stop arriving before the request fails.
    pub body_timeout: Duration,
    /// How long an idle kept-alive connection stays open.
    pub keepalive: Duration,
}

impl ServeOptions {
    /// The settings' shutdown grace and client timeouts.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            grace: settings.shutdown_grace,
            header_timeout: settings.header_timeout,
            body_timeout: settings.body_timeout,
            keepalive: settings.keepalive,
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::from_settings(&Settings::default())
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then drain for at most `options.grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let shared = Arc::new(Shared::new(app, options));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = Stop {
        shared: shared.clone(),
        tx: stop_tx,
    };
    let mut server = tokio::spawn(accept_loop(listener, shared, stop_rx));
    tokio::select! {
        finished = &mut server => return finished.map_err(io::Error::other),
        () = shutdown => {}
    }
    tracing::info!(
        grace_secs = options.grace.as_secs_f64(),
        "shutting down: no new connections, draining requests in flight"
    );
    stop.send();
    match tokio::time::timeout(options.grace, &mut server).await {
        Ok(finished) => finished.map_err(io::Error::other),
        Err(_) => {
            tracing::warn!("grace period over: closing the connections still open");
            // The loop owns every connection task: dropping it aborts them all.
            server.abort();
            let _ = server.await;
            Ok(())
        }
    }
}

/// The shutdown signal to the accept loop and the connections; sent when dropped too, so that a
/// server whose `serve` future is dropped drains rather than serving on.
struct Stop {
    shared: Arc<Shared>,
    tx: watch::Sender<bool>,
}

impl Stop {
    fn send(&self) {
        self.shared.stopping.store(true, Release);
        let _ = self.tx.send(true);
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.send();
    }
}

/// Raise the soft open-files limit to the hard limit (a listener holds one descriptor per open
/// connection, and soft limits are often 1,024 where the hard limit allows far more).
pub fn raise_open_files_limit() {
    #[cfg(unix)]
    {
        let before = rlimit::Resource::NOFILE.get().ok();
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) if before.is_some_and(|(soft, _)| soft >= limit) => {
                tracing::debug!(soft = limit, "open-files limit already at the hard limit");
            }
            Ok(limit) => tracing::debug!(
                soft = limit,
                was = before.map(|(soft, _)| soft),
                "open-files limit raised to the hard limit"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                soft = before.map(|(soft, _)| soft),
                "cannot raise the open-files limit: keeping the soft limit"
            ),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
