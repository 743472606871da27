//! The accept loop and the life of each connection.
//!
//! A hand-written loop on top of hyper, rather than a framework's `serve`,
//! gives the simulator the control its failure modes need: a service error
//! closes a connection without a response byte (`drop`), a body error aborts
//! it mid-stream (`drop_mid_stream`), and hyper drops a request's future
//! when its client disconnects, which is how cancellations are counted.
//! Shutdown is graceful: stop accepting, let in-flight answers finish for a
//! while, then cut what is left.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::handler;
use crate::shared::{Lifecycle, Shared};

/// How long in-flight answers may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long aborted connections get to wind down.
const ABORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves `listener` until `stop` completes, then shuts down gracefully.
pub(crate) async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // Every connection task holds a sender; `recv` returns None once all are gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let connection = serve_connection(
                        stream,
                        builder.clone(),
                        shared.clone(),
                        shared.lifecycle.subscribe(),
                        alive.clone(),
                    );
                    tokio::spawn(connection);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    drop(alive);
    shared.lifecycle.send_replace(Lifecycle::Draining);
    if tokio::time::timeout(DRAIN_TIMEOUT, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!("connections still busy after {DRAIN_TIMEOUT:?}; aborting them");
        shared.lifecycle.send_replace(Lifecycle::Aborting);
        let _closed = tokio::time::timeout(ABORT_TIMEOUT, all_closed.recv())
            .await
            .is_ok();
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    mut lifecycle: watch::Receiver<Lifecycle>,
    _alive: mpsc::Sender<()>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set");
    }
    let service = service_fn(move |request| handler::handle(shared.clone(), request));
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = lifecycle.changed() => {
                let state = *lifecycle.borrow_and_update();
                if changed.is_err() || state == Lifecycle::Aborting {
                    return;
                }
                if state == Lifecycle::Draining && !draining {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
