//! Serving on a host that freezes the process between requests (AWS Lambda), host-neutral: the
//! host's own runtime is handed in by the binary, so this crate carries no host crate.
//!
//! Such a host runs the process only while an invocation is in progress: once the response has
//! been handed over and the runtime asks for the next one, the process is frozen until there is
//! one — for seconds or for hours — and the environment may be reclaimed at any point after. The
//! background tasks ([`Gateway::start_background`]) run for the life of the environment, but only
//! while it is thawed, so on their own a 429 seen by one invocation might be published only
//! when some later invocation thaws the process, and counters might never be written. Hence:
//!
//! 1. **After each response.** [`FlushAfterLayer`] wraps every response body. When the body has
//!    ended (its last piece handed over, or an error), the inner body is dropped first — that is
//!    when its answer is counted — and then the work that is due runs *before* the end is
//!    reported: the runtime reports an invocation complete, and asks for the next one, only once
//!    the body has ended, so the work is done before the process can be frozen. Due means: a
//!    metrics flush once `API_GATEWAY_METRICS_FLUSH_SECS` has passed since the last one made here
//!    (the first response always flushes); a state sync ([`Gateway::sync_now`]) when a circuit
//!    opening waits for publication, or once the sync interval has passed since the last one
//!    made here. Both run together. The cost is that the end of a response waits for them when
//!    they are due (a few milliseconds against a reachable store, bounded by the store calls'
//!    own time limits); nothing else waits.
//! 2. **At shutdown.** [`serve`] hands the host's runtime a hook that stops the background tasks
//!    (a last sync and metrics flush) for it to call on SIGTERM; the same happens if the runtime
//!    returns.

use crate::state::{Background, Gateway};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tower::{Layer, Service};

/// What to run when a response body has ended: the work that is due, if any.
type CatchUp = Arc<dyn Fn() -> Option<BoxFuture<'static, ()>> + Send + Sync>;

/// When this host last caught up with the store after a response (ms since the epoch; wall
/// clock, which keeps running while the process is frozen).
#[derive(Debug, Default)]
struct Cadence {
    last_flush_ms: AtomicU64,
    last_sync_ms: AtomicU64,
}

/// What is due after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    flush: bool,
    sync: bool,
}

impl Cadence {
    /// Which work is due at `now_ms`, claimed so that two responses ending together do not both
    /// run it.
    fn claim(&self, now_ms: u64, flush_every: Duration, sync_every: Duration, queued: bool) -> Due {
        Due {
            flush: claim(&self.last_flush_ms, now_ms, flush_every, false),
            sync: claim(&self.last_sync_ms, now_ms, sync_every, queued),
        }
    }
}

/// Set `last` to `now_ms` if `every` has passed since it (or `anyway`); whether it was set.
fn claim(last: &AtomicU64, now_ms: u64, every: Duration, anyway: bool) -> bool {
    let every = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
    last.fetch_update(Ordering::AcqRel, Ordering::Acquire, |at| {
        (anyway || now_ms.saturating_sub(at) >= every).then_some(now_ms)
    })
    .is_ok()
}

/// The catch-up work of `gateway`: step 1 of the module doc.
fn catch_up(gateway: Arc<Gateway>) -> CatchUp {
    let cadence = Cadence::default();
    Arc::new(move || {
        let due = cadence.claim(
            crate::throttle::now_ms(),
            gateway.settings.metrics_flush,
            gateway.settings.sync_interval,
            gateway.shared.queued_openings() > 0,
        );
        if !(due.flush || due.sync) {
            return None;
        }
        let gateway = gateway.clone();
        Some(Box::pin(async move {
            let flush = async {
                if due.flush {
                    gateway.flush_metrics().await;
                }
            };
            let sync = async {
                if due.sync {
                    gateway.sync_now().await;
                }
            };
            tokio::join!(flush, sync);
        }))
    })
}

/// Middleware: after each response body has ended, run the store work that is due before the
/// end is reported (step 1 of the module doc). For hosts that freeze the process between
/// requests; a plain server has its background tasks running all the time and needs none.
#[derive(Clone)]
pub struct FlushAfterLayer {
    catch_up: CatchUp,
}

impl FlushAfterLayer {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self {
            catch_up: catch_up(gateway),
        }
    }
}

impl std::fmt::Debug for FlushAfterLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushAfterLayer")
    }
}

impl<S> Layer<S> for FlushAfterLayer {
    type Service = FlushAfter<S>;

    fn layer(&self, inner: S) -> FlushAfter<S> {
        FlushAfter {
            inner,
            catch_up: self.catch_up.clone(),
        }
    }
}

/// See [`FlushAfterLayer`].
#[derive(Clone)]
pub struct FlushAfter<S> {
    inner: S,
    catch_up: CatchUp,
}

impl<S> std::fmt::Debug for FlushAfter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushAfter")
    }
}

impl<S, R, B> Service<http::Request<R>> for FlushAfter<S>
where
    S: Service<http::Request<R>, Response = http::Response<B>>,
    B: Body,
{
    type Response = http::Response<FlushBody<B>>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<R>) -> Self::Future {
        Answer {
            inner: self.inner.call(request),
            catch_up: Some(self.catch_up.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, its body wrapped in a [`FlushBody`].
    pub struct Answer<F> {
        #[pin]
        inner: F,
        catch_up: Option<CatchUp>,
    }
}

impl<F, B, E> Future for Answer<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Body,
{
    type Output = Result<http::Response<FlushBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let catch_up = this.catch_up.take();
        Poll::Ready(Ok(response.map(|inner| FlushBody {
            inner: Some(inner),
            catch_up,
            running: None,
            last: None,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that, once its inner body has ended, drops it and runs the due catch-up
    /// work before reporting the end (or the error, or the trailers, that ended it).
    pub struct FlushBody<B: Body> {
        #[pin]
        inner: Option<B>,
        catch_up: Option<CatchUp>,
        running: Option<BoxFuture<'static, ()>>,
        // What ended the body, handed on once the work is done (`None` inside: the plain end).
        last: Option<Option<Result<Frame<B::Data>, B::Error>>>,
    }
}

impl<B> Body for FlushBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            let ending = match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) if frame.is_data() => return Poll::Ready(Some(Ok(frame))),
                // Trailers are the last frame, and an error ends the body too.
                other => other,
            };
            // Dropping the inner body counts its answer; then the work sees that count.
            this.inner.set(None);
            *this.running = this.catch_up.take().and_then(|catch_up| catch_up());
            *this.last = Some(ending);
        }
        if let Some(running) = this.running.as_mut() {
            ready!(running.as_mut().poll(cx));
            *this.running = None;
        }
        Poll::Ready(this.last.take().flatten())
    }

    fn is_end_stream(&self) -> bool {
        // Not ended while the catch-up work has yet to run: the host must poll for the end.
        self.inner.is_none() && self.running.is_none() && self.last.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Never exact: a consumer may stop polling once it has an exact length's bytes, and
        // the work runs only when the end is polled for.
        let mut hint = SizeHint::new();
        hint.set_lower(self.inner.as_ref().map_or(0, |b| b.size_hint().lower()));
        hint
    }
}

/// The hook [`serve`] hands the host's runtime, to be called once on SIGTERM: stops the
/// background tasks (a last sync and metrics flush).
pub type ShutdownHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Serve `app` through a host runtime that freezes the process between requests, for the life
/// of the execution environment: start the background tasks, give `on_shutdown` the hook that
/// stops them (awaited before the runtime starts: a host may need its shutdown support set up
/// before the first request), then `run` the app wrapped in [`FlushAfterLayer`]; if the runtime
/// returns, stop the background tasks here. `name` prefixes messages. Returns the exit code.
///
/// For AWS Lambda the binary passes `lambda_runtime::spawn_graceful_shutdown_handler` and
/// `lambda_http::run_with_streaming_response` (or `lambda_http::run`).
pub async fn serve<H, HF, R, RF, E>(
    name: &str,
    gateway: &Arc<Gateway>,
    app: axum::Router,
    on_shutdown: H,
    run: R,
) -> ExitCode
where
    H: FnOnce(ShutdownHook) -> HF,
    HF: Future<Output = ()>,
    R: FnOnce(FlushAfter<axum::Router>) -> RF,
    RF: Future<Output = Result<(), E>>,
    E: Display,
{
    let background = Arc::new(Mutex::new(Some(gateway.start_background())));
    let for_hook = background.clone();
    let hook: ShutdownHook = Box::new(move || {
        Box::pin(async move {
            stop(&for_hook).await;
            crate::telemetry::shutdown();
        })
    });
    on_shutdown(hook).await;
    tracing::info!(prefix = %gateway.settings.prefix(), "{name} serving through the host's runtime");
    let served = run(FlushAfterLayer::new(gateway.clone()).layer(app)).await;
    stop(&background).await;
    crate::telemetry::shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: host runtime failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Stop the background tasks if nobody has yet (the shutdown hook and the end of the runtime
/// may race).
async fn stop(background: &Mutex<Option<Background>>) {
    let taken = background.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(background) = taken {
        background.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::sync::atomic::AtomicBool;
    use tower::ServiceExt;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_response_flushes_then_only_once_per_interval() {
        let c = Cadence::default();
        let now = 1_000_000;
        assert_eq!(
            c.claim(now, 5 * SEC, SEC / 4, false),
            Due {
                flush: true,
                sync: true
            }
        );
        assert_eq!(
            c.claim(now + 100, 5 * SEC, SEC / 4, false),
            Due {
                flush: false,
                sync: false
            }
        );
        assert_eq!(
            c.claim(now + 300, 5 * SEC, SEC / 4, false),
            Due {
                flush: false,
                sync: true
            }
        );
        assert!(c.claim(now + 5_000, 5 * SEC, SEC / 4, false).flush);
    }

    #[test]
    fn a_queued_circuit_opening_is_synced_at_once() {
        let c = Cadence::default();
        assert!(c.claim(1_000_000, 5 * SEC, SEC / 4, false).sync);
        assert!(!c.claim(1_000_010, 5 * SEC, SEC / 4, false).sync);
        assert!(c.claim(1_000_020, 5 * SEC, SEC / 4, true).sync);
    }

    /// A body that records when it is dropped.
    struct Watched {
        inner: Full<Bytes>,
        dropped: Arc<AtomicBool>,
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl Body for Watched {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Pin::new(&mut self.inner).poll_frame(cx)
        }
    }

    #[tokio::test]
    async fn the_work_runs_after_the_body_is_dropped_and_before_its_end_is_reported() {
        let dropped = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (saw_drop, finished) = (dropped.clone(), done.clone());
        let catch_up: CatchUp = Arc::new(move || {
            let (saw_drop, finished) = (saw_drop.clone(), finished.clone());
            Some(Box::pin(async move {
                assert!(
                    saw_drop.load(Ordering::SeqCst),
                    "the answer is counted first"
                );
                tokio::task::yield_now().await;
                finished.store(true, Ordering::SeqCst);
            }))
        });
        let layer = FlushAfterLayer { catch_up };
        let body_dropped = dropped.clone();
        let service = layer.layer(tower::service_fn(move |_req: http::Request<()>| {
            let dropped = body_dropped.clone();
            async move {
                Ok::<_, Infallible>(http::Response::new(Watched {
                    inner: Full::new(Bytes::from_static(b"hello")),
                    dropped,
                }))
            }
        }));
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let mut body = response.into_body();
        assert!(!body.is_end_stream());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hello");
        assert!(!done.load(Ordering::SeqCst));
        assert!(body.frame().await.is_none(), "then the end");
        assert!(done.load(Ordering::SeqCst), "reported after the work");
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn nothing_due_ends_the_body_at_once() {
        let layer = FlushAfterLayer {
            catch_up: Arc::new(|| None),
        };
        let service = layer.layer(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"x"))))
        }));
        let response = service.oneshot(http::Request::new(())).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "x");
    }
}
