//! Relaying a backend body to the client as it arrives: each piece the backend sends is handed
//! on at once (no buffering), a stalled backend ends the body after the idle timeout, and when
//! the client goes away the body is dropped, which drops the backend connection with it.

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
/// body, so it counts the answer when the body ends, however it ends.
pub fn relay_body(response: reqwest::Response, idle: Duration, recorder: Recorder) -> Body {
    Body::from_stream(with_idle_timeout(response.bytes_stream(), idle, recorder))
}

fn with_idle_timeout<S>(
    upstream: S,
    idle: Duration,
    recorder: Recorder,
) -> impl Stream<Item = Result<Bytes, RelayError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    stream::unfold(Some((upstream, recorder)), move |state| async move {
        let (mut upstream, mut recorder) = state?;
        match tokio::time::timeout(idle, upstream.next()).await {
            Ok(Some(Ok(chunk))) => {
                recorder.chunk(&chunk);
                Some((Ok(chunk), Some((upstream, recorder))))
            }
            Ok(Some(Err(e))) => Some((Err(RelayError::Backend(e)), None)),
            Ok(None) => {
                recorder.complete();
                None
            }
            Err(_) => Some((Err(RelayError::Idle(idle)), None)),
        }
    })
}
