//! Accepting connections: the loop that gives each one a task of its own and drains them all on
//! shutdown, and what it does when the process is out of file descriptors (see the module doc of
//! [`super`], "Accepting").

use super::connection::{Shared, connection};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long the accept loop waits before trying again after a failed accept that is not the
/// client's doing (out of descriptors, mostly).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accept until `stop`, then wait for every connection to end (the caller bounds the wait and
/// aborts this task, which aborts the connections, when the grace period is over).
pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut shortage: Option<Shortage> = None;
    loop {
        let accepted = match &mut shortage {
            // Connections were accepted again since the shortage began: it is over once the
            // backlog is empty, checked without waiting (after a yield, so that the task's
            // cooperative budget, whose exhaustion would also read as "empty", is fresh).
            Some(s) if s.accepted => {
                // Under steady load the backlog may never empty: keep heeding shutdown and
                // reaping finished connections meanwhile.
                if *stop.borrow() {
                    break;
                }
                while connections.try_join_next().is_some() {}
                tokio::task::yield_now().await;
                match listener.poll_accept(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(accepted) => accepted,
                    Poll::Pending => {
                        s.over();
                        shortage = None;
                        continue;
                    }
                }
            }
            _ => tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            },
        };
        match accepted {
            Ok((tcp, _peer)) => {
                if let Some(s) = &mut shortage {
                    s.accepted = true;
                }
                connections.spawn(connection(tcp, shared.clone(), stop.clone()));
            }
            Err(e) if out_of_descriptors(&e) => {
                match &mut shortage {
                    Some(s) => s.refused += 1,
                    None => shortage = Some(Shortage::begin(&e)),
                }
                if pause(&mut stop).await {
                    break;
                }
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "accept failed: the connection was gone");
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                if pause(&mut stop).await {
                    break;
                }
            }
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Wait [`ACCEPT_BACKOFF`]; true if the server is stopping.
async fn pause(stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(ACCEPT_BACKOFF) => false,
        _ = stop.wait_for(|stop| *stop) => true,
    }
}

/// A run of accepts refused for want of descriptors: logged when it begins and when it ends.
struct Shortage {
    began: Instant,
    refused: u64,
    /// Whether a connection was accepted since it began.
    accepted: bool,
}

impl Shortage {
    fn begin(e: &io::Error) -> Self {
        #[cfg(unix)]
        let limit = rlimit::Resource::NOFILE.get().ok().map(|(soft, _)| soft);
        #[cfg(not(unix))]
        let limit: Option<u64> = None;
        tracing::warn!(
            error = %e,
            open_files_limit = limit,
            "out of file descriptors: new connections wait in the listen backlog until some close \
             (retrying every 50 ms; raise the open-files limit or lower the client timeouts)"
        );
        Self {
            began: Instant::now(),
            refused: 1,
            accepted: false,
        }
    }

    fn over(&self) {
        tracing::info!(
            refused = self.refused,
            lasted_ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX),
            "file descriptors available again: accepting connections"
        );
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Errors that concern one connection only (the client gave up before it was accepted).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}
