//! A request on its way through the router: counted in flight on its connection's clock until its
//! response body is dropped, its body failed when nothing of it arrives for the body timeout, and
//! the router's answer then replaced by a `408` (OpenAI-shaped, the request id kept).

use super::clock::Clock;
use crate::http::request_id;
use axum::Router;
use axum::body::Body;
use axum::routing::future::RouteFuture;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The router as one connection's hyper service.
pub(super) struct Serve {
    pub(super) router: Router,
    pub(super) clock: Arc<Clock>,
}

impl hyper::service::Service<Request<Incoming>> for Serve {
    type Response = Response<Answered>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let number = self.clock.begin();
        let version = request.version();
        let request = request.map(|inner| RequestBody {
            inner,
            clock: self.clock.clone(),
            number,
            timer: None,
            progressed: false,
            stalled: false,
        });
        // A clone of the router (an `Arc`) per request, as `axum::serve` does; the router is
        // always ready.
        let mut router = self.router.clone();
        Answer {
            inner: tower::Service::call(&mut router, request),
            in_flight: Some(InFlight {
                clock: self.clock.clone(),
                number,
            }),
            version,
        }
    }
}

/// A request counted in flight until its response body is dropped (sent, or given up).
struct InFlight {
    clock: Arc<Clock>,
    number: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.clock.end();
    }
}

pin_project_lite::pin_project! {
    /// The router's answer, or a 408 in its place when the request's body stalled.
    pub(super) struct Answer {
        #[pin]
        inner: RouteFuture<Infallible>,
        in_flight: Option<InFlight>,
        version: Version,
    }
}

impl Future for Answer {
    type Output = Result<Response<Answered>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        if let Some(f) = &in_flight
            && f.clock.stalled(f.number)
        {
            response = request_timeout(&response, *this.version, f.clock.body_timeout);
        }
        Poll::Ready(Ok(response.map(|body| Answered {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// The answer to a request whose body stopped arriving: 408, OpenAI-shaped, and (HTTP/1) the
/// connection closed after it. The handler's own answer (the body could not be read) is replaced;
/// its request id is kept.
fn request_timeout(
    answered: &Response<Body>,
    version: Version,
    waited: Duration,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": {
            "message": format!(
                "the request body stopped arriving: nothing came for {} s",
                waited.as_secs_f64()
            ),
            "type": "invalid_request_error",
            "param": null,
            "code": "request_timeout",
        }
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = answered.headers().get(request_id::HEADER) {
        headers.insert(request_id::HEADER, id.clone());
    }
    if version <= Version::HTTP_11 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A response body that keeps its request counted in flight until it is dropped.
pub(super) struct Answered {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl HttpBody for Answered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
enum RequestBodyError {
    #[error(transparent)]
    Read(hyper::Error),
    #[error("nothing of the request body arrived for {} s", .0.as_secs_f64())]
    Stalled(Duration),
}

/// A request body that fails when nothing of it arrives for the body timeout. The timer exists
/// only once the body has had to wait, and is re-armed once per wait, not per piece.
struct RequestBody {
    inner: Incoming,
    clock: Arc<Clock>,
    number: u64,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether a frame arrived since the timer was last armed.
    progressed: bool,
    stalled: bool,
}

impl RequestBody {
    fn wait(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let limit = self.clock.body_timeout;
        let fresh = self.timer.is_none();
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if self.progressed && !fresh {
            timer.as_mut().reset(Instant::now() + limit);
        }
        self.progressed = false;
        ready!(timer.as_mut().poll(cx));
        self.stalled = true;
        self.clock.stalled.store(self.number + 1, Relaxed);
        tracing::debug!(
            waited_secs = limit.as_secs_f64(),
            "request body stalled: answering 408 and closing the connection"
        );
        Poll::Ready(Some(Err(RequestBodyError::Stalled(limit))))
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if this.stalled {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(RequestBodyError::Read)))
            }
            // Every declared byte is in: only the end of the stream is still to be seen.
            Poll::Pending if this.inner.is_end_stream() => Poll::Pending,
            Poll::Pending => this.wait(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stalled || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
