//! Watching one relayed body: keeps its tail (usage, content filter, model), for streams the
//! text of the content deltas, and when the body ends — completely, broken by the backend, or
//! because the client went away — counts the answer once.

use super::endpoint::{Answered, Ending, EndpointMetrics, Outcome};
use super::estimate::{self, DeltaText, Job};
use super::usage::{self, TAIL_BYTES};
use crate::throttle::InFlight;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// An endpoint's counters, with this body counted as open until it is counted (see
/// [`super::MetricsRegistry::open`]).
#[derive(Debug)]
struct Open(Arc<EndpointMetrics>);

impl Open {
    fn new(metrics: Arc<EndpointMetrics>) -> Self {
        metrics.opened();
        Self(metrics)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed();
    }
}

/// What a stream keeps to count its tokens should no usage come.
#[derive(Debug)]
struct Estimate {
    request: Bytes,
    text: DeltaText,
}

/// Lives as long as the relayed body (it also holds the endpoint's in-flight count).
#[derive(Debug)]
pub struct Recorder {
    /// Always `Some` until dropped.
    open: Option<Open>,
    started: Instant,
    tail: VecDeque<u8>,
    complete: bool,
    /// The backend failed mid-body (connection error, idle timeout).
    broken: bool,
    /// The declared body length: the server stops polling a body once that much is sent, so
    /// reaching it is what "complete" means for such a body.
    expected_len: Option<u64>,
    received: u64,
    /// Time to the first piece of a streamed body.
    first_chunk: Option<std::time::Duration>,
    stream: bool,
    /// Not a success: counted as a content filter or a failure, from the body.
    error: bool,
    /// Boxed: most answers are not streams, and a smaller recorder is cheaper to move.
    estimate: Option<Box<Estimate>>,
    _in_flight: InFlight,
}

impl Recorder {
    pub fn new(
        metrics: Arc<EndpointMetrics>,
        status: http::StatusCode,
        stream: bool,
        started: Instant,
        in_flight: InFlight,
    ) -> Self {
        Self {
            open: Some(Open::new(metrics)),
            started,
            tail: VecDeque::new(),
            complete: false,
            broken: false,
            expected_len: None,
            received: 0,
            first_chunk: None,
            stream,
            error: !status.is_success(),
            estimate: None,
            _in_flight: in_flight,
        }
    }

    /// Count this stream's tokens from `request` (the body sent) and the relayed deltas if it
    /// ends without a usage chunk. Only for streamed successes.
    pub fn estimate_from(&mut self, request: Bytes) {
        if self.stream && !self.error {
            self.estimate = Some(Box::new(Estimate {
                request,
                text: DeltaText::default(),
            }));
        }
    }

    /// The backend declared the body's length.
    pub fn expect_len(&mut self, len: Option<u64>) {
        self.expected_len = len;
    }

    /// One piece of the body went to the client.
    pub fn chunk(&mut self, bytes: &Bytes) {
        self.received += bytes.len() as u64;
        if self.expected_len.is_some_and(|len| self.received >= len) {
            self.complete = true;
        }
        if self.stream && self.first_chunk.is_none() {
            self.first_chunk = Some(self.started.elapsed());
        }
        if let Some(e) = &mut self.estimate {
            e.text.feed(bytes);
        }
        // A ring: each piece costs its own length, however full the tail already is.
        let keep = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(TAIL_BYTES);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }

    /// The body reached its end.
    pub fn complete(&mut self) {
        self.complete = true;
    }

    /// The backend failed before the body's end.
    pub fn broken(&mut self) {
        self.broken = true;
    }

    fn ending(&self, tail: &[u8]) -> Ending {
        // A stream relayed up to its `[DONE]` is complete for its client, even if the client hung
        // up before the backend's connection said so.
        let complete = self.complete || (self.stream && usage::ends_with_done(tail));
        match (complete, self.broken) {
            (true, _) if usage::is_filtered_output(tail) => Ending::Filtered,
            (true, _) => Ending::Complete,
            (false, true) => Ending::Broken,
            (false, false) => Ending::Cancelled,
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        self.tail.make_contiguous();
        let kept = self.estimate.take();
        let tail = self.tail.as_slices().0;
        if self.error {
            let outcome = match usage::is_content_filter_error(tail) {
                true => Outcome::Filtered,
                false => Outcome::Failed,
            };
            open.0.count(outcome);
            return;
        }
        let usage = usage::parse(tail);
        let ending = self.ending(tail);
        open.0.answered(Answered {
            latency: self.started.elapsed(),
            ttft: self.first_chunk,
            usage,
            ending,
        });
        if usage.is_some() {
            return;
        }
        if let Some(kept) = kept {
            let Estimate { request, text } = *kept;
            let job = Job {
                text,
                request,
                model: usage::model(tail),
            };
            let metrics = open.0.clone();
            // Still open until its tokens are added: the last flush waits for them.
            estimate::spawn(job, metrics, move || drop(open));
        }
    }
}
