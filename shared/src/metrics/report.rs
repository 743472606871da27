//! Turning the stored window rows into the Node gateway's metrics JSON, summed over all
//! instances, with additions: percentiles, time to first token, circuit state and remaining
//! budget, answers whose client went away (`clientCancelledApiCalls`), tokens the gateway
//! estimated for streams without usage (`estimatedPromptTokens`, `estimatedCompletionTokens`)
//! and, per application, the gateway's own answers (`gatewayAnswers`). The Prometheus text is
//! built from the totals instead ([`super::prometheus`]).

use crate::config::Application;
use crate::state::{AppRoute, Gateway};
use crate::store::{Counters, EndpointKey, GATEWAY_ENDPOINT, MetricsRow};
use crate::throttle::now_ms;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Stored rows by endpoint, each endpoint's windows in time order.
pub type ByEndpoint = BTreeMap<EndpointKey, Vec<(u64, Counters)>>;

pub fn by_endpoint(rows: Vec<MetricsRow>) -> ByEndpoint {
    let mut map: ByEndpoint = BTreeMap::new();
    for row in rows {
        map.entry(row.key)
            .or_default()
            .push((row.window_start_ms, row.counters));
    }
    for windows in map.values_mut() {
        windows.sort_by_key(|(start, _)| *start);
    }
    map
}

fn iso(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

fn ms_or_null(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 10.0).round() / 10.0))
}

/// The Node gateway's per-window counters, plus our additions. Token figures (`kInferenceTokens`,
/// throughput) count reported and estimated tokens together; `promptTokens` and
/// `completionTokens` are the reported ones, the estimates are beside them.
fn collected(c: &Counters, interval_mins: f64) -> Value {
    let success = c.succeeded();
    let tokens = c.all_tokens() as f64;
    json!({
        "apiCalls": success,
        "failedApiCalls": c.failed + c.throttled + c.filtered,
        "throttledApiCalls": c.throttled,
        "filteredApiCalls": c.filtered,
        "clientCancelledApiCalls": c.cancelled,
        "totalApiCalls": c.calls,
        "kInferenceTokens": tokens / 1000.0,
        "promptTokens": c.prompt_tokens,
        "completionTokens": c.completion_tokens,
        "estimatedPromptTokens": c.estimated_prompt_tokens,
        "estimatedCompletionTokens": c.estimated_completion_tokens,
        "throughput": {
            "kTokensPerWindow": tokens / 1000.0,
            "avgTokensPerCall": if success > 0 { tokens / success as f64 } else { 0.0 },
            "tokensPerMinute": tokens / interval_mins,
            "requestsPerMinute": c.calls as f64 / interval_mins,
        },
        "latency": {
            "avgResponseTimeSec": if c.latency_count > 0 { c.latency_ms_sum as f64 / c.latency_count as f64 / 1000.0 } else { 0.0 },
            "p50Ms": ms_or_null(c.latency.quantile(0.50)),
            "p95Ms": ms_or_null(c.latency.quantile(0.95)),
            "p99Ms": ms_or_null(c.latency.quantile(0.99)),
        },
        "timeToFirstToken": {
            "streams": c.ttft_count,
            "avgMs": if c.ttft_count > 0 { json!(c.ttft_ms_sum as f64 / c.ttft_count as f64) } else { Value::Null },
            "p50Ms": ms_or_null(c.ttft.quantile(0.50)),
            "p95Ms": ms_or_null(c.ttft.quantile(0.95)),
            "p99Ms": ms_or_null(c.ttft.quantile(0.99)),
        },
    })
}

/// The `endpointMetrics` of one application, and its current-window totals.
fn endpoint_metrics(
    gateway: &Gateway,
    route: &AppRoute,
    rows: &ByEndpoint,
    now: u64,
) -> (Vec<Value>, Counters) {
    let windows = gateway.settings.metrics_windows();
    let current_start = windows.start_of(now);
    let interval_mins = windows.interval.as_secs_f64() / 60.0;
    let mut app_total = Counters::default();
    let endpoints = route
        .app
        .endpoints
        .iter()
        .zip(&route.endpoints)
        .enumerate()
        .map(|(priority, (ep, live))| {
            let history = rows.get(&live.throttle.key).map(Vec::as_slice).unwrap_or_default();
            let current = history
                .iter()
                .find(|(start, _)| *start == current_start)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            app_total.add(&current);
            let mut metrics = collected(&current, interval_mins);
            let mut items = Map::new();
            for (i, (start, c)) in history.iter().enumerate() {
                items.insert(
                    i.to_string(),
                    json!({"collectionTime": iso(*start), "collectedMetrics": collected(c, interval_mins)}),
                );
            }
            if let Value::Object(m) = &mut metrics {
                m.insert("threadCount".into(), json!(live.throttle.in_flight()));
                m.insert("totalCost".into(), json!("0.000000"));
                m.insert("feedbackCount".into(), json!(0));
                m.insert("history".into(), Value::Object(items));
            }
            let wait = live.throttle.circuit.wait_ms(now);
            json!({
                "id": &*ep.id,
                "endpoint": &*ep.display_uri,
                "priority": priority,
                "metrics": metrics,
                "circuit": {
                    "state": if wait.is_some() { "open" } else { "closed" },
                    "openUntil": wait.map(|_| iso(live.throttle.circuit.until_ms())),
                    "retryAfterMs": wait,
                },
                "rateLimit": {
                    "rpm": ep.rpm,
                    "remaining": live.throttle.rpm().map(|l| l.remaining(now)),
                },
            })
        })
        .collect();
    (endpoints, app_total)
}

/// The current window's answers of the gateway itself to `app`'s clients.
fn gateway_answers(gateway: &Gateway, app: &str, rows: &ByEndpoint, now: u64) -> Value {
    let current_start = gateway.settings.metrics_windows().start_of(now);
    let c = rows
        .get(&EndpointKey::new(app, GATEWAY_ENDPOINT))
        .and_then(|w| w.iter().find(|(start, _)| *start == current_start))
        .map(|(_, c)| *c)
        .unwrap_or_default();
    json!({"429": c.gateway_429, "502": c.gateway_502, "504": c.gateway_504, "4xx": c.gateway_4xx})
}

fn cache_metrics(_app: &Application) -> Value {
    // The semantic cache arrives in a later issue; its counters read zero until then.
    json!({"hits": 0, "misses": 0, "avgScore": null})
}

/// `GET {prefix}/metrics/{appId}`.
pub fn application(gateway: &Gateway, route: &AppRoute, rows: &ByEndpoint) -> Value {
    let now = now_ms();
    let (endpoints, _) = endpoint_metrics(gateway, route, rows, now);
    json!({
        "applicationId": &*route.app.id,
        "appType": route.app.app_type.as_str(),
        "description": route.app.description,
        "cacheMetrics": cache_metrics(&route.app),
        "endpointMetrics": endpoints,
        "gatewayAnswers": gateway_answers(gateway, &route.app.id, rows, now),
    })
}

/// `GET {prefix}/metrics`.
pub fn gateway(gateway: &Gateway, rows: &ByEndpoint) -> Value {
    let snapshot = gateway.snapshot();
    let now = now_ms();
    let mut total = Counters::default();
    let apps: Vec<Value> = snapshot
        .config
        .applications
        .iter()
        .filter_map(|app| snapshot.app(&app.id))
        .map(|route| {
            let (endpoints, app_total) = endpoint_metrics(gateway, route, rows, now);
            total.add(&app_total);
            json!({
                "applicationId": &*route.app.id,
                "cacheMetrics": cache_metrics(&route.app),
                "endpointMetrics": endpoints,
                "gatewayAnswers": gateway_answers(gateway, &route.app.id, rows, now),
            })
        })
        .collect();
    let s = &gateway.settings;
    let failed = total.failed + total.throttled + total.filtered;
    let success = total.succeeded();
    json!({
        "hostName": s.instance_id(),
        "listenPort": s.port,
        "serverName": s.name,
        "serverType": "single-domain",
        "collectionIntervalMins": s.metrics_interval.as_secs_f64() / 60.0,
        "historyCount": s.metrics_history,
        "applicationMetrics": apps,
        "successApiCalls": success,
        "cachedApiCalls": 0,
        "failedApiCalls": failed,
        "clientCancelledApiCalls": total.cancelled,
        "totalApiCalls": total.calls,
        "gatewayOverhead": overhead_json(gateway),
        "endpointUri": format!("{}/metrics", s.prefix()),
        "currentDate": httpdate::fmt_http_date(SystemTime::now()),
    })
}

/// This instance's own cost per request, outside backend calls.
fn overhead_json(gateway: &Gateway) -> Value {
    let o = gateway.overhead.snapshot();
    let count = o.count();
    json!({
        "instance": gateway.settings.instance_id(),
        "requests": count,
        "avgUs": if count > 0 { json!(o.sum_us as f64 / count as f64) } else { Value::Null },
        "p50Us": ms_or_null(o.quantile(0.50)),
        "p99Us": ms_or_null(o.quantile(0.99)),
    })
}
