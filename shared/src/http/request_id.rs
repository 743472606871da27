//! `x-request-id` on every response: the client's own id when it sent a usable one, otherwise a
//! new `req_<uuid>`. Handlers read it from the request's extensions.

use axum::extract::Request;
use axum::response::Response;
use http::HeaderValue;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower::{Layer, Service};

pub const HEADER: &str = "x-request-id";

/// The request's id, as a ready-to-send header value.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

/// Middleware: settle the id before the handler runs and stamp it on whatever answers. A plain
/// tower layer rather than `axum::middleware::from_fn`, which boxes the rest of the stack and its
/// future on every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct StampLayer;

impl<S> Layer<S> for StampLayer {
    type Service = Stamp<S>;

    fn layer(&self, inner: S) -> Stamp<S> {
        Stamp { inner }
    }
}

/// See [`StampLayer`].
#[derive(Debug, Clone)]
pub struct Stamp<S> {
    inner: S,
}

impl<S> Service<Request> for Stamp<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Stamped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request
            .headers()
            .get(HEADER)
            .filter(|v| is_usable(v.as_bytes()))
            .cloned()
            .unwrap_or_else(fresh);
        request.extensions_mut().insert(RequestId(id.clone()));
        Stamped {
            inner: self.inner.call(request),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, with the id stamped on it.
    pub struct Stamped<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, E> Future for Stamped<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(HEADER, id);
        }
        Poll::Ready(Ok(response))
    }
}

fn is_usable(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

fn fresh() -> HeaderValue {
    let mut buf = [0u8; 4 + uuid::fmt::Simple::LENGTH];
    buf[..4].copy_from_slice(b"req_");
    uuid::Uuid::new_v4().simple().encode_lower(&mut buf[4..]);
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_prefixed_and_unique() {
        let (a, b) = (fresh(), fresh());
        assert!(a.to_str().unwrap().starts_with("req_"));
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }

    #[test]
    fn only_short_visible_ids_are_adopted() {
        assert!(is_usable(b"abc-123"));
        assert!(!is_usable(b""));
        assert!(!is_usable(b"has space"));
        assert!(!is_usable(&[b'a'; 129]));
    }
}
