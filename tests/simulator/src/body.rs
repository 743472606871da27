//! The response body type: a ready buffer or a live event stream.
//!
//! One concrete enum instead of a boxed trait object keeps the common case —
//! a fixed JSON answer with an exact `content-length` — free of extra
//! allocation, while streams stay truly incremental.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::sse::{Aborted, SseStream};

/// A response body.
pub(crate) enum SimBody {
    /// A whole body, handed over as one frame (`None` once sent, or empty).
    Full(Option<Bytes>),
    /// Server-sent events produced as they become due.
    Sse(Box<SseStream>),
}

impl SimBody {
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl From<Bytes> for SimBody {
    fn from(bytes: Bytes) -> Self {
        Self::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<&'static str> for SimBody {
    fn from(text: &'static str) -> Self {
        Self::from(Bytes::from_static(text.as_bytes()))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Sse(stream) => stream
                .poll_event(cx)
                .map(|event| event.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Sse(stream) => stream.is_end(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Sse(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn full_bodies_have_an_exact_size_and_one_frame() {
        let body = SimBody::from("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");

        let empty = SimBody::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(SimBody::from(Bytes::new()).is_end_stream());
    }
}
