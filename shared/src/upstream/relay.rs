//! Relaying a backend body to the client as it arrives: each piece the backend sends is handed
//! on at once (no buffering), a stalled backend ends the body after the idle timeout, and when
//! the client goes away the body is dropped, which drops the backend connection with it.
//!
//! Taking the usage event out of a stream is the one place bytes wait: an event is held until
//! it is complete, but never more than 64 KiB of it (`usage_chunk::HELD_LIMIT`; past that it
//! passes through), so the relay keeps writing whatever the backend sends. That matters for
//! going away too: the server notices a closed client connection only when it writes.

use super::usage_chunk::UsageStripper;
use crate::metrics::Recorder;
use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Why a relayed body ended early. Ending the body with an error makes the server abort the
/// client's connection, so a truncated answer can never look complete.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("backend sent nothing for {0:?}")]
    Idle(Duration),
    #[error("backend connection failed mid-body: {0}")]
    Backend(#[from] reqwest::Error),
}

/// The backend's body as a client body. `recorder` sees every piece and lives as long as the
/// body, so it counts the answer when the body ends, however it ends: a backend that fails or
/// stalls mid-body is told to it ([`Recorder::broken`]), and a body dropped before its end
/// without either is a client that went away. With `strip_usage` the
/// usage-only event of a stream is taken out (the gateway asked for it, the client did not).
/// The backend's content type does not decide whether to strip: streams are relayed as event
/// streams whatever the backend declares, so one labelled JSON is still stripped, and the
/// stripper itself passes through whole a body that is JSON (its first byte `{` or `[`).
pub fn relay_body(
    response: reqwest::Response,
    idle: Duration,
    mut recorder: Recorder,
    strip_usage: bool,
) -> Body {
    if !strip_usage {
        recorder.expect_len(response.content_length());
    }
    // Configurations allow at most an hour; the cap keeps `Instant` arithmetic from overflowing
    // whatever a caller passes.
    let idle = idle.min(Duration::from_secs(365 * 24 * 3600));
    let now = Instant::now();
    Body::from_stream(Relay {
        upstream: response.bytes_stream(),
        recorder,
        strip: strip_usage.then(UsageStripper::default),
        idle,
        last_piece: now,
        idle_check: tokio::time::sleep_until((now + idle).into()),
        done: false,
    })
}

pin_project_lite::pin_project! {
    /// The relay as a stream of pieces for the client.
    ///
    /// The idle timer is not re-armed for every piece (a stream sends hundreds): it fires at most
    /// once per `idle`, and then either ends the body (nothing came for `idle`) or moves itself to
    /// `idle` after the last piece.
    struct Relay<S> {
        upstream: S,
        recorder: Recorder,
        strip: Option<UsageStripper>,
        idle: Duration,
        last_piece: Instant,
        #[pin]
        idle_check: Sleep,
        done: bool,
    }
}

impl<S> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin,
{
    type Item = Result<Bytes, RelayError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.upstream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    *this.last_piece = Instant::now();
                    this.recorder.chunk(&chunk);
                    let out = match this.strip.as_mut() {
                        Some(strip) => strip.feed(&chunk),
                        None => chunk,
                    };
                    // An empty piece would end a chunked body early: wait for more instead.
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    this.recorder.broken();
                    return Poll::Ready(Some(Err(RelayError::Backend(e))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    this.recorder.complete();
                    let rest = this
                        .strip
                        .as_mut()
                        .map(UsageStripper::finish)
                        .unwrap_or_default();
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
                Poll::Pending => {
                    while this.idle_check.as_mut().poll(cx).is_ready() {
                        let quiet_until = *this.last_piece + *this.idle;
                        if Instant::now() >= quiet_until {
                            *this.done = true;
                            this.recorder.broken();
                            return Poll::Ready(Some(Err(RelayError::Idle(*this.idle))));
                        }
                        this.idle_check.as_mut().reset(quiet_until.into());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
