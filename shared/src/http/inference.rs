//! The inference handlers: read and check the client's request (which application, which
//! operation, what body), forward it, and turn the backend's answer into the client's response.

use super::error::ApiError;
use super::request_id::RequestId;
use crate::forward::{self, Forwarded};
use crate::metrics::Recorder;
use crate::state::{AppRoute, Gateway, Snapshot};
use crate::upstream::{Operation, Outbound, Serves, relay_body};
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;
use tracing::Instrument;

/// Backend response headers the client gets to see.
const PASSED_THROUGH: [HeaderName; 2] = [
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
];

const ENDPOINT_ID: HeaderName = HeaderName::from_static("x-endpoint-id");

/// The path parameters of the routes that name the application: its id and, on every route but
/// the Node gateway's `/lb/{app_id}`, the operation (`chat/completions`, `embeddings`, ...).
#[derive(Debug, Deserialize)]
pub struct AppPath {
    app_id: String,
    #[serde(default)]
    operation: Option<String>,
}

/// The v1 surface's path parameter: the operation only (the application is the body's `model`).
#[derive(Debug, Deserialize)]
pub struct V1Path {
    operation: String,
}

/// The only part of the body the gateway reads; parsing it also proves the body is a JSON object.
#[derive(Debug, Deserialize)]
struct Probe<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// The application, on the v1 surface (borrowed from the body unless it has escapes).
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// How the request names its application and operation.
enum Pick {
    /// In the path (`…/lb/{app}`, `…/deployments/{app}/{operation}`); the query may carry the
    /// client's `api-version`.
    Path {
        app_id: String,
        operation: Option<String>,
        uri: Uri,
    },
    /// The v1 surface: the operation in the path, the application in the body's `model`.
    V1 { operation: String },
}

/// `POST .../lb/{app_id}` and its SDK-shaped variants.
pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<AppPath>, PathRejection>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let Path(AppPath { app_id, operation }) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let span = inference_span(&request_id);
    span.record("app", app_id.as_str());
    let pick = Pick::Path {
        app_id,
        operation,
        uri,
    };
    handle_in(gateway, arrived, pick, request_id, headers, body)
        .instrument(span)
        .await
}

/// `POST /openai/v1/{operation}` and `.../lb/openai/v1/{operation}`: Azure's v1 surface, the
/// application named by the body's `model`.
pub async fn handle_v1(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<V1Path>, PathRejection>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let Path(V1Path { operation }) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let span = inference_span(&request_id);
    let pick = Pick::V1 { operation };
    handle_in(gateway, arrived, pick, request_id, headers, body)
        .instrument(span)
        .await
}

/// The span of one inference request; the application, stream flag, endpoint and status are
/// recorded as they become known.
fn inference_span(request_id: &HeaderValue) -> tracing::Span {
    tracing::info_span!(
        "inference",
        app = tracing::field::Empty,
        request_id = ?request_id,
        stream = tracing::field::Empty,
        endpoint = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

/// One request on one snapshot. An error answered to a known application's client (429, 502,
/// 504, other 4xx) is counted in that application's metrics.
async fn handle_in(
    gateway: Arc<Gateway>,
    arrived: std::time::Instant,
    pick: Pick,
    request_id: HeaderValue,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = gateway.snapshot();
    let mut known = None;
    let answer = serve(
        &gateway, &snapshot, &mut known, arrived, pick, request_id, headers, body,
    )
    .await;
    if let (Err(e), Some(route)) = (&answer, known)
        && let Some(first) = route.endpoints.first()
    {
        first.metrics.gateway_answer(e.status_code());
    }
    answer
}

#[allow(clippy::too_many_arguments)]
async fn serve<'s>(
    gateway: &Gateway,
    snapshot: &'s Snapshot,
    known: &mut Option<&'s AppRoute>,
    arrived: std::time::Instant,
    pick: Pick,
    request_id: HeaderValue,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (named, tail, uri) = match pick {
        Pick::Path {
            app_id,
            operation,
            uri,
        } => (
            Some(application(snapshot, &app_id, known)?),
            operation,
            Some(uri),
        ),
        Pick::V1 { operation } => (None, Some(operation), None),
    };
    let asked = match tail {
        None => None,
        Some(tail) => Some(Operation::from_path(&tail).ok_or(ApiError::UnknownOperation(tail))?),
    };
    let content_type = untouched_type(&headers);
    let body = read_body(&headers, body, gateway.settings.max_body_bytes).await?;
    let probe: Option<Probe> = match content_type {
        None => {
            Some(serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?)
        }
        Some(_) => None,
    };
    let route = match named {
        Some(route) => route,
        None => {
            let model = probe.as_ref().and_then(|p| p.model.as_deref());
            let route = application(snapshot, model.ok_or(ApiError::ModelRequired)?, known)?;
            tracing::Span::current().record("app", &*route.app.id);
            route
        }
    };
    let serves = Serves::of(route.app.endpoints.iter().map(|e| e.target));
    let operation = serves
        .resolve(asked)
        .map_err(|served| ApiError::OperationNotServed {
            app: route.app.id.to_string(),
            serves: served,
            asked: asked.unwrap_or(served),
        })?;
    let (stream, client_wants_usage) = match probe {
        Some(probe) => (
            probe.stream.unwrap_or(false),
            probe
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        ),
        None => (false, false),
    };
    tracing::Span::current().record("stream", stream);
    // Streams are counted in tokens too: ask for the usage chunk when the client did not, and
    // keep it from that client. Only chat and legacy completions take the option; a request
    // whose operation is unknown (a fixed URI called as is) is asked as it always was.
    let strip_usage =
        stream && !client_wants_usage && operation.is_none_or(Operation::takes_stream_options);
    let body = match strip_usage {
        true => crate::upstream::usage_chunk::request_usage(&body).unwrap_or(body),
        false => body,
    };
    // A stream that ends without its usage chunk has its tokens counted from the body sent and
    // the deltas relayed: the body is kept (a refcounted handle, not a copy) until then.
    let estimate_from =
        (stream && operation.is_none_or(Operation::takes_stream_options)).then(|| body.clone());
    let outbound = Outbound {
        operation,
        api_version: (serves == Serves::Client).then(|| {
            uri.as_ref()
                .and_then(client_api_version)
                .unwrap_or_else(|| gateway.settings.default_api_version.as_str().into())
        }),
        content_type,
    };
    let forwarded = forward::forward(
        route,
        &outbound,
        body,
        &request_id,
        gateway.settings.waits(),
        &gateway.shared,
    )
    .await;
    let Forwarded {
        response,
        endpoint: index,
        in_flight,
        started,
        upstream: upstream_time,
    } = forwarded?;

    let endpoint = &route.app.endpoints[index];
    let status = response.status();
    let span = tracing::Span::current();
    span.record("endpoint", &*endpoint.id);
    span.record("status", status.as_u16());
    let mut headers = HeaderMap::with_capacity(8);
    let upstream = response.headers();
    if stream && status.is_success() {
        // Whatever the backend declares, a stream is relayed as server-sent events.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        let content_type = upstream
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_TYPE, content_type);
        if let Some(length) = upstream.get(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, length.clone());
        }
    }
    for name in &PASSED_THROUGH {
        if let Some(value) = upstream.get(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(ENDPOINT_ID, endpoint.id_header.clone());
    let mut recorder = Recorder::new(
        route.endpoints[index].metrics.clone(),
        status,
        stream,
        started,
        in_flight,
    );
    if let Some(request) = estimate_from {
        recorder.estimate_from(request);
    }
    let mut out = Response::new(relay_body(
        response,
        endpoint.timeouts.idle,
        recorder,
        strip_usage && status.is_success(),
    ));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    gateway
        .overhead
        .observe(arrived.elapsed().saturating_sub(upstream_time));
    Ok(out)
}

/// The configured, active application `app_id` (noted in `known` if configured at all, so that
/// an error answered to its client is counted).
fn application<'s>(
    snapshot: &'s Snapshot,
    app_id: &str,
    known: &mut Option<&'s AppRoute>,
) -> Result<&'s Arc<AppRoute>, ApiError> {
    let route = snapshot
        .app(app_id)
        .ok_or_else(|| ApiError::UnknownApp(app_id.to_owned()))?;
    *known = Some(route);
    if !route.app.active {
        return Err(ApiError::InactiveApp(app_id.to_owned()));
    }
    Ok(route)
}

/// The client's content type when its body is to pass untouched: multipart (audio uploads) and
/// binary types. `None` for everything else, which is read as JSON as it always was, including
/// bodies that declare no type or a form type (what `curl -d` sends).
fn untouched_type(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let bytes = value.as_bytes();
    let starts = |prefix: &[u8]| {
        bytes
            .get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    };
    let untouched = starts(b"multipart/")
        || starts(b"application/octet-stream")
        || starts(b"audio/")
        || starts(b"image/")
        || starts(b"video/");
    untouched.then(|| value.clone())
}

/// The `api-version` the client's query names, if any.
fn client_api_version(uri: &Uri) -> Option<Box<str>> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(name, _)| name == "api-version")
        .map(|(_, value)| value.into())
}

/// The whole request body, refusing more than `limit` bytes (before reading, when the client
/// declared its length).
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}
