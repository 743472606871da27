//! Watching one relayed body: keeps its tail for the usage, and when the body ends — completely,
//! broken, or because the client went away — counts the answer once.

use super::usage::{self, TAIL_BYTES};
use super::{EndpointMetrics, Outcome};
use crate::throttle::InFlight;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Lives as long as the relayed body (it also holds the endpoint's in-flight count).
#[derive(Debug)]
pub struct Recorder {
    metrics: Arc<EndpointMetrics>,
    started: Instant,
    tail: VecDeque<u8>,
    complete: bool,
    /// The declared body length: the server stops polling a body once that much is sent, so
    /// reaching it is what "complete" means for such a body.
    expected_len: Option<u64>,
    received: u64,
    /// Time to the first piece of a streamed body.
    first_chunk: Option<std::time::Duration>,
    stream: bool,
    /// What a non-success answer counts as (a 400 is a content filter; other 4xx failures).
    not_success: Option<Outcome>,
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
        let not_success = match status.as_u16() {
            200..=299 => None,
            400 => Some(Outcome::Filtered),
            _ => Some(Outcome::Failed),
        };
        Self {
            metrics,
            started,
            tail: VecDeque::new(),
            complete: false,
            expected_len: None,
            received: 0,
            first_chunk: None,
            stream,
            not_success,
            _in_flight: in_flight,
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
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(outcome) = self.not_success {
            self.metrics.count(outcome);
            return;
        }
        let usage = usage::parse(self.tail.make_contiguous());
        self.metrics.answered(
            self.started.elapsed(),
            self.first_chunk,
            usage,
            self.complete,
        );
    }
}
