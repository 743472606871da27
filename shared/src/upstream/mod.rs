//! Calling one backend endpoint: the HTTP client, the outbound request, classifying the answer,
//! and relaying a body to the client piece by piece.
//!
//! One attempt is one call to one endpoint. Deciding which endpoint to try next is
//! [`crate::forward`]'s job; this module only reports what happened.

mod client;
mod model_field;
pub mod operation;
mod relay;
pub mod usage_chunk;

pub use client::ClientCache;
pub use model_field::set_model;
pub use operation::{Operation, Serves, Target};
pub use relay::relay_body;

use crate::config::Endpoint;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use reqwest::Url;
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

/// Why an endpoint failed, in a fixed, low-cardinality vocabulary (the words clients see in a
/// 502 body and metrics may use as labels). The detail, which can name the backend's address,
/// goes only to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made (refused, unreachable, DNS, TLS set-up).
    Connect,
    /// No response headers within the endpoint's `responseMs`.
    Timeout,
    /// The connection was closed or reset before a whole response head arrived.
    Reset,
    /// The backend spoke something that is not valid HTTP.
    Protocol,
    /// The backend answered with a status that means "try another endpoint".
    Status(StatusCode),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect => f.write_str("connect"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Reset => f.write_str("reset"),
            Failure::Protocol => f.write_str("protocol"),
            Failure::Status(s) => write!(f, "status {}", s.as_u16()),
        }
    }
}

impl Failure {
    /// The failure an HTTP client error stands for.
    fn of(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            return Failure::Timeout;
        }
        if e.is_connect() {
            return Failure::Connect;
        }
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                if matches!(
                    io.kind(),
                    ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
                ) {
                    return Failure::Reset;
                }
            }
            let text = s.to_string();
            if text.contains("connection closed") || text.contains("incomplete message") {
                return Failure::Reset;
            }
            source = s.source();
        }
        Failure::Protocol
    }
}

/// What one request needs from [`call`] besides its body: the operation, the client's
/// `api-version`, and the body's content type. The default is a JSON body sent as is to a URI
/// that names its operation (the Node gateway's request).
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// The operation the request is for (a base endpoint appends it; `chat/completions` when
    /// `None`). Fixed URIs are called as is whatever it is.
    pub operation: Option<Operation>,
    /// The `api-version` for deployment bases whose URI names none: the client's, else the
    /// gateway's default.
    pub api_version: Option<Box<str>>,
    /// The client's content type when the body is not JSON (multipart audio): sent with the
    /// body, which is never rewritten. `None`: a JSON body.
    pub content_type: Option<HeaderValue>,
}

/// Send the client's body to `endpoint` and classify the answer.
///
/// Where it goes is the endpoint's [`Target`]: a URI that names its operation is called as is
/// (its deployment path and `api-version` included); a deployment or v1 base gets the request's
/// operation appended (see [`operation::url`]). An endpoint that names its `model` gets it in a
/// JSON body. The endpoint's key goes as `api-key`; the client's own credentials never travel
/// upstream: only the headers built here are sent.
pub async fn call(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    outbound: &Outbound,
    body: &Bytes,
    request_id: &HeaderValue,
) -> Attempt {
    let prepared = prepare(endpoint, outbound, body);
    send(client, endpoint, prepared, request_id).await
}

/// One attempt's URL, content type and body.
#[derive(Debug)]
struct Prepared {
    url: Url,
    content_type: HeaderValue,
    body: Bytes,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

fn prepare(endpoint: &Endpoint, outbound: &Outbound, body: &Bytes) -> Prepared {
    let url = operation::url(
        &endpoint.uri,
        endpoint.target,
        outbound.operation.unwrap_or(Operation::ChatCompletions),
        outbound.api_version.as_deref(),
    );
    let (content_type, body) = match (&outbound.content_type, &endpoint.model) {
        (Some(other), _) => (other.clone(), body.clone()),
        (None, Some(model)) => (JSON, set_model(body, model).unwrap_or_else(|| body.clone())),
        (None, None) => (JSON, body.clone()),
    };
    Prepared {
        url,
        content_type,
        body,
    }
}

async fn send(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    prepared: Prepared,
    request_id: &HeaderValue,
) -> Attempt {
    let send = client
        .post(prepared.url)
        .header(header::CONTENT_TYPE, prepared.content_type)
        .header("api-key", endpoint.key.header_value().clone())
        .header("x-ms-client-request-id", request_id.clone())
        .body(prepared.body)
        .send();
    let response = match tokio::time::timeout(endpoint.timeouts.response, send).await {
        Err(_) => return Attempt::Failed(Failure::Timeout),
        Ok(Err(e)) => {
            let failure = Failure::of(&e);
            // The client's error text names the URL it called; the log gets the display form.
            tracing::debug!(
                endpoint = %endpoint.id,
                uri = %endpoint.display_uri,
                %failure,
                detail = %error_chain(&e.without_url()),
                "backend call failed"
            );
            return Attempt::Failed(failure);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn endpoint(ep: serde_json::Value) -> Endpoint {
        let env: [(&str, &str); 0] = [];
        let config = crate::config::validate(
            json!({"applications": [{"appId": "a", "appType": "azure_oai", "endpoints": [ep]}]}),
            &env,
        )
        .unwrap();
        let mut apps = config.applications;
        Arc::try_unwrap(apps.remove(0)).unwrap().endpoints.remove(0)
    }

    const CHAT: &str = "https://r/openai/deployments/gpt/chat/completions?api-version=2024-02-01";
    const BODY: &[u8] = br#"{"messages":[],"model":"chatbot"}"#;

    #[test]
    fn a_fixed_uri_with_a_json_body_is_sent_as_before() {
        let ep = endpoint(json!({"uri": CHAT, "apikey": "k"}));
        let body = Bytes::from_static(BODY);
        let p = prepare(&ep, &Outbound::default(), &body);
        assert_eq!(p.url.as_str(), CHAT);
        assert_eq!(p.content_type, "application/json");
        assert_eq!(p.body.as_ptr(), body.as_ptr(), "not copied");
        // Whatever the client's operation: a fixed URI is called as is.
        let embeddings = Outbound {
            operation: Some(Operation::Embeddings),
            api_version: Some("2024-10-21".into()),
            content_type: None,
        };
        assert_eq!(prepare(&ep, &embeddings, &body).url.as_str(), CHAT);
    }

    #[test]
    fn a_deployment_base_gets_the_operation_and_api_version() {
        let ep = endpoint(json!({"uri": "https://r/openai/deployments/emb", "apikey": "k"}));
        let outbound = Outbound {
            operation: Some(Operation::Embeddings),
            api_version: Some("2024-10-21".into()),
            content_type: None,
        };
        let p = prepare(&ep, &outbound, &Bytes::from_static(BODY));
        assert_eq!(
            p.url.as_str(),
            "https://r/openai/deployments/emb/embeddings?api-version=2024-10-21"
        );
        let p = prepare(&ep, &Outbound::default(), &Bytes::from_static(BODY));
        assert_eq!(
            p.url.as_str(),
            "https://r/openai/deployments/emb/chat/completions"
        );
    }

    #[test]
    fn an_endpoint_model_is_set_in_json_bodies_only() {
        let ep =
            endpoint(json!({"uri": "https://r/openai/v1", "apikey": "k", "model": "gpt-4o-mini"}));
        let outbound = Outbound {
            operation: Some(Operation::Responses),
            ..Outbound::default()
        };
        let p = prepare(&ep, &outbound, &Bytes::from_static(BODY));
        assert_eq!(p.url.as_str(), "https://r/openai/v1/responses");
        assert_eq!(&p.body[..], br#"{"messages":[],"model":"gpt-4o-mini"}"#);
        let multipart = HeaderValue::from_static("multipart/form-data; boundary=xyz");
        let audio = Outbound {
            operation: Some(Operation::AudioTranscriptions),
            content_type: Some(multipart.clone()),
            ..Outbound::default()
        };
        let form = Bytes::from_static(b"--xyz\r\n...--xyz--\r\n");
        let p = prepare(&ep, &audio, &form);
        assert_eq!((p.content_type, &p.body[..]), (multipart, &form[..]));
    }
}
