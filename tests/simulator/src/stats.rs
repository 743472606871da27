//! Counters that let a test see what the backend went through.
//!
//! The gateway's tests assert on things a client cannot observe directly: that
//! a retry really reached the backend, that a cancelled client made the
//! gateway abandon its upstream stream. Each counter is a relaxed atomic so
//! the hot path never locks; [`Stats`] is the serialisable snapshot.
//!
//! Requests to the control endpoints (`/_sim/*`, `/healthz`) are not counted,
//! so polling the stats never disturbs them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// A snapshot of the simulator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Model requests received (including ones answered 401/404).
    pub requests: u64,
    /// Model requests not finished yet (a stream counts until its body ends).
    pub in_flight: u64,
    /// Answers with status 200.
    pub status_200: u64,
    /// Answers with status 400 (bad JSON, content filter, ...).
    pub status_400: u64,
    /// Answers with status 401 (api key).
    pub status_401: u64,
    /// Answers with status 404 (unknown path).
    pub status_404: u64,
    /// Answers with status 429 (throttle mode, schedule, budgets).
    pub status_429: u64,
    /// Answers with any other 4xx status.
    pub status_other_4xx: u64,
    /// Answers with a 5xx status.
    pub status_5xx: u64,
    /// Connections closed on purpose: `drop`, `drop_mid_stream`, and `hang`
    /// requests still open when the simulator shut down.
    pub dropped: u64,
    /// Streaming answers begun.
    pub streams_started: u64,
    /// Streams that sent `data: [DONE]`.
    pub streams_completed: u64,
    /// Streams whose client went away before the end.
    pub streams_cancelled: u64,
    /// Requests whose client went away before any response byte (for example
    /// during `hang` or `first_byte_ms`).
    pub cancelled_before_response: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub in_flight: AtomicU64,
    pub status_200: AtomicU64,
    pub status_400: AtomicU64,
    pub status_401: AtomicU64,
    pub status_404: AtomicU64,
    pub status_429: AtomicU64,
    pub status_other_4xx: AtomicU64,
    pub status_5xx: AtomicU64,
    pub dropped: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cancelled: AtomicU64,
    pub cancelled_before_response: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts an answer's status.
    pub fn record_status(&self, status: StatusCode) {
        let counter = match status.as_u16() {
            200 => &self.status_200,
            400 => &self.status_400,
            401 => &self.status_401,
            404 => &self.status_404,
            429 => &self.status_429,
            402..=499 => &self.status_other_4xx,
            500..=599 => &self.status_5xx,
            _ => return,
        };
        bump(counter);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            requests: get(&self.requests),
            in_flight: get(&self.in_flight),
            status_200: get(&self.status_200),
            status_400: get(&self.status_400),
            status_401: get(&self.status_401),
            status_404: get(&self.status_404),
            status_429: get(&self.status_429),
            status_other_4xx: get(&self.status_other_4xx),
            status_5xx: get(&self.status_5xx),
            dropped: get(&self.dropped),
            streams_started: get(&self.streams_started),
            streams_completed: get(&self.streams_completed),
            streams_cancelled: get(&self.streams_cancelled),
            cancelled_before_response: get(&self.cancelled_before_response),
        }
    }

    /// Zeroes every counter except the `in_flight` gauge, which tracks live
    /// requests and would otherwise go negative when they finish.
    pub fn reset(&self) {
        for counter in [
            &self.requests,
            &self.status_200,
            &self.status_400,
            &self.status_401,
            &self.status_404,
            &self.status_429,
            &self.status_other_4xx,
            &self.status_5xx,
            &self.dropped,
            &self.streams_started,
            &self.streams_completed,
            &self.streams_cancelled,
            &self.cancelled_before_response,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Holds the `in_flight` gauge up for as long as it lives; a streaming
/// answer moves it into its body so the stream counts until it ends.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Counters>);

impl InFlight {
    pub fn enter(counters: Arc<Counters>) -> Self {
        bump(&counters.in_flight);
        Self(counters)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts `cancelled_before_response` if dropped before [`Unanswered::settle`]:
/// hyper drops a request's future when its client disconnects, so being
/// dropped unsettled means the client gave up waiting.
pub(crate) struct Unanswered<'a> {
    counters: &'a Counters,
    settled: bool,
}

impl<'a> Unanswered<'a> {
    pub fn new(counters: &'a Counters) -> Self {
        Self {
            counters,
            settled: false,
        }
    }

    /// The request got its answer (or was dropped on purpose).
    pub fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.settled {
            bump(&self.counters.cancelled_before_response);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_land_in_their_buckets() {
        let c = Counters::default();
        for s in [200, 400, 401, 404, 429, 413, 500, 503, 204] {
            c.record_status(StatusCode::from_u16(s).unwrap());
        }
        let s = c.snapshot();
        assert_eq!(
            (
                s.status_200,
                s.status_400,
                s.status_401,
                s.status_404,
                s.status_429
            ),
            (1, 1, 1, 1, 1)
        );
        assert_eq!((s.status_other_4xx, s.status_5xx), (1, 2));
    }

    #[test]
    fn reset_keeps_the_in_flight_gauge() {
        let c = Arc::new(Counters::default());
        let guard = InFlight::enter(c.clone());
        bump(&c.requests);
        c.reset();
        assert_eq!(c.snapshot().requests, 0);
        assert_eq!(c.snapshot().in_flight, 1);
        drop(guard);
        assert_eq!(c.snapshot().in_flight, 0);
    }

    #[test]
    fn unsettled_requests_count_as_cancelled() {
        let c = Counters::default();
        drop(Unanswered::new(&c));
        let mut settled = Unanswered::new(&c);
        settled.settle();
        drop(settled);
        assert_eq!(c.snapshot().cancelled_before_response, 1);
    }
}
