//! Serving an app on a plain listener with graceful shutdown, shared by every binary that is not
//! running under Lambda.
//!
//! On the shutdown signal the listener stops accepting, requests in flight (streams included)
//! run to their end, and after the grace period whatever is left is cut off so the process can
//! exit: serverless hosts scale in this way all day.

use axum::Router;
use axum::serve::ListenerExt;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serve `app` on `listener` until `shutdown` resolves, then drain for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    // One service per connection is a clone of the same router (an `Arc`). Serving the `Router`
    // itself would rebuild its route table for every connection (axum re-applies the state), which
    // costs about 9 KiB per open stream and the CPU to build it.
    let server =
        axum::serve(listener, app.into_make_service()).with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        });
    let mut server = tokio::spawn(server.into_future());
    tokio::select! {
        finished = &mut server => return flatten(finished),
        () = shutdown => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new connections, draining requests in flight"
    );
    let _ = stop_tx.send(true);
    match tokio::time::timeout(grace, &mut server).await {
        Ok(finished) => flatten(finished),
        Err(_) => {
            tracing::warn!("grace period over: closing the connections still open");
            server.abort();
            Ok(())
        }
    }
}

fn flatten(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> std::io::Result<()> {
    r.map_err(std::io::Error::other)?
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
