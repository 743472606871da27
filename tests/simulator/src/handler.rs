//! The request pipeline: from a parsed HTTP request to an answer, or to a
//! deliberately broken connection.
//!
//! A model call goes through these steps, each of which may end it:
//! api key → read body → behaviour mode (`throttle`, `error`, `drop`,
//! `hang`) → parse → content filter → `throttle_every` → budgets →
//! `first_byte_ms` → answer (JSON or stream). Rate limiting comes before
//! parsing, as on Azure, so even a malformed request can be throttled.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::active::Active;
use crate::behaviour::Mode;
use crate::body::SimBody;
use crate::control;
use crate::embeddings;
use crate::error_body;
use crate::incoming::{self, MAX_BODY_BYTES, ReadError};
use crate::reply::{self, DEFAULT_MODEL, Envelope, Usage};
use crate::request::{self, count_words};
use crate::respond::{self, RequestId};
use crate::retry_after;
use crate::routes::{self, Api, Route};
use crate::shared::{Lifecycle, Shared};
use crate::sse::{Flavor, SseStream, StreamPlan};
use crate::stats::{InFlight, Unanswered, bump};

const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// The service error that makes hyper close the connection without
/// answering (`drop` mode, or a request whose client is already gone).
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped without an answer")
    }
}

impl std::error::Error for Dropped {}

/// Serves one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, Dropped> {
    let (parts, body) = request.into_parts();
    match routes::route(&parts.method, parts.uri.path()) {
        Route::Model { api, deployment } => {
            shared.seen.record(&parts);
            model_call(&shared, &parts, body, api, deployment).await
        }
        Route::NotFound => {
            shared.seen.record(&parts);
            bump(&shared.counters.requests);
            let mut response = respond::json(StatusCode::NOT_FOUND, error_body::NOT_FOUND);
            shared.counters.record_status(response.status());
            respond::stamp(
                &mut response,
                &shared,
                &shared.active.load(),
                &RequestId::new(),
            );
            Ok(response)
        }
        control_route => Ok(control::handle(&shared, control_route, &parts, body).await),
    }
}

/// How a model call ends.
enum Outcome {
    Answer(Response<SimBody>),
    /// Close the connection on purpose.
    Drop,
    /// The client went away while its body was being read.
    ClientGone,
}

async fn model_call(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    api: Api,
    deployment: Option<&str>,
) -> Result<Response<SimBody>, Dropped> {
    let counters = &shared.counters;
    bump(&counters.requests);
    let in_flight = InFlight::enter(counters.clone());
    // Counts a cancellation if hyper drops this future before it settles.
    let mut unanswered = Unanswered::new(counters);
    let call = Call {
        shared,
        active: shared.active.load_full(),
        parts,
        api,
        deployment,
        id: RequestId::new(),
    };
    let outcome = call.run(body, in_flight).await;
    if !matches!(outcome, Outcome::ClientGone) {
        unanswered.settle();
    }
    match outcome {
        Outcome::Answer(mut response) => {
            counters.record_status(response.status());
            respond::stamp(&mut response, shared, &call.active, &call.id);
            Ok(response)
        }
        Outcome::Drop => {
            bump(&counters.dropped);
            Err(Dropped)
        }
        Outcome::ClientGone => Err(Dropped),
    }
}

/// One model call in progress.
struct Call<'a> {
    shared: &'a Shared,
    active: Arc<Active>,
    parts: &'a Parts,
    api: Api,
    deployment: Option<&'a str>,
    id: RequestId,
}

impl Call<'_> {
    async fn run(&self, body: Incoming, in_flight: InFlight) -> Outcome {
        if !self.shared.authorized(&self.parts.headers) {
            return answer(StatusCode::UNAUTHORIZED, error_body::UNAUTHORIZED);
        }
        let body = match incoming::read(body, &self.parts.headers, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(ReadError::TooLarge) => {
                return answer(StatusCode::PAYLOAD_TOO_LARGE, error_body::PAYLOAD_TOO_LARGE);
            }
            Err(ReadError::Broken) => return Outcome::ClientGone,
        };
        let active = &self.active;
        let mode = active.take_mode();
        match mode {
            Mode::Throttle => {
                return Outcome::Answer(self.throttled(
                    active.behaviour.retry_after_ms,
                    active.throttle_body.clone(),
                ));
            }
            Mode::Error => return answer(active.error_status, active.error_body.clone()),
            Mode::Drop => return Outcome::Drop,
            Mode::Hang => {
                self.hang().await;
                return Outcome::Drop;
            }
            Mode::DropMidStream | Mode::Ok => {}
        }
        let abort_after =
            (mode == Mode::DropMidStream).then_some(active.behaviour.chunks_before_drop);
        match self.api {
            Api::Chat => {
                self.generate(&body, Flavor::Chat, abort_after, in_flight)
                    .await
            }
            Api::Completions => {
                self.generate(&body, Flavor::Completion, abort_after, in_flight)
                    .await
            }
            Api::Embeddings if abort_after.is_some() => Outcome::Drop,
            Api::Embeddings => self.embed(&body).await,
        }
    }

    /// A chat or legacy completion.
    async fn generate(
        &self,
        body: &[u8],
        flavor: Flavor,
        abort_after: Option<u32>,
        in_flight: InFlight,
    ) -> Outcome {
        let parsed = match flavor {
            Flavor::Chat => request::chat(body),
            Flavor::Completion => request::completion(body),
        };
        let request = match parsed {
            Ok(request) => request,
            Err(_) if abort_after.is_some() => return Outcome::Drop,
            Err(message) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    error_body::invalid_request(&message),
                );
            }
        };
        if abort_after.is_some() && !request.stream {
            return Outcome::Drop;
        }
        if request.flagged {
            return answer(StatusCode::BAD_REQUEST, error_body::CONTENT_FILTER);
        }
        let active = &self.active;
        let usage = Usage {
            prompt: request.prompt_tokens,
            completion: active.reply.completion_tokens,
        };
        if let Some(refusal) = self.admit(abort_after.is_none(), usage.total()) {
            return Outcome::Answer(refusal);
        }
        self.first_byte().await;
        let mut hex = [0; 32];
        let envelope = Envelope {
            id: self.id.hex(&mut hex),
            created: reply::unix_now(),
            model: self.model(request.model.as_deref()),
        };
        if !request.stream {
            let json = match flavor {
                Flavor::Chat => reply::chat_completion(&envelope, &active.reply, usage),
                Flavor::Completion => reply::text_completion(&envelope, &active.reply, usage),
            };
            return answer(StatusCode::OK, json);
        }
        let plan = StreamPlan {
            flavor,
            azure: self.deployment.is_some(),
            include_usage: request.include_usage,
            usage,
            abort_after,
        };
        let counters = self.shared.counters.clone();
        let stream = SseStream::new(active.clone(), &envelope, plan, counters, in_flight);
        let mut response = Response::new(SimBody::Sse(Box::new(stream)));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, active.sse_content_type.clone());
        headers.insert(CACHE_CONTROL, NO_CACHE);
        Outcome::Answer(response)
    }

    /// An embeddings call.
    async fn embed(&self, body: &[u8]) -> Outcome {
        let request = match request::embeddings(body) {
            Ok(request) => request,
            Err(message) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    error_body::invalid_request(&message),
                );
            }
        };
        let tokens = request
            .inputs
            .iter()
            .fold(0u64, |sum, text| sum.saturating_add(count_words(text)));
        if let Some(refusal) = self.admit(true, tokens) {
            return Outcome::Answer(refusal);
        }
        self.first_byte().await;
        match embeddings::response(&request, self.model(request.model.as_deref())) {
            Ok((json, _)) => answer(StatusCode::OK, json),
            Err(message) => answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body::azure("InternalServerError", &message),
            ),
        }
    }

    /// The `throttle_every` schedule (ok mode only) and the budgets.
    fn admit(&self, scheduled: bool, tokens: u64) -> Option<Response<SimBody>> {
        let active = &self.active;
        if scheduled && active.take_scheduled_throttle() {
            return Some(self.throttled(
                active.behaviour.retry_after_ms,
                active.throttle_body.clone(),
            ));
        }
        active.admit(tokens).err().map(|retry_ms| {
            self.throttled(
                retry_ms,
                error_body::too_many_requests(retry_after::seconds(retry_ms)),
            )
        })
    }

    fn throttled(&self, retry_ms: u64, body: Bytes) -> Response<SimBody> {
        respond::throttled(self.active.behaviour.retry_after_header, retry_ms, body)
    }

    /// Waits `first_byte_ms` before answering.
    async fn first_byte(&self) {
        if !self.active.first_byte.is_zero() {
            tokio::time::sleep(self.active.first_byte).await;
        }
    }

    /// Holds the request until the server stops (or hyper drops this
    /// future because the client went away).
    async fn hang(&self) {
        let mut lifecycle = self.shared.lifecycle.subscribe();
        let _stopped = lifecycle
            .wait_for(|state| *state != Lifecycle::Running)
            .await
            .is_ok();
    }

    /// The request's model, else the deployment, else a default.
    fn model<'m>(&'m self, requested: Option<&'m str>) -> &'m str {
        requested
            .filter(|m| !m.is_empty())
            .or(self.deployment)
            .unwrap_or(DEFAULT_MODEL)
    }
}

fn answer(status: StatusCode, body: impl Into<SimBody>) -> Outcome {
    Outcome::Answer(respond::json(status, body))
}
