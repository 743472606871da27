//! The inference handler: read and check the client's request, forward it, and turn the
//! backend's answer into the client's response.

use super::error::ApiError;
use super::request_id::RequestId;
use crate::forward::{self, Forwarded};
use crate::metrics::Recorder;
use crate::state::Gateway;
use crate::upstream::relay_body;
use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use std::sync::Arc;
use tracing::Instrument;

/// Backend response headers the client gets to see.
const PASSED_THROUGH: [HeaderName; 2] = [
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
];

const ENDPOINT_ID: HeaderName = HeaderName::from_static("x-endpoint-id");

/// The path parameters of every inference route (the rest of the path, if any, is not used:
/// each endpoint's configured URI says where requests go).
#[derive(Debug, Deserialize)]
pub struct AppPath {
    app_id: String,
}

/// The only part of the body the gateway reads; parsing it also proves the body is a JSON object.
#[derive(Debug, Deserialize)]
struct Probe {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// `POST .../lb/{app_id}` and its SDK-shaped variants.
pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<AppPath>, PathRejection>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let Path(AppPath { app_id }) = path.map_err(|e| ApiError::BadPath(e.body_text()))?;
    let span = tracing::info_span!(
        "inference",
        app = %app_id,
        request_id = ?request_id,
        stream = tracing::field::Empty,
        endpoint = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    handle_in(gateway, arrived, app_id, request_id, headers, body)
        .instrument(span)
        .await
}

async fn handle_in(
    gateway: Arc<Gateway>,
    arrived: std::time::Instant,
    app_id: String,
    request_id: HeaderValue,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let snapshot = gateway.snapshot();
    let route = snapshot
        .app(&app_id)
        .ok_or_else(|| ApiError::UnknownApp(app_id.clone()))?;
    if !route.app.active {
        return Err(ApiError::InactiveApp(app_id));
    }
    let body = read_body(&headers, body, gateway.settings.max_body_bytes).await?;
    let probe: Probe =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let stream = probe.stream.unwrap_or(false);
    tracing::Span::current().record("stream", stream);
    // Streams are counted in tokens too: ask for the usage chunk when the client did not, and
    // keep it from that client.
    let client_wants_usage = probe
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let strip_usage = stream && !client_wants_usage;
    let body = match strip_usage {
        true => crate::upstream::usage_chunk::request_usage(&body).unwrap_or(body),
        false => body,
    };

    let Forwarded {
        response,
        endpoint: index,
        in_flight,
        started,
        upstream: upstream_time,
    } = forward::forward(
        route,
        body,
        &request_id,
        gateway.settings.default_retry_after,
        &gateway.shared,
    )
    .await?;

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
    let recorder = Recorder::new(
        route.endpoints[index].metrics.clone(),
        status,
        stream,
        started,
        in_flight,
    );
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
