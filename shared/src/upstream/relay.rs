//! Relaying a backend body to the client as it arrives: each piece the backend sends is handed
//! on at once (no buffering), a stalled backend ends the body after the idle timeout, and when
//! the client goes away the body is dropped, which drops the backend connection with it.

use super::usage_chunk::UsageStripper;
use crate::metrics::Recorder;
use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use std::time::Duration;

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
/// body, so it counts the answer when the body ends, however it ends. With `strip_usage` the
/// usage-only event of a stream is taken out (the gateway asked for it, the client did not).
pub fn relay_body(
    response: reqwest::Response,
    idle: Duration,
    mut recorder: Recorder,
    strip_usage: bool,
) -> Body {
    if !strip_usage {
        recorder.expect_len(response.content_length());
    }
    let relay = Relay {
        upstream: response.bytes_stream(),
        recorder,
        strip: strip_usage.then(UsageStripper::default),
    };
    Body::from_stream(with_idle_timeout(relay, idle))
}

struct Relay<S> {
    upstream: S,
    recorder: Recorder,
    strip: Option<UsageStripper>,
}

fn with_idle_timeout<S>(
    relay: Relay<S>,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, RelayError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    stream::unfold(Some(relay), move |state| async move {
        let mut relay = state?;
        loop {
            match tokio::time::timeout(idle, relay.upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    relay.recorder.chunk(&chunk);
                    let out = match &mut relay.strip {
                        Some(strip) => strip.feed(&chunk),
                        None => chunk,
                    };
                    // An empty piece would end a chunked body early: wait for more instead.
                    if !out.is_empty() {
                        return Some((Ok(out), Some(relay)));
                    }
                }
                Ok(Some(Err(e))) => return Some((Err(RelayError::Backend(e)), None)),
                Ok(None) => {
                    relay.recorder.complete();
                    let rest = relay
                        .strip
                        .as_mut()
                        .map(UsageStripper::finish)
                        .unwrap_or_default();
                    return (!rest.is_empty()).then_some((Ok(rest), None));
                }
                Err(_) => return Some((Err(RelayError::Idle(idle)), None)),
            }
        }
    })
}
