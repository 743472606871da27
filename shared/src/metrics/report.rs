//! Turning the stored counters into what operators read: the Node gateway's metrics JSON (with
//! percentiles, time to first token, circuit state and remaining budget added) and the
//! Prometheus text format. Both are built from the same rows, summed over all instances.

use crate::config::Application;
use crate::state::{AppRoute, Gateway};
use crate::store::{BUCKET_BOUNDS_MS, Counters, EndpointKey, Histogram, MetricsRow};
use crate::throttle::now_ms;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
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

/// The Node gateway's per-window counters, plus our additions.
fn collected(c: &Counters, interval_mins: f64) -> Value {
    let success = c.calls.saturating_sub(c.failed + c.throttled + c.filtered);
    json!({
        "apiCalls": success,
        "failedApiCalls": c.failed + c.throttled + c.filtered,
        "throttledApiCalls": c.throttled,
        "filteredApiCalls": c.filtered,
        "totalApiCalls": c.calls,
        "kInferenceTokens": c.total_tokens as f64 / 1000.0,
        "promptTokens": c.prompt_tokens,
        "completionTokens": c.completion_tokens,
        "throughput": {
            "kTokensPerWindow": c.total_tokens as f64 / 1000.0,
            "avgTokensPerCall": if success > 0 { c.total_tokens as f64 / success as f64 } else { 0.0 },
            "tokensPerMinute": c.total_tokens as f64 / interval_mins,
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
                "endpoint": ep.uri.as_str(),
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

fn cache_metrics(_app: &Application) -> Value {
    // The semantic cache arrives in a later issue; its counters read zero until then.
    json!({"hits": 0, "misses": 0, "avgScore": null})
}

/// `GET {prefix}/metrics/{appId}`.
pub fn application(gateway: &Gateway, route: &AppRoute, rows: &ByEndpoint) -> Value {
    let (endpoints, _) = endpoint_metrics(gateway, route, rows, now_ms());
    json!({
        "applicationId": &*route.app.id,
        "appType": route.app.app_type.as_str(),
        "description": route.app.description,
        "cacheMetrics": cache_metrics(&route.app),
        "endpointMetrics": endpoints,
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
            })
        })
        .collect();
    let s = &gateway.settings;
    let failed = total.failed + total.throttled + total.filtered;
    json!({
        "hostName": s.instance_id(),
        "listenPort": s.port,
        "serverName": s.name,
        "serverType": "single-domain",
        "collectionIntervalMins": s.metrics_interval.as_secs_f64() / 60.0,
        "historyCount": s.metrics_history,
        "applicationMetrics": apps,
        "successApiCalls": total.calls.saturating_sub(failed),
        "cachedApiCalls": 0,
        "failedApiCalls": failed,
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

/// `GET /metrics`: Prometheus text format. Counters cover the retained history, summed over
/// instances; gauges are this instance's view.
pub fn prometheus(gateway: &Gateway, rows: &ByEndpoint) -> String {
    let snapshot = gateway.snapshot();
    let now = now_ms();
    let mut out = String::with_capacity(4096);
    let header = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    let mut totals: Vec<Series> = Vec::new();
    for app in &snapshot.config.applications {
        let Some(route) = snapshot.app(&app.id) else {
            continue;
        };
        for (ep, live) in app.endpoints.iter().zip(&route.endpoints) {
            let mut sum = Counters::default();
            for (_, c) in rows
                .get(&live.throttle.key)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                sum.add(c);
            }
            let labels = format!(
                "app=\"{}\",endpoint=\"{}\"",
                escape(&app.id),
                escape(&ep.id)
            );
            let open = live.throttle.circuit.wait_ms(now).is_some() as u32;
            totals.push(Series {
                labels,
                counters: sum,
                circuit_open: open,
                rpm_remaining: live.throttle.rpm().map(|l| l.remaining(now)),
            });
        }
    }
    header(
        &mut out,
        "aigw_requests_total",
        "counter",
        "Calls to backend endpoints by outcome.",
    );
    for Series {
        labels: l,
        counters: c,
        ..
    } in &totals
    {
        let success = c.calls.saturating_sub(c.failed + c.throttled + c.filtered);
        for (outcome, n) in [
            ("success", success),
            ("failed", c.failed),
            ("throttled", c.throttled),
            ("filtered", c.filtered),
        ] {
            let _ = writeln!(out, "aigw_requests_total{{{l},outcome=\"{outcome}\"}} {n}");
        }
    }
    header(
        &mut out,
        "aigw_tokens_total",
        "counter",
        "Tokens reported by backends.",
    );
    for Series {
        labels: l,
        counters: c,
        ..
    } in &totals
    {
        for (kind, n) in [
            ("prompt", c.prompt_tokens),
            ("completion", c.completion_tokens),
            ("total", c.total_tokens),
        ] {
            let _ = writeln!(out, "aigw_tokens_total{{{l},kind=\"{kind}\"}} {n}");
        }
    }
    for (name, help, pick) in [
        (
            "aigw_request_duration_ms",
            "Time from sending a request to the end of the answer.",
            0,
        ),
        (
            "aigw_time_to_first_token_ms",
            "Time from sending a streamed request to its first piece.",
            1,
        ),
    ] {
        header(&mut out, name, "histogram", help);
        for Series {
            labels: l,
            counters: c,
            ..
        } in &totals
        {
            let (h, sum): (&Histogram, u64) = if pick == 0 {
                (&c.latency, c.latency_ms_sum)
            } else {
                (&c.ttft, c.ttft_ms_sum)
            };
            let mut cumulative = 0;
            for (i, n) in h.0.iter().enumerate() {
                cumulative += n;
                let le = BUCKET_BOUNDS_MS
                    .get(i)
                    .map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "{name}_sum{{{l}}} {sum}\n{name}_count{{{l}}} {cumulative}"
            );
        }
    }
    header(
        &mut out,
        "aigw_circuit_open",
        "gauge",
        "1 while the endpoint is kept off after a 429.",
    );
    for Series {
        labels: l,
        circuit_open: open,
        ..
    } in &totals
    {
        let _ = writeln!(out, "aigw_circuit_open{{{l}}} {open}");
    }
    header(
        &mut out,
        "aigw_rpm_remaining",
        "gauge",
        "Requests left in the endpoint's RPM window on this instance.",
    );
    for Series {
        labels: l,
        rpm_remaining: remaining,
        ..
    } in &totals
    {
        if let Some(r) = remaining {
            let _ = writeln!(out, "aigw_rpm_remaining{{{l}}} {r}");
        }
    }
    header(
        &mut out,
        "aigw_gateway_overhead_us",
        "histogram",
        "Time this instance spent on a request outside backend calls, in microseconds.",
    );
    let o = gateway.overhead.snapshot();
    let mut cumulative = 0;
    for (i, n) in o.buckets.iter().enumerate() {
        cumulative += n;
        let le = crate::metrics::overhead::BOUNDS_US
            .get(i)
            .map_or("+Inf".to_owned(), |b| b.to_string());
        let _ = writeln!(
            out,
            "aigw_gateway_overhead_us_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "aigw_gateway_overhead_us_sum {}\naigw_gateway_overhead_us_count {cumulative}",
        o.sum_us
    );
    header(
        &mut out,
        "aigw_store_up",
        "gauge",
        "1 while the shared store answers.",
    );
    let _ = writeln!(
        out,
        "aigw_store_up{{store=\"{}\"}} {}",
        gateway.shared.store.kind(),
        gateway.shared.is_up() as u8
    );
    out
}

/// One endpoint's series in the Prometheus output.
struct Series {
    labels: String,
    counters: Counters,
    circuit_open: u32,
    rpm_remaining: Option<u32>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
