//! The counters the request path adds to: one [`EndpointMetrics`] per application × endpoint,
//! and per application the gateway's own answers ([`AppMetrics`]). Atomics only: no lock, no
//! allocation.

use super::usage::Usage;
use crate::store::{BUCKETS, Counters, Histogram};
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram the request path can add to without locks.
#[derive(Debug, Default)]
struct AtomicHistogram([AtomicU64; BUCKETS]);

impl AtomicHistogram {
    fn observe(&self, ms: u64) {
        self.0[Histogram::bucket_of(ms)].fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> Histogram {
        let mut h = Histogram::default();
        for (slot, a) in h.0.iter_mut().zip(&self.0) {
            *slot = a.swap(0, Ordering::AcqRel);
        }
        h
    }
}

/// How one attempt on an endpoint ended without a relayed body, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Throttled,
    Failed,
    /// A content-filter answer (`"code":"content_filter"`) relayed to the client.
    Filtered,
}

/// How a relayed answer's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Relayed to its end.
    Complete,
    /// Relayed to its end, but the model's output was filtered (`finish_reason: content_filter`).
    Filtered,
    /// The backend failed mid-body (connection error, idle timeout).
    Broken,
    /// The client went away (or the server cut it off at the end of its grace period) before
    /// the end: not the endpoint's failure.
    Cancelled,
}

/// One relayed answer, as the recorder saw it end.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub latency: Duration,
    /// Time to the first piece of a streamed body.
    pub ttft: Option<Duration>,
    /// The tokens the backend reported.
    pub usage: Option<Usage>,
    pub ending: Ending,
}

/// One endpoint's counters on this instance since the last flush.
#[derive(Debug, Default)]
pub struct EndpointMetrics {
    calls: AtomicU64,
    failed: AtomicU64,
    throttled: AtomicU64,
    filtered: AtomicU64,
    cancelled: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    total_tokens: AtomicU64,
    estimated_prompt_tokens: AtomicU64,
    estimated_completion_tokens: AtomicU64,
    latency_ms_sum: AtomicU64,
    latency_count: AtomicU64,
    latency: AtomicHistogram,
    ttft_ms_sum: AtomicU64,
    ttft_count: AtomicU64,
    ttft: AtomicHistogram,
    /// Recorders (relayed bodies) not yet counted, and token counts not yet added: the last
    /// flush at shutdown waits for them.
    open: AtomicU64,
    /// The application's counters of the gateway's own answers.
    app: Arc<AppMetrics>,
}

impl EndpointMetrics {
    pub(super) fn new(app: Arc<AppMetrics>) -> Self {
        Self {
            app,
            ..Self::default()
        }
    }

    /// Count an attempt that ended without a relayed success.
    pub fn count(&self, outcome: Outcome) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Throttled => &self.throttled,
            Outcome::Failed => &self.failed,
            Outcome::Filtered => &self.filtered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a relayed answer: how it ended, its latency (unless the client cut it short), its
    /// time to first token (streams) and, when the body said, its tokens.
    pub fn answered(&self, a: Answered) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match a.ending {
            Ending::Complete => {}
            Ending::Filtered => {
                self.filtered.fetch_add(1, Ordering::Relaxed);
            }
            Ending::Broken => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            Ending::Cancelled => {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
        if a.ending != Ending::Cancelled {
            let ms = a.latency.as_millis() as u64;
            self.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency.observe(ms);
        }
        if let Some(ttft) = a.ttft {
            let ms = ttft.as_millis() as u64;
            self.ttft_ms_sum.fetch_add(ms, Ordering::Relaxed);
            self.ttft_count.fetch_add(1, Ordering::Relaxed);
            self.ttft.observe(ms);
        }
        if let Some(u) = a.usage {
            self.prompt_tokens.fetch_add(u.prompt, Ordering::Relaxed);
            self.completion_tokens
                .fetch_add(u.completion, Ordering::Relaxed);
            self.total_tokens.fetch_add(u.total, Ordering::Relaxed);
        }
    }

    /// Add tokens the gateway counted for a stream that ended without a usage chunk.
    pub fn estimated(&self, prompt: u64, completion: u64) {
        self.estimated_prompt_tokens
            .fetch_add(prompt, Ordering::Relaxed);
        self.estimated_completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }

    /// Count one of the gateway's own answers to a client of this endpoint's application.
    pub fn gateway_answer(&self, status: StatusCode) {
        self.app.count(status);
    }

    pub(super) fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn open(&self) -> u64 {
        self.open.load(Ordering::Acquire)
    }

    /// Whether anything was counted since the last take. Every event but a token estimate
    /// counts a call, so with thousands of idle endpoints this skips most of a flush's work.
    pub(super) fn touched(&self) -> bool {
        self.calls.load(Ordering::Relaxed) != 0
            || self.estimated_prompt_tokens.load(Ordering::Relaxed) != 0
            || self.estimated_completion_tokens.load(Ordering::Relaxed) != 0
    }

    /// Take the counters, leaving zeros.
    pub(super) fn take(&self) -> Counters {
        let t = |a: &AtomicU64| a.swap(0, Ordering::AcqRel);
        Counters {
            calls: t(&self.calls),
            failed: t(&self.failed),
            throttled: t(&self.throttled),
            filtered: t(&self.filtered),
            cancelled: t(&self.cancelled),
            prompt_tokens: t(&self.prompt_tokens),
            completion_tokens: t(&self.completion_tokens),
            total_tokens: t(&self.total_tokens),
            estimated_prompt_tokens: t(&self.estimated_prompt_tokens),
            estimated_completion_tokens: t(&self.estimated_completion_tokens),
            latency_ms_sum: t(&self.latency_ms_sum),
            latency_count: t(&self.latency_count),
            latency: self.latency.take(),
            ttft_ms_sum: t(&self.ttft_ms_sum),
            ttft_count: t(&self.ttft_count),
            ttft: self.ttft.take(),
            ..Counters::default()
        }
    }
}

/// One application's counters of the gateway's own answers: 429 (every endpoint busy), 502 and
/// 504 (no endpoint answered), and any other 4xx (bad request, body too large, operation not
/// served, inactive application, ...).
#[derive(Debug, Default)]
pub struct AppMetrics {
    too_many: AtomicU64,
    bad_gateway: AtomicU64,
    gateway_timeout: AtomicU64,
    client_error: AtomicU64,
}

impl AppMetrics {
    pub fn count(&self, status: StatusCode) {
        let counter = match status.as_u16() {
            429 => &self.too_many,
            502 => &self.bad_gateway,
            504 => &self.gateway_timeout,
            400..=499 => &self.client_error,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Take the counters (as the `gateway_*` fields), leaving zeros.
    pub(super) fn take(&self) -> Counters {
        let t = |a: &AtomicU64| a.swap(0, Ordering::AcqRel);
        Counters {
            gateway_429: t(&self.too_many),
            gateway_502: t(&self.bad_gateway),
            gateway_504: t(&self.gateway_timeout),
            gateway_4xx: t(&self.client_error),
            ..Counters::default()
        }
    }
}
