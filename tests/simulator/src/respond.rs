//! Building responses and the headers every answer carries.
//!
//! Real Azure answers carry request ids and rate-limit headroom, which the
//! gateway logs and may route on; `x-sim-name` lets a test see which of
//! several simulators answered. All fixed header names and values are
//! constants, so stamping an answer costs little more than the request id.

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use uuid::Uuid;

use crate::active::Active;
use crate::behaviour::RetryAfterHeader;
use crate::body::SimBody;
use crate::retry_after;
use crate::shared::Shared;

pub(crate) const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const APIM_REQUEST_ID: HeaderName = HeaderName::from_static("apim-request-id");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const X_SIM_NAME: HeaderName = HeaderName::from_static("x-sim-name");

/// Headroom advertised when no request budget is set.
pub(crate) const UNLIMITED_REQUESTS: HeaderValue = HeaderValue::from_static("10000");
/// Headroom advertised when no token budget is set.
pub(crate) const UNLIMITED_TOKENS: HeaderValue = HeaderValue::from_static("10000000");

/// The identity of one answer.
pub(crate) struct RequestId(Uuid);

impl RequestId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// 32 lower-case hex digits, for response object ids.
    pub fn hex<'b>(&self, buf: &'b mut [u8; 32]) -> &'b str {
        self.0.simple().encode_lower(buf)
    }

    fn header(&self) -> Option<HeaderValue> {
        let mut buf = [0; 36];
        HeaderValue::from_str(self.0.hyphenated().encode_lower(&mut buf)).ok()
    }
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: impl Into<SimBody>) -> Response<SimBody> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<SimBody> {
    let mut response = Response::new(SimBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, TEXT_PLAIN);
    response
}

/// An empty answer.
pub(crate) fn empty(status: StatusCode) -> Response<SimBody> {
    let mut response = Response::new(SimBody::empty());
    *response.status_mut() = status;
    response
}

/// A 429 with the retry hint for `retry_ms` in the `kind` dialect.
pub(crate) fn throttled(
    kind: RetryAfterHeader,
    retry_ms: u64,
    body: bytes::Bytes,
) -> Response<SimBody> {
    let mut response = json(StatusCode::TOO_MANY_REQUESTS, body);
    retry_after::insert(response.headers_mut(), kind, retry_ms);
    response
}

/// Adds the headers every answer carries.
pub(crate) fn stamp(
    response: &mut Response<SimBody>,
    shared: &Shared,
    active: &Active,
    id: &RequestId,
) {
    let (requests, tokens) = active.remaining();
    let headers = response.headers_mut();
    if let Some(value) = id.header() {
        headers.insert(X_REQUEST_ID, value.clone());
        headers.insert(APIM_REQUEST_ID, value);
    }
    headers.insert(
        REMAINING_REQUESTS,
        requests.map_or(UNLIMITED_REQUESTS, HeaderValue::from),
    );
    headers.insert(
        REMAINING_TOKENS,
        tokens.map_or(UNLIMITED_TOKENS, HeaderValue::from),
    );
    headers.insert(X_SIM_NAME, shared.name_header.clone());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimOptions;
    use crate::behaviour::Behaviour;

    #[test]
    fn stamped_headers() {
        let shared = Shared::new(&SimOptions {
            name: Some("west".into()),
            ..SimOptions::default()
        });
        let mut r = json(StatusCode::OK, "{}");
        stamp(&mut r, &shared, &shared.active.load(), &RequestId::new());
        let h = r.headers();
        assert_eq!(h["x-request-id"].len(), 36);
        assert_eq!(h["x-request-id"], h["apim-request-id"]);
        assert_eq!(h["x-ratelimit-remaining-requests"], UNLIMITED_REQUESTS);
        assert_eq!(h["x-ratelimit-remaining-tokens"], UNLIMITED_TOKENS);
        assert_eq!(h["x-sim-name"], "west");
        assert_eq!(h["content-type"], "application/json");

        let budgeted = Active::new(
            Behaviour {
                rpm: Some(5),
                ..Behaviour::default()
            },
            "west",
        );
        let mut r = empty(StatusCode::NO_CONTENT);
        stamp(&mut r, &shared, &budgeted, &RequestId::new());
        assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "5");
        assert_eq!(
            r.headers()["x-ratelimit-remaining-tokens"],
            UNLIMITED_TOKENS
        );
    }

    #[test]
    fn request_ids_are_unique_hex() {
        let (a, b) = (RequestId::new(), RequestId::new());
        let (mut x, mut y) = ([0; 32], [0; 32]);
        assert_ne!(a.hex(&mut x), b.hex(&mut y));
        assert!(a.hex(&mut x).chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn throttled_answers_carry_the_hint() {
        let r = throttled(
            RetryAfterHeader::Seconds,
            2500,
            bytes::Bytes::from_static(b"{}"),
        );
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "3");
    }
}
