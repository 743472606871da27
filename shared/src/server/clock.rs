//! The request-head and keep-alive clock of one connection: a record kept by its socket, its
//! service and its request bodies (atomics, two clock reads per request), read by one timer per
//! connection, the watchdog, only when it fires (see the module doc of [`super`] for why hyper's
//! own head timeout is off); and [`Quiet`], which keeps that timer from being polled on every wake.

use super::connection::Shared;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

pin_project_lite::pin_project! {
    /// A future that completes rarely, polled by a task that wakes often (a connection's, several
    /// times per request): after a poll has registered the task's waker, it is polled again only
    /// once `ready` says it may complete (one atomic load) or after [`Quiet::inner`] was used to
    /// change it. Polling a timer or a watch on every wake (budget, waker registration) would
    /// cost more per request than the rest of the connection's clock.
    pub(super) struct Quiet<F, R> {
        #[pin]
        future: F,
        ready: R,
        registered: bool,
    }
}

impl<F, R: Fn(&F) -> bool> Quiet<F, R> {
    pub(super) fn new(future: F, ready: R) -> Self {
        Self {
            future,
            ready,
            registered: false,
        }
    }

    /// The future, to change it (then polled again at the next wake).
    pub(super) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        *this.registered = false;
        this.future
    }
}

impl<F: Future, R: Fn(&F) -> bool> Future for Quiet<F, R> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if *this.registered && !(this.ready)(&this.future) {
            return Poll::Pending;
        }
        let polled = this.future.poll(cx);
        *this.registered = polled.is_pending();
        polled
    }
}

/// What a connection waits for while no request is in flight (the low bit of
/// [`Clock::waiting`]).
const WAIT_HEAD: u64 = 0;
const WAIT_NEXT: u64 = 1;

/// One connection's clock, kept by its socket (bytes arriving), its service (requests beginning
/// and ending) and its request bodies; read by its watchdog only when the watchdog fires.
pub(super) struct Clock {
    pub(super) opened: Instant,
    pub(super) body_timeout: Duration,
    /// Requests begun and not yet answered in full (their response body not yet dropped).
    in_flight: AtomicU32,
    /// While nothing is in flight: the milliseconds since `opened` at which the wait began,
    /// shifted left once, with [`WAIT_HEAD`] or [`WAIT_NEXT`] in the low bit.
    waiting: AtomicU64,
    /// Requests begun: the next request's number.
    begun: AtomicU64,
    /// 1 + the number of the last request whose body stalled; 0 for none.
    pub(super) stalled: AtomicU64,
}

pub(super) enum Verdict {
    Keep(Instant),
    Close(&'static str),
}

impl Clock {
    pub(super) fn new(body_timeout: Duration) -> Self {
        Self {
            opened: Instant::now(),
            body_timeout,
            in_flight: AtomicU32::new(0),
            waiting: AtomicU64::new(WAIT_HEAD),
            begun: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        }
    }

    fn wait_for(&self, what: u64) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX >> 1);
        self.waiting.store((ms << 1) | what, Relaxed);
    }

    /// A request's head is in: returns its number.
    pub(super) fn begin(&self) -> u64 {
        self.in_flight.fetch_add(1, Relaxed);
        self.begun.fetch_add(1, Relaxed)
    }

    /// A request was answered in full (or given up).
    pub(super) fn end(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.wait_for(WAIT_NEXT);
        }
    }

    /// Bytes arrived on an HTTP/1 connection: the first of a request head when it was idle.
    pub(super) fn bytes_arrived(&self) {
        if self.waiting.load(Relaxed) & 1 == WAIT_NEXT && self.in_flight.load(Relaxed) == 0 {
            self.wait_for(WAIT_HEAD);
        }
    }

    pub(super) fn stalled(&self, number: u64) -> bool {
        self.stalled.load(Relaxed) == number + 1
    }

    /// The watchdog fired at `now`: close the connection, or when to look again. The clock is
    /// only read here, so the next look must come before any deadline a later change could set;
    /// a wait that begins after `now` ends at `now + its timeout` at the earliest, so looking
    /// again no later than `now + shared.look_every` misses none.
    pub(super) fn verdict(&self, now: Instant, shared: &Shared) -> Verdict {
        let next_look = now + shared.look_every;
        if self.in_flight.load(Relaxed) > 0 {
            return Verdict::Keep(next_look);
        }
        let waiting = self.waiting.load(Relaxed);
        let since = self.opened + Duration::from_millis(waiting >> 1);
        let (deadline, why) = if waiting & 1 == WAIT_NEXT {
            (since + shared.keepalive, "idle keep-alive connection")
        } else {
            (
                since + shared.header_timeout,
                "the request head did not arrive in time",
            )
        };
        if deadline <= now {
            Verdict::Close(why)
        } else {
            Verdict::Keep(deadline.min(next_look))
        }
    }
}
