//! An OpenAI- and Azure-OpenAI-compatible fake backend.
//!
//! The gateway's integration tests, its benchmarks and its README demo need
//! an upstream that answers like Azure OpenAI — and that can be told to
//! misbehave on cue: throttle with each retry-after dialect, fail with a
//! status, drop connections, stall, stream slowly, run out of quota. This
//! crate is that upstream, usable in-process ([`Simulator`]) or as the
//! `simulator` binary (controlled over HTTP, see `/_sim/*`).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use aigw_simulator::{Behaviour, Mode, SimOptions, Simulator};
//!
//! let sim = Simulator::start(SimOptions::default()).await?;
//! // Point the gateway at sim.url() ...
//! sim.set_behaviour(Behaviour { fail_next: Some(1), ..Behaviour::with_mode(Mode::Throttle) });
//! // ... the next request gets a 429, the one after succeeds.
//! assert_eq!(sim.stats().requests, 0);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod active;
mod behaviour;
mod body;
mod budget;
mod control;
mod embeddings;
mod error_body;
mod handler;
mod incoming;
mod json;
mod reply;
mod request;
mod respond;
mod retry_after;
mod routes;
mod seen;
mod server;
mod shared;
mod sse;
mod stats;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use behaviour::{Behaviour, MAX_DELAY_MS, Mode, RetryAfterHeader};
pub use embeddings::{cosine, embed};
pub use request::CONTENT_FILTER_TRIGGER;
pub use seen::SeenRequest;
pub use stats::Stats;

use shared::Shared;

/// How often [`Simulator::wait_for_stats`] looks at the counters.
const STATS_POLL_INTERVAL: Duration = Duration::from_millis(2);

/// How a simulator is set up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimOptions {
    /// Require this key (`api-key` or `Authorization: Bearer`); none if unset or empty.
    pub api_key: Option<String>,
    /// The behaviour in force from the start.
    pub behaviour: Behaviour,
    /// Shown in replies and the `x-sim-name` header (default `simulator`).
    pub name: Option<String>,
}

/// A simulator serving on `127.0.0.1` in a background task.
///
/// Dropping it stops the server too (gracefully, in the background); call
/// [`Simulator::shutdown`] to wait for that.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Simulator {
    /// Binds `127.0.0.1:0` and serves in a background tokio task.
    pub async fn start(opts: SimOptions) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(&opts);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, shared.clone(), async move {
            // A dropped sender also means stop.
            let _ = stopped.await;
        }));
        Ok(Simulator {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator's name, as shown in replies and `x-sim-name`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Puts `behaviour` in force from the next request on; restarts the
    /// `fail_next` countdown, the `throttle_every` schedule and the budget
    /// windows. Values [`Behaviour::validate`] would reject fall back to
    /// their defaults.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.set_behaviour(behaviour);
    }

    /// The behaviour in force; `fail_next` shows the failures still to come.
    pub fn behaviour(&self) -> Behaviour {
        self.shared.active.load().current_behaviour()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Polls the counters until `done` holds for them, for at most
    /// `timeout`. Returns the satisfying snapshot, or the last one seen.
    ///
    /// Counters change after the client has seen its answer (a stream is
    /// counted cancelled once the server notices the client left), so tests
    /// await them with this rather than reading them once.
    pub async fn wait_for_stats(
        &self,
        timeout: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, Stats> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(stats);
            }
            tokio::time::sleep(STATS_POLL_INTERVAL).await;
        }
    }

    /// The last model requests received (at most 64), oldest first: method, path, query and
    /// content type as the client sent them.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.seen.snapshot()
    }

    /// Zeroes the counters (except the `in_flight` gauge) and forgets the requests seen.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        self.shared.seen.clear();
    }

    /// Stops accepting connections, lets in-flight answers finish (for a
    /// few seconds at most) and waits for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "simulator task failed");
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

/// Serves `listener` until the process ends.
pub async fn serve(listener: TcpListener, opts: SimOptions) -> std::io::Result<()> {
    serve_with_shutdown(listener, opts, std::future::pending()).await
}

/// Serves `listener` until `shutdown` completes, then stops gracefully
/// (in-flight answers get a few seconds to finish).
pub async fn serve_with_shutdown(
    listener: TcpListener,
    opts: SimOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    server::run(listener, Shared::new(&opts), shutdown).await
}
