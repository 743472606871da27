//! `instanceinfo` and `healthz`: what this instance is and runs, never a key.

use crate::settings::LogFormat;
use crate::state::Gateway;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::Arc;

/// `GET {prefix}/instanceinfo`.
pub async fn instance_info(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let snapshot = gateway.snapshot();
    let s = &gateway.settings;
    let applications: Vec<Value> = snapshot
        .config
        .applications
        .iter()
        .map(|app| {
            let endpoints: Vec<Value> = app
                .endpoints
                .iter()
                .enumerate()
                .map(|(priority, ep)| {
                    json!({
                        "priority": priority,
                        "id": &*ep.id,
                        "uri": &*ep.display_uri,
                        "rpm": ep.rpm,
                        "weight": ep.weight,
                        "timeouts": {
                            "connectMs": ep.timeouts.connect.as_millis() as u64,
                            "responseMs": ep.timeouts.response.as_millis() as u64,
                            "idleMs": ep.timeouts.idle.as_millis() as u64,
                        },
                    })
                })
                .collect();
            json!({
                "appId": &*app.id,
                "description": app.description,
                "appType": app.app_type.as_str(),
                "isActive": app.active,
                "endpointRouterType": app.strategy.as_str(),
                "cacheSettings": app.cache_settings,
                "memorySettings": app.memory_settings,
                "endpoints": endpoints,
            })
        })
        .collect();
    Json(json!({
        "serverName": s.name,
        "serverId": snapshot.config.server_id,
        "serverVersion": env!("CARGO_PKG_VERSION"),
        "serverConfig": {
            "host": s.host.to_string(),
            "port": s.port,
            "env": s.env_name,
            "configFile": s.config_file.as_ref().map(|p| p.display().to_string()),
            "maxBodyBytes": s.max_body_bytes,
            "defaultRetryAfterSecs": s.default_retry_after.as_secs(),
            "maxRetryAfterSecs": s.max_retry_after.as_secs(),
            "defaultApiVersion": s.default_api_version,
            "shutdownGraceSecs": s.shutdown_grace.as_secs_f64(),
            "headerTimeoutSecs": s.header_timeout.as_secs_f64(),
            "bodyTimeoutSecs": s.body_timeout.as_secs_f64(),
            "keepaliveSecs": s.keepalive.as_secs_f64(),
            "logLevel": s.log_level,
            "logFormat": match s.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            "store": gateway.shared.store.kind(),
            "syncIntervalMs": s.sync_interval.as_millis() as u64,
            "metricsIntervalMins": s.metrics_interval.as_secs_f64() / 60.0,
            "metricsHistory": s.metrics_history,
            "metricsFlushSecs": s.metrics_flush.as_secs_f64(),
            // Whether the state-changing admin routes are on; the key itself is never shown.
            "adminKeySet": s.gateway_key.is_some(),
        },
        "apiGatewayUri": s.prefix(),
        "endpointUri": format!("{}/instanceinfo", s.prefix()),
        "aiApplications": applications,
        "serverStartDate": httpdate::fmt_http_date(gateway.started_at),
        "uptimeSecs": gateway.started.elapsed().as_secs(),
        "status": "OK",
    }))
}

/// `GET {prefix}/healthz`: always 200 while the process serves (a database outage degrades
/// features, not the gateway), with the shared store's state.
pub async fn healthz(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
    let up = gateway.shared.is_up();
    Json(json!({
        "status": if up { "OK" } else { "Degraded" },
        "serverName": gateway.settings.name,
        "instance": gateway.settings.instance_id(),
        "serverVersion": env!("CARGO_PKG_VERSION"),
        "uptimeSecs": gateway.started.elapsed().as_secs(),
        "store": { "kind": gateway.shared.store.kind(), "state": if up { "up" } else { "down" } },
        "configVersion": gateway.config_version(),
    }))
}
