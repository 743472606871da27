//! The admin surface: metrics against a scripted load, windows, aggregation over instances,
//! Prometheus output, tokens of streams, and live reconfiguration.

use aigw_core::Settings;
use aigw_core::settings::GatewayKey;
use aigw_core::store::MemoryStore;
use aigw_simulator::Mode;
use aigw_tests::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "s3cret-admin-key";

fn settings() -> Settings {
    Settings {
        gateway_key: Some(GatewayKey::new(KEY)),
        ..Settings::default()
    }
}

async fn get_json(url: String) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn endpoint<'a>(metrics: &'a Value, app: usize, id: &str) -> &'a Value {
    metrics["applicationMetrics"][app]["endpointMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap()
}

async fn tokens_of(r: reqwest::Response) -> u64 {
    let v: Value = r.json().await.unwrap();
    v["usage"]["total_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn metrics_match_a_scripted_load() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start_with(
        app_config("chat", &[("ptu", &a.url(), None), ("payg", &b.url(), None)]),
        settings(),
    )
    .await;

    let mut a_tokens = 0;
    for _ in 0..3 {
        a_tokens += tokens_of(post_chat(&gw, "chat", "hello there", false).await).await;
    }
    assert_eq!(
        post_chat(&gw, "chat", "trigger-content-filter", false)
            .await
            .status(),
        400
    );
    a.set_behaviour(Behaviour {
        fail_next: Some(1),
        ..throttled(1)
    });
    let b_json = tokens_of(post_chat(&gw, "chat", "hello there", false).await).await;
    // Wait out the 1 ms circuit, then stream on the second endpoint with a's circuit forced open.
    a.set_behaviour(Behaviour {
        mode: Mode::Throttle,
        retry_after_ms: 60_000,
        ..Default::default()
    });
    let streamed = post_chat(&gw, "chat", "hello there", true)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !streamed.contains("\"usage\":{"),
        "the client did not ask for usage and does not see it"
    );

    let m = get_json(format!("{}/api/v1/dev/apirouter/metrics", gw.url())).await;
    let ptu = &endpoint(&m, 0, "ptu")["metrics"];
    // 3 answers, 1 content filter, 2 throttled (the forced 429 and the stream's first try).
    let throttled_on_a = a.stats().status_429;
    assert_eq!(ptu["apiCalls"], 3, "{ptu:#}");
    assert_eq!(ptu["filteredApiCalls"], 1);
    assert_eq!(ptu["throttledApiCalls"], throttled_on_a);
    assert_eq!(ptu["totalApiCalls"], 4 + throttled_on_a);
    assert_eq!(
        ptu["kInferenceTokens"].as_f64().unwrap(),
        a_tokens as f64 / 1000.0
    );
    assert!(ptu["latency"]["p50Ms"].is_number() && ptu["latency"]["p99Ms"].is_number());
    let payg = &endpoint(&m, 0, "payg")["metrics"];
    assert_eq!(payg["apiCalls"], 2);
    assert_eq!(
        payg["kInferenceTokens"].as_f64().unwrap(),
        (b_json * 2) as f64 / 1000.0,
        "the stream's tokens counted"
    );
    assert_eq!(payg["timeToFirstToken"]["streams"], 1);
    assert!(payg["timeToFirstToken"]["p95Ms"].is_number());
    assert_eq!(endpoint(&m, 0, "ptu")["circuit"]["state"], "open");
    assert_eq!(m["totalApiCalls"], 6 + throttled_on_a);
    assert_eq!(m["successApiCalls"], 5);
    assert_eq!(m["failedApiCalls"], 1 + throttled_on_a);
    assert_eq!(m["historyCount"], 24);
    assert_eq!(
        m["gatewayOverhead"]["requests"], 6,
        "one per relayed answer"
    );
    assert!(m["gatewayOverhead"]["p99Us"].is_number());

    let one = get_json(format!("{}/api/v1/dev/apirouter/metrics/chat", gw.url())).await;
    assert_eq!(one["applicationId"], "chat");
    assert_eq!(one["endpointMetrics"][1]["metrics"]["apiCalls"], 2);
    let missing = reqwest::get(format!("{}/api/v1/dev/apirouter/metrics/nope", gw.url()))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_client_that_asks_for_usage_still_gets_it_and_its_tokens_count() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let json_tokens = tokens_of(post_chat(&gw, "chat", "hi", false).await).await;
    let mut body = chat_body("hi", true);
    body["stream_options"] = json!({"include_usage": true});
    let text = reqwest::Client::new()
        .post(gw.lb("chat"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"usage\":{"), "{text}");
    let m = get_json(format!("{}/api/v1/dev/apirouter/metrics", gw.url())).await;
    let ptu = &endpoint(&m, 0, "ptu")["metrics"];
    assert_eq!(
        ptu["kInferenceTokens"].as_f64().unwrap(),
        (json_tokens * 2) as f64 / 1000.0
    );
    assert_eq!(ptu["timeToFirstToken"]["streams"], 1);
}

#[tokio::test]
async fn windows_roll_over_into_the_history() {
    let a = simulator("a", Behaviour::default()).await;
    let s = Settings {
        metrics_interval: Duration::from_millis(1_000),
        metrics_history: 5,
        ..settings()
    };
    let gw = TestGateway::start_with(app_config("chat", &[("ptu", &a.url(), None)]), s).await;
    post_chat(&gw, "chat", "one", false).await;
    let url = format!("{}/api/v1/dev/apirouter/metrics", gw.url());
    // Calls in two different windows: the history then holds two windows.
    let rolled = eventually(Duration::from_secs(5), || async {
        post_chat(&gw, "chat", "again", false).await;
        let m = get_json(url.clone()).await;
        endpoint(&m, 0, "ptu")["metrics"]["history"]
            .as_object()
            .unwrap()
            .len()
            >= 2
    })
    .await;
    assert!(rolled);
    let m = get_json(url).await;
    let history = endpoint(&m, 0, "ptu")["metrics"]["history"]
        .as_object()
        .unwrap()
        .clone();
    let total: u64 = history
        .values()
        .map(|w| w["collectedMetrics"]["totalApiCalls"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        a.stats().requests,
        "every call is in exactly one window"
    );
    assert!(history["0"]["collectionTime"].is_string());
}

#[tokio::test]
async fn metrics_aggregate_over_two_instances() {
    let url = test_database().await;
    let a = simulator("a", Behaviour::default()).await;
    let config = app_config("chat", &[("ptu", &a.url(), None)]);
    let one = TestGateway::instance(&config, &url, "i1", settings()).await;
    let two = TestGateway::instance(&config, &url, "i2", settings()).await;
    for _ in 0..2 {
        post_chat(&one, "chat", "hi", false).await;
    }
    for _ in 0..3 {
        post_chat(&two, "chat", "hi", false).await;
    }
    assert!(two.gateway.flush_metrics().await);
    let m = get_json(format!("{}/api/v1/dev/apirouter/metrics", one.url())).await;
    assert_eq!(endpoint(&m, 0, "ptu")["metrics"]["apiCalls"], 5);
}

#[tokio::test]
async fn prometheus_output_parses() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), Some(100))])).await;
    for _ in 0..4 {
        post_chat(&gw, "chat", "hi", false).await;
    }
    let r = reqwest::get(format!("{}/metrics", gw.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8",
        "the text format scrapers read by default"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("# EOF"), "not OpenMetrics");
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.insert(series.to_owned(), value);
    }
    assert_eq!(
        samples[r#"aigw_requests_total{app="chat",endpoint="ptu",outcome="success"}"#],
        4.0
    );
    assert_eq!(
        samples[r#"aigw_request_duration_ms_count{app="chat",endpoint="ptu"}"#],
        4.0
    );
    assert_eq!(
        samples[r#"aigw_request_duration_ms_bucket{app="chat",endpoint="ptu",le="+Inf"}"#],
        4.0
    );
    assert_eq!(
        samples[r#"aigw_requests_total{app="chat",endpoint="ptu",outcome="client_cancelled"}"#],
        0.0
    );
    let tokens = |source: &str| {
        samples[&format!(
            r#"aigw_tokens_total{{app="chat",endpoint="ptu",kind="total",source="{source}"}}"#
        )]
    };
    assert!(tokens("usage") > 0.0);
    assert_eq!(tokens("estimate"), 0.0);
    assert_eq!(
        samples[r#"aigw_gateway_responses_total{app="chat",status="429"}"#],
        0.0
    );
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with(r#"aigw_endpoint_info{app="chat",endpoint="ptu",uri=""#))
    );
    // What may be admitted right now: a 10 s burst of 100/6 = 16, less the 4 just sent.
    assert_eq!(
        samples[r#"aigw_rpm_remaining{app="chat",endpoint="ptu"}"#],
        12.0
    );
    assert_eq!(
        samples[r#"aigw_circuit_open{app="chat",endpoint="ptu"}"#],
        0.0
    );
    assert_eq!(
        samples["aigw_gateway_overhead_us_count"], 4.0,
        "the gateway's own cost, per request"
    );
}

async fn reconfig(gw: &TestGateway, key: Option<&str>, body: String) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/dev/apirouter/reconfig", gw.url()))
        .body(body);
    if let Some(key) = key {
        req = req.header("authorization", format!("Bearer {key}"));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn reconfig_refuses_wrong_keys_and_invalid_configs() {
    let a = simulator("a", Behaviour::default()).await;
    let gw =
        TestGateway::start_with(app_config("chat", &[("ptu", &a.url(), None)]), settings()).await;
    let good = app_config("chat", &[("west", &a.url(), None)]).to_string();
    for key in [None, Some("wrong"), Some("s3cret-admin-ke")] {
        let r = reconfig(&gw, key, good.clone()).await;
        assert_eq!(r.status(), 401, "{key:?}");
        assert!(!r.text().await.unwrap().contains(KEY));
    }
    let bad = json!({"applications": [{"appId": "chat", "appType": "azure_oai", "endpoints": [{"uri": "nope", "apikey": "k", "rpm": 0}]}]});
    let r = reconfig(&gw, Some(KEY), bad.to_string()).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let details: Vec<String> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        details,
        vec![
            "applications[0].endpoints[0].uri",
            "applications[0].endpoints[0].rpm"
        ]
    );
    assert_eq!(
        reconfig(&gw, Some(KEY), "{not json".into()).await.status(),
        400
    );
    let r = post_chat(&gw, "chat", "hi", false).await;
    assert_eq!(
        r.headers()["x-endpoint-id"],
        "ptu",
        "the running configuration is untouched"
    );

    let disabled = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    assert_eq!(reconfig(&disabled, Some(KEY), good).await.status(), 403);
}

#[tokio::test]
async fn reconfig_under_load_fails_no_request_and_reaches_the_other_instance() {
    let url = test_database().await;
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let old = app_config("chat", &[("ptu", &a.url(), None)]);
    let one = TestGateway::instance(&old, &url, "i1", settings()).await;
    let two = TestGateway::instance(&old, &url, "i2", settings()).await;

    let load = async {
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let batch = futures_util::future::join_all(
                (0..10)
                    .map(|i| post_chat(if i % 2 == 0 { &one } else { &two }, "chat", "hi", false)),
            )
            .await;
            statuses.extend(batch.iter().map(|r| r.status().as_u16()));
        }
        statuses
    };
    let new = app_config("chat", &[("west", &b.url(), None)]).to_string();
    let (statuses, answer) = tokio::join!(load, reconfig(&one, Some(KEY), new));
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["version"], 1);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no request failed during the swap: {statuses:?}"
    );
    assert_eq!(
        post_chat(&one, "chat", "hi", false).await.headers()["x-endpoint-id"],
        "west"
    );
    let seen = eventually(Duration::from_secs(5), || async {
        post_chat(&two, "chat", "hi", false).await.headers()["x-endpoint-id"] == "west"
    })
    .await;
    assert!(seen, "the second instance picked up the new version");
    assert_eq!(two.gateway.config_version(), 1);
}

#[tokio::test]
async fn an_empty_reconfig_rereads_the_file() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let file = std::env::temp_dir().join(format!("aigw-reconfig-{}.json", std::process::id()));
    std::fs::write(
        &file,
        app_config("chat", &[("ptu", &a.url(), None)]).to_string(),
    )
    .unwrap();
    let s = Settings {
        config_file: Some(file.clone()),
        ..settings()
    };
    let gw = TestGateway::start_shared(
        app_config("chat", &[("ptu", &a.url(), None)]),
        s,
        Arc::new(MemoryStore::new()),
    )
    .await;
    std::fs::write(
        &file,
        app_config("chat", &[("west", &b.url(), None)]).to_string(),
    )
    .unwrap();
    assert_eq!(reconfig(&gw, Some(KEY), String::new()).await.status(), 200);
    assert_eq!(
        post_chat(&gw, "chat", "hi", false).await.headers()["x-endpoint-id"],
        "west"
    );
    let _ = std::fs::remove_file(file);
}

/// The endpoint id an instance serves `chat` with now, and the version it reports.
async fn serving(gw: &TestGateway) -> (String, i64) {
    let info = get_json(format!("{}/api/v1/dev/apirouter/instanceinfo", gw.url())).await;
    let health = get_json(format!("{}/api/v1/dev/apirouter/healthz", gw.url())).await;
    (
        info["aiApplications"][0]["endpoints"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned(),
        health["configVersion"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn concurrent_reconfigurations_settle_on_the_newest_version_everywhere() {
    let url = test_database().await;
    let sim = simulator("s", Behaviour::default()).await;
    let start = app_config("chat", &[("start", &sim.url(), None)]);
    let a = TestGateway::instance(&start, &url, "a", settings()).await;
    let b = TestGateway::instance(&start, &url, "b", settings()).await;
    for round in 0..6 {
        let x = format!("x{round}");
        let y = format!("y{round}");
        let body = |id: &str| app_config("chat", &[(id, &sim.url(), None)]).to_string();
        // Two operators at once: on two instances in even rounds, on one instance in odd ones.
        let target = if round % 2 == 0 { &b } else { &a };
        let (rx, ry) = tokio::join!(
            reconfig(&a, Some(KEY), body(&x)),
            reconfig(target, Some(KEY), body(&y))
        );
        assert_eq!((rx.status().as_u16(), ry.status().as_u16()), (200, 200));
        let vx = rx.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap();
        let vy = ry.json::<Value>().await.unwrap()["version"]
            .as_i64()
            .unwrap();
        let (newest, winner) = if vx > vy { (vx, &x) } else { (vy, &y) };
        for gw in [&a, &b] {
            let settled = eventually(Duration::from_secs(5), || async {
                serving(gw).await == (winner.clone(), newest)
            })
            .await;
            assert!(
                settled,
                "round {round}: serves {:?}, expected ({winner}, {newest})",
                serving(gw).await
            );
        }
    }
}
