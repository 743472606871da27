//! One request's path across an application's endpoints: order them, skip the busy ones, call,
//! and fail over until an endpoint answers.
//!
//! 1. [`routing::order`] gives the order to try endpoints in (the application's strategy).
//! 2. An endpoint whose circuit is open, or whose RPM budget is spent, is skipped; its remaining
//!    wait is noted.
//! 3. Otherwise it is called. An answer (success or a client error such as a content-filter 400)
//!    ends the search. A 429 opens the endpoint's circuit for the backend's wait (or the default
//!    wait; never longer than the maximum wait), notes it, and moves on; connection errors, timeouts and 5xx move on too.
//! 4. When every endpoint was skipped or failed: if any was busy, the client gets a 429 with the
//!    shortest wait (a throttled endpoint is worth retrying, whatever else failed); otherwise a
//!    502 naming each endpoint's failure.
//!
//! Failover can only happen here, before any byte of an answer reaches the client: once an
//! answer is returned, its body is relayed as is and a backend failure ends it.

use crate::metrics::Outcome;
use crate::routing::{self, EndpointView};
use crate::state::AppRoute;
use crate::throttle::{InFlight, Shared, now_ms};
use crate::upstream::{self, Attempt, Failure, Outbound};
use bytes::Bytes;
use http::HeaderValue;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The answer that ended the search.
#[derive(Debug)]
pub struct Forwarded {
    pub response: reqwest::Response,
    /// Index of the endpoint that answered.
    pub endpoint: usize,
    /// Holds the endpoint's in-flight count until the answer's body is relayed.
    pub in_flight: InFlight,
    /// When the answering attempt started.
    pub started: std::time::Instant,
    /// Time spent waiting on backends, all attempts together (up to the answer's headers).
    pub upstream: Duration,
}

/// Why no endpoint answered.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("all backend endpoints are busy; retry after {retry_after_secs} seconds")]
    AllBusy { retry_after_secs: u64 },
    #[error("no backend endpoint could serve the request ({})", describe(.failures))]
    AllFailed { failures: Vec<(Arc<str>, Failure)> },
}

fn describe(failures: &[(Arc<str>, Failure)]) -> String {
    failures
        .iter()
        .map(|(id, f)| format!("{id}: {f}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How long a 429 keeps an endpoint off.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// For a 429 that names no wait (`API_GATEWAY_DEFAULT_RETRY_AFTER_SECS`).
    pub default: Duration,
    /// The most any 429 may ask for (`API_GATEWAY_MAX_RETRY_AFTER_SECS`): a backend naming a
    /// billion seconds must not keep an endpoint off, on every instance, for decades.
    pub max: Duration,
}

impl Waits {
    /// The wait for a 429 that asked for `wait` (or none), in milliseconds.
    pub fn for_429(&self, wait: Option<Duration>) -> u64 {
        let wait = wait.unwrap_or(self.default).min(self.max);
        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Try `route`'s endpoints for one request body.
pub async fn forward(
    route: &AppRoute,
    outbound: &Outbound,
    body: Bytes,
    request_id: &HeaderValue,
    waits: Waits,
    shared: &Shared,
) -> Result<Forwarded, ForwardError> {
    let views: Vec<EndpointView> = route
        .app
        .endpoints
        .iter()
        .zip(&route.endpoints)
        .map(|(ep, live)| EndpointView {
            weight: ep.weight,
            in_flight: live.throttle.in_flight(),
            last_used_ms: live.throttle.last_used_ms(),
        })
        .collect();
    let order = routing::order(route.app.strategy, &views, fastrand::u64(..));

    let mut upstream_time = Duration::ZERO;
    let mut shortest_wait: Option<u64> = None;
    let mut failures = Vec::new();
    let mut note_wait =
        |wait: u64| shortest_wait = Some(shortest_wait.map_or(wait, |w| w.min(wait)));
    for index in order {
        let (endpoint, live) = (&route.app.endpoints[index], &route.endpoints[index]);
        let now = now_ms();
        if let Some(wait) = live.throttle.circuit.wait_ms(now) {
            note_wait(wait);
            continue;
        }
        if let Err(wait) = live.throttle.admit(shared, now).await {
            tracing::debug!(app = %route.app.id, endpoint = %endpoint.id, wait_ms = wait, "rpm budget spent, skipping");
            note_wait(wait);
            continue;
        }
        let in_flight = live.throttle.begin(now);
        let started = std::time::Instant::now();
        let attempt = tracing::info_span!("upstream", endpoint = %endpoint.id);
        let outcome = upstream::call(&live.client, endpoint, outbound, &body, request_id)
            .instrument(attempt)
            .await;
        upstream_time += started.elapsed();
        match outcome {
            Attempt::Answer(response) => {
                return Ok(Forwarded {
                    response,
                    endpoint: index,
                    in_flight,
                    started,
                    upstream: upstream_time,
                });
            }
            Attempt::Throttled { wait } => {
                live.metrics.count(Outcome::Throttled);
                let wait = waits.for_429(wait);
                let seen = now_ms();
                let until = seen.saturating_add(wait);
                live.throttle.circuit.open_at(until, seen);
                shared.publish_circuit(live.throttle.key.clone(), until, seen);
                tracing::info!(app = %route.app.id, endpoint = %endpoint.id, wait_ms = wait, "endpoint throttled, circuit open");
                note_wait(wait);
            }
            Attempt::Failed(failure) => {
                live.metrics.count(Outcome::Failed);
                tracing::warn!(app = %route.app.id, endpoint = %endpoint.id, %failure, "endpoint failed, failing over");
                failures.push((endpoint.id.clone(), failure));
            }
        }
    }
    match shortest_wait {
        Some(wait) => Err(ForwardError::AllBusy {
            retry_after_secs: routing::retry_after_secs(wait),
        }),
        None => Err(ForwardError::AllFailed { failures }),
    }
}
