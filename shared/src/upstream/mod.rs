//! Calling one backend endpoint: the HTTP client, the outbound request, classifying the answer,
//! and relaying a body to the client piece by piece.
//!
//! One attempt is one call to one endpoint. Deciding which endpoint to try next is
//! [`crate::forward`]'s job; this module only reports what happened.

mod client;
mod relay;
pub mod usage_chunk;

pub use client::ClientCache;
pub use relay::relay_body;

use crate::config::Endpoint;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use std::time::{Duration, SystemTime};

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// The backend answered with something to give the client as is: a success, or a client
    /// error such as a content-filter 400 (the endpoint is healthy either way).
    Answer(reqwest::Response),
    /// The backend is throttling (429, or 503 naming a wait): skip it for `wait`, or for the
    /// default wait when it named none.
    Throttled { wait: Option<Duration> },
    /// The endpoint failed (connect error, timeout, 5xx, or an auth/route error that another
    /// endpoint may not have); try the next one.
    Failed(Failure),
}

/// Why an endpoint failed, worded for logs and the client's error message (never the URI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Status(StatusCode),
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect => f.write_str("connection failed"),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Status(s) => write!(f, "answered {s}"),
            Failure::Other(e) => write!(f, "request failed: {e}"),
        }
    }
}

/// Send the client's body to `endpoint` and classify the answer.
///
/// The endpoint's configured URI is called as is (its deployment path and `api-version`
/// included), with the endpoint's key as `api-key`. The client's own credentials never travel
/// upstream: only the headers built here are sent.
pub async fn call(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: Bytes,
    request_id: &HeaderValue,
) -> Attempt {
    let send = client
        .post(endpoint.uri.clone())
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .header("api-key", endpoint.key.header_value().clone())
        .header("x-ms-client-request-id", request_id.clone())
        .body(body)
        .send();
    let response = match tokio::time::timeout(endpoint.timeouts.response, send).await {
        Err(_) => return Attempt::Failed(Failure::Timeout),
        Ok(Err(e)) if e.is_timeout() => return Attempt::Failed(Failure::Timeout),
        Ok(Err(e)) if e.is_connect() => return Attempt::Failed(Failure::Connect),
        Ok(Err(e)) => return Attempt::Failed(Failure::Other(error_chain(&e))),
        Ok(Ok(response)) => response,
    };
    classify(response)
}

/// Map a backend status onto what the gateway does next.
fn classify(response: reqwest::Response) -> Attempt {
    let status = response.status();
    match status.as_u16() {
        200..=299 => Attempt::Answer(response),
        429 => Attempt::Throttled {
            wait: crate::throttle::parse_wait(response.headers(), SystemTime::now()),
        },
        503 => match crate::throttle::parse_wait(response.headers(), SystemTime::now()) {
            Some(wait) => Attempt::Throttled { wait: Some(wait) },
            None => Attempt::Failed(Failure::Status(status)),
        },
        // A key or deployment problem on this endpoint, or a backend-side timeout: another
        // endpoint may well succeed.
        401 | 403 | 404 | 408 => Attempt::Failed(Failure::Status(status)),
        // Other client errors (400, 422 content filters, 413, ...) are the client's to see.
        400..=499 => Attempt::Answer(response),
        _ => Attempt::Failed(Failure::Status(status)),
    }
}

/// An error and its causes on one line, for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
