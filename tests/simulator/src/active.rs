//! The behaviour in force, with everything derived from it precomputed.
//!
//! Setting a behaviour builds one immutable [`Active`] and swaps it in
//! atomically; requests load it without locking. It carries the state that
//! belongs to that behaviour — the `fail_next` countdown, the
//! `throttle_every` schedule, the budget windows — so setting a behaviour
//! restarts all of them at once, and the precomputed reply and error bodies
//! that requests share.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::behaviour::{Behaviour, Mode};
use crate::budget::{Slot, Window};
use crate::error_body;
use crate::reply::Reply;
use crate::retry_after;

const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// A behaviour ready to serve.
#[derive(Debug)]
pub(crate) struct Active {
    pub behaviour: Behaviour,
    pub reply: Reply,
    pub first_byte: Duration,
    pub chunk_interval: Duration,
    pub sse_content_type: HeaderValue,
    pub error_status: StatusCode,
    pub error_body: Bytes,
    /// Body of `throttle` answers and scheduled 429s (their hint is fixed).
    pub throttle_body: Bytes,
    /// Start of the budget windows.
    epoch: Instant,
    /// `fail_next` requests still to fail.
    fail_left: AtomicU32,
    /// Ok-mode requests seen, for `throttle_every`.
    schedule: AtomicU64,
    requests: Window,
    tokens: Window,
}

impl Active {
    /// Prepares `behaviour` for a simulator called `name`. Values that
    /// [`Behaviour::validate`] rejects are replaced by their defaults.
    pub fn new(behaviour: Behaviour, name: &str) -> Self {
        let behaviour = behaviour.sanitised();
        let error_status =
            StatusCode::from_u16(behaviour.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let sse_content_type = behaviour
            .sse_content_type
            .as_deref()
            .and_then(|ct| HeaderValue::from_str(ct).ok())
            .unwrap_or(EVENT_STREAM);
        Self {
            reply: Reply::new(name, behaviour.completion_tokens),
            first_byte: Duration::from_millis(behaviour.first_byte_ms),
            chunk_interval: Duration::from_millis(behaviour.chunk_interval_ms),
            sse_content_type,
            error_status,
            error_body: error_body::for_status(error_status),
            throttle_body: error_body::too_many_requests(retry_after::seconds(
                behaviour.retry_after_ms,
            )),
            epoch: Instant::now(),
            fail_left: AtomicU32::new(behaviour.fail_next.unwrap_or(0)),
            schedule: AtomicU64::new(0),
            requests: Window::default(),
            tokens: Window::default(),
            behaviour,
        }
    }

    /// The mode for the request at hand. With `fail_next`, each call uses up
    /// one failure; once they are gone the answer is [`Mode::Ok`].
    pub fn take_mode(&self) -> Mode {
        let mode = self.behaviour.mode;
        if mode == Mode::Ok || self.behaviour.fail_next.is_none() {
            return mode;
        }
        let spent = self
            .fail_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            });
        if spent.is_ok() { mode } else { Mode::Ok }
    }

    /// The behaviour as set, with `fail_next` showing the failures still to come.
    pub fn current_behaviour(&self) -> Behaviour {
        let mut behaviour = self.behaviour.clone();
        if behaviour.fail_next.is_some() {
            behaviour.fail_next = Some(self.fail_left.load(Ordering::Acquire));
        }
        behaviour
    }

    /// Advances the `throttle_every` schedule; true if this request is the Nth.
    pub fn take_scheduled_throttle(&self) -> bool {
        let Some(every) = self.behaviour.throttle_every.filter(|&n| n > 0) else {
            return false;
        };
        let seen = self.schedule.fetch_add(1, Ordering::Relaxed) + 1;
        seen.is_multiple_of(u64::from(every))
    }

    /// Charges one request and `tokens` tokens to the budgets, or returns
    /// the milliseconds until the window frees.
    pub fn admit(&self, tokens: u64) -> Result<(), u64> {
        let (rpm, tpm) = (self.behaviour.rpm, self.behaviour.tpm);
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let slot = Slot::at(self.epoch, Instant::now());
        if let Some(limit) = rpm
            && !self.requests.try_take(slot, 1, limit)
        {
            return Err(slot.ms_left);
        }
        if let Some(limit) = tpm
            && !self
                .tokens
                .try_take(slot, u32::try_from(tokens).unwrap_or(u32::MAX), limit)
        {
            return Err(slot.ms_left);
        }
        Ok(())
    }

    /// What is left of the request and token budgets (`None` if unlimited).
    pub fn remaining(&self) -> (Option<u32>, Option<u32>) {
        let (rpm, tpm) = (self.behaviour.rpm, self.behaviour.tpm);
        if rpm.is_none() && tpm.is_none() {
            return (None, None);
        }
        let slot = Slot::at(self.epoch, Instant::now());
        (
            rpm.map(|limit| self.requests.remaining(slot, limit)),
            tpm.map(|limit| self.tokens.remaining(slot, limit)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(b: Behaviour) -> Active {
        Active::new(b, "sim")
    }

    #[test]
    fn fail_next_reverts_to_ok() {
        let a = active(Behaviour {
            fail_next: Some(2),
            ..Behaviour::with_mode(Mode::Throttle)
        });
        assert_eq!(a.current_behaviour().fail_next, Some(2));
        let modes: Vec<_> = (0..4).map(|_| a.take_mode()).collect();
        assert_eq!(modes, [Mode::Throttle, Mode::Throttle, Mode::Ok, Mode::Ok]);
        assert_eq!(a.current_behaviour().fail_next, Some(0));
        assert_eq!(
            active(Behaviour::with_mode(Mode::Hang)).take_mode(),
            Mode::Hang
        );
    }

    #[test]
    fn throttle_every_hits_each_nth_request() {
        let a = active(Behaviour {
            throttle_every: Some(3),
            ..Behaviour::default()
        });
        let hits: Vec<_> = (0..7).map(|_| a.take_scheduled_throttle()).collect();
        assert_eq!(hits, [false, false, true, false, false, true, false]);
        assert!(!active(Behaviour::default()).take_scheduled_throttle());
    }

    #[test]
    fn budgets_refuse_with_the_time_left_in_the_window() {
        let a = active(Behaviour {
            rpm: Some(2),
            tpm: Some(100),
            ..Behaviour::default()
        });
        assert_eq!(a.remaining(), (Some(2), Some(100)));
        assert!(a.admit(30).is_ok());
        assert_eq!(a.remaining(), (Some(1), Some(70)));
        assert!(a.admit(30).is_ok());
        let wait = a.admit(30).unwrap_err();
        assert!(wait > 0 && wait <= crate::budget::WINDOW_MS);

        let tokens_only = active(Behaviour {
            tpm: Some(50),
            ..Behaviour::default()
        });
        assert!(tokens_only.admit(40).is_ok());
        assert!(tokens_only.admit(40).is_err());
        assert_eq!(active(Behaviour::default()).remaining(), (None, None));
        assert!(active(Behaviour::default()).admit(u64::MAX).is_ok());
    }

    #[test]
    fn precomputes_what_answers_share() {
        let a = active(Behaviour {
            status: 503,
            sse_content_type: Some("application/json".into()),
            ..Behaviour::default()
        });
        assert_eq!(a.error_status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.sse_content_type, "application/json");
        assert_eq!(
            active(Behaviour::default()).sse_content_type,
            "text/event-stream"
        );
        assert!(a.reply.text().contains("sim"));
    }
}
