//! The admin function: metrics (JSON and Prometheus), live reconfiguration and closing circuits.
//! The routes that change state take the gateway key (`API_GATEWAY_KEY`) as a bearer token and
//! are off (403) without one.

use super::error::ApiError;
use crate::config;
use crate::env::ProcessEnv;
use crate::metrics::{prometheus, report};
use crate::state::Gateway;
use crate::throttle::now_ms;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;

/// This instance's counters written first, then every instance's windows read back.
async fn rows(gateway: &Gateway) -> Result<report::ByEndpoint, ApiError> {
    gateway.flush_metrics().await;
    let windows = gateway.settings.metrics_windows();
    let span = windows.interval.as_millis() as u64 * u64::from(windows.history.saturating_sub(1));
    let since = windows.start_of(now_ms()).saturating_sub(span);
    let rows = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        gateway.shared.store.metrics(since),
    )
    .await
    .map_err(|_| ApiError::StoreUnavailable("no answer in 5 s".into()))?
    .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    Ok(report::by_endpoint(rows))
}

/// `GET {prefix}/metrics`.
pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let rows = rows(&gateway).await?;
    Ok(Json(report::gateway(&gateway, &rows)))
}

/// `GET {prefix}/metrics/{app_id}`.
pub async fn app_metrics(
    State(gateway): State<Arc<Gateway>>,
    Path(app_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = gateway.snapshot();
    let route = snapshot
        .app(&app_id)
        .ok_or_else(|| ApiError::UnknownApp(app_id.clone()))?;
    let rows = rows(&gateway).await?;
    Ok(Json(report::application(&gateway, route, &rows)))
}

/// `GET /metrics` (Prometheus text 0.0.4): this instance's counters written first, then the
/// totals of every instance read back.
pub async fn prometheus(State(gateway): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    gateway.flush_metrics().await;
    let totals = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        gateway.shared.store.metric_totals(),
    )
    .await
    .map_err(|_| ApiError::StoreUnavailable("no answer in 5 s".into()))?
    .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    let text = prometheus::render(&gateway, &totals.into_iter().collect());
    let content_type = HeaderValue::from_static(prometheus::CONTENT_TYPE);
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// `POST {prefix}/reconfig`: a new configuration (JSON body) or the file re-read (empty body),
/// validated completely before anything changes, then stored as a new version that every
/// instance picks up.
pub async fn reconfig(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&gateway, &headers, "reconfig")?;
    let body = http_body_util::Limited::new(body, gateway.settings.max_body_bytes)
        .collect()
        .await
        .map_err(|_| ApiError::BodyTooLarge {
            limit: gateway.settings.max_body_bytes,
        })?
        .to_bytes();
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        let path = gateway.settings.config_file.as_ref().ok_or_else(|| {
            ApiError::BodyRead(
                "the body is empty and no configuration file is set to re-read".into(),
            )
        })?;
        tokio::fs::read(path)
            .await
            .map_err(|e| ApiError::BodyRead(format!("cannot read {}: {e}", path.display())))?
    } else {
        body.to_vec()
    };
    let value: Value = serde_json::from_slice(&text).map_err(|e| {
        ApiError::InvalidConfig(config::ConfigError::Syntax {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    })?;
    let validated = config::validate(value.clone(), &ProcessEnv)?;
    let applications = validated.applications.len();
    let version = gateway
        .apply_config(value, validated)
        .await
        .map_err(|e| ApiError::StoreUnavailable(e.to_string()))?;
    tracing::info!(version, applications, "configuration replaced");
    Ok(Json(
        json!({"status": "reconfigured", "version": version, "applications": applications}),
    ))
}

/// Check the bearer key of a state-changing admin route (`what` names it in the log).
fn authorize(gateway: &Gateway, headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    let key = gateway
        .settings
        .gateway_key
        .as_ref()
        .ok_or(ApiError::AdminDisabled)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if !key.matches(presented) {
        tracing::warn!(route = what, "admin request refused: wrong gateway key");
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

/// `POST {prefix}/circuits/{app_id}/{endpoint_id}/close`: close one endpoint's circuit here and,
/// through the shared store, on every instance.
pub async fn close_circuit(
    State(gateway): State<Arc<Gateway>>,
    Path((app_id, endpoint_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&gateway, &headers, "circuits")?;
    let snapshot = gateway.snapshot();
    let route = snapshot
        .app(&app_id)
        .ok_or_else(|| ApiError::UnknownApp(app_id.clone()))?;
    let Some(index) = route
        .app
        .endpoints
        .iter()
        .position(|ep| *ep.id == *endpoint_id)
    else {
        return Err(ApiError::UnknownEndpoint {
            app: app_id,
            endpoint: endpoint_id,
        });
    };
    let throttle = &route.endpoints[index].throttle;
    let was_open = throttle.circuit.wait_ms(now_ms()).is_some();
    throttle.circuit.close();
    let published = gateway
        .shared
        .close_circuit(throttle.key.clone(), now_ms())
        .await;
    tracing::info!(app = %app_id, endpoint = %endpoint_id, was_open, published, "circuit closed by an operator");
    Ok(Json(json!({
        "appId": app_id,
        "endpointId": endpoint_id,
        "state": "closed",
        "wasOpen": was_open,
        // false: the shared store did not answer; the closure is queued and reaches the other
        // instances when it does.
        "published": published,
    })))
}
