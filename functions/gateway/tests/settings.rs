//! Every setting the README lists, set in a real `gateway` process's environment (or on its
//! command line) and observed from outside: through `instanceinfo`, `healthz`, the routes, the
//! log, or what the process does. A setting that is documented but never read fails here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_simulator::{Mode, RetryAfterHeader};
use aigw_tests::process::{Process, free_port};
use aigw_tests::{Behaviour, app_config, chat_body, simulator};
use serde_json::{Value, json};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

fn config_for(url: &str) -> Value {
    app_config("chat", &[("only", url, None)])
}

/// A plain chat through `gw`'s Node path.
async fn chat(gw: &Process) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.url("/lb/chat"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap()
}

/// A config whose endpoint nobody answers (enough for settings that need no backend).
fn idle_config() -> Value {
    config_for("http://127.0.0.1:9")
}

#[tokio::test]
async fn every_setting_reaches_the_running_process() {
    let gw = Process::start(
        BIN,
        &idle_config(),
        &[
            ("API_GATEWAY_NAME", "edge-7"),
            ("API_GATEWAY_ENV", "prod"),
            ("API_GATEWAY_LOG_LEVEL", "warn"),
            ("API_GATEWAY_LOG_FORMAT", "json"),
            ("API_GATEWAY_MAX_BODY_BYTES", "1000"),
            ("API_GATEWAY_DEFAULT_RETRY_AFTER_SECS", "7"),
            ("API_GATEWAY_MAX_RETRY_AFTER_SECS", "600"),
            ("API_GATEWAY_DEFAULT_API_VERSION", "2025-04-01-preview"),
            ("API_GATEWAY_SHUTDOWN_GRACE_SECS", "3"),
            ("API_GATEWAY_HEADER_TIMEOUT_SECS", "4"),
            ("API_GATEWAY_BODY_TIMEOUT_SECS", "5"),
            ("API_GATEWAY_KEEPALIVE_SECS", "6"),
            ("API_GATEWAY_SYNC_INTERVAL_MS", "500"),
            ("API_GATEWAY_METRICS_CINTERVAL", "0.5"),
            ("API_GATEWAY_METRICS_CHISTORY", "3"),
            ("API_GATEWAY_METRICS_FLUSH_SECS", "2"),
            ("API_GATEWAY_KEY", "k"),
        ],
    )
    .await;
    let info = gw.instance_info().await;
    let c = &info["serverConfig"];
    assert_eq!(info["serverName"], "edge-7");
    assert_eq!(info["apiGatewayUri"], "/api/v1/prod/apirouter");
    let expected = json!({
        "env": "prod", "logLevel": "warn", "logFormat": "json", "maxBodyBytes": 1000,
        "defaultRetryAfterSecs": 7, "maxRetryAfterSecs": 600,
        "defaultApiVersion": "2025-04-01-preview", "shutdownGraceSecs": 3.0,
        "headerTimeoutSecs": 4.0, "bodyTimeoutSecs": 5.0, "keepaliveSecs": 6.0,
        "syncIntervalMs": 500, "metricsIntervalMins": 0.5, "metricsHistory": 3,
        "metricsFlushSecs": 2.0, "adminKeySet": true, "store": "memory",
    });
    for (name, value) in expected.as_object().unwrap() {
        assert_eq!(&c[name], value, "serverConfig.{name}: {c}");
    }
    assert!(!info.to_string().contains("\"k\""), "the key never shows");
}

#[tokio::test]
async fn a_bad_setting_stops_the_process_naming_it() {
    for (name, value) in [
        ("API_GATEWAY_MAX_RETRY_AFTER_SECS", "0"),
        ("API_GATEWAY_HEADER_TIMEOUT_SECS", "soon"),
        ("API_GATEWAY_LOG_FORMAT", "xml"),
        ("API_GATEWAY_DEFAULT_API_VERSION", "2024/10"),
        ("API_GATEWAY_PORT", "eighty"),
        ("API_GATEWAY_METRICS_FLUSH_SECS", "1e30"),
    ] {
        let mut gw = Process::spawn(BIN, &idle_config(), &[(name, value)], &[]);
        let status = gw.exited_within(Duration::from_secs(20)).await.unwrap();
        assert_eq!(status.code(), Some(2), "{name}={value}");
        assert!(gw.log().contains(name), "{name}: {}", gw.log());
    }
}

#[tokio::test]
async fn host_port_and_flags() {
    let port = free_port();
    let gw = Process::start(
        BIN,
        &idle_config(),
        &[
            ("API_GATEWAY_HOST", "127.0.0.2"),
            ("API_GATEWAY_PORT", &port.to_string()),
        ],
    )
    .await;
    assert_eq!(
        gw.instance_info().await["serverConfig"]["host"],
        "127.0.0.2"
    );
    assert!(
        reqwest::get(format!(
            "http://127.0.0.1:{port}/api/v1/dev/apirouter/healthz"
        ))
        .await
        .is_err(),
        "listens on the configured host only"
    );
    drop(gw);

    // --config and --port win over the environment.
    let file = aigw_tests::process::temp_file("flag-config.json");
    let mut config = idle_config();
    config["serverId"] = json!("from-flag");
    std::fs::write(&file, config.to_string()).unwrap();
    let flag_port = free_port();
    let mut gw = Process::spawn(
        BIN,
        &idle_config(),
        &[],
        &[
            "--config",
            file.to_str().unwrap(),
            "--port",
            &flag_port.to_string(),
        ],
    );
    gw.base = format!("http://127.0.0.1:{flag_port}");
    gw.wait_ready().await;
    let info = gw.instance_info().await;
    assert_eq!(info["serverId"], "from-flag");
    assert_eq!(info["serverConfig"]["port"], flag_port);
}

#[tokio::test]
async fn the_gateway_key_turns_reconfiguration_on() {
    let reconfig = |gw: &Process, key: Option<&str>| {
        let mut request = reqwest::Client::new().post(gw.url("/reconfig"));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let off = Process::start(BIN, &idle_config(), &[]).await;
    let r = reconfig(&off, Some("anything")).await.unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "admin_disabled");

    let on = Process::start(BIN, &idle_config(), &[("API_GATEWAY_KEY", "s3cret")]).await;
    assert_eq!(reconfig(&on, Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(reconfig(&on, None).await.unwrap().status(), 401);
    // An empty body re-reads the file the process was started with.
    let r = reconfig(&on, Some("s3cret")).await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "reconfigured");
    assert!(!on.log().contains("s3cret"), "the key is never logged");
}

#[tokio::test]
async fn body_limit_and_env_prefix() {
    let gw = Process::start(
        BIN,
        &idle_config(),
        &[
            ("API_GATEWAY_MAX_BODY_BYTES", "100"),
            ("API_GATEWAY_ENV", "stage"),
        ],
    )
    .await;
    let r = reqwest::Client::new()
        .post(gw.url("/lb/chat"))
        .json(&chat_body(&"x".repeat(200), false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let dev = format!("{}/api/v1/dev/apirouter/healthz", gw.base);
    assert_eq!(reqwest::get(dev).await.unwrap().status(), 404);
}

#[tokio::test]
async fn retry_after_waits_default_and_capped() {
    // A backend asking for a billion seconds keeps the endpoint off for the cap only, and the
    // client is told the cap.
    let greedy = simulator(
        "greedy",
        Behaviour {
            mode: Mode::Throttle,
            retry_after_ms: 1_000_000_000_000,
            ..Default::default()
        },
    )
    .await;
    let gw = Process::start(
        BIN,
        &config_for(&greedy.url()),
        &[("API_GATEWAY_MAX_RETRY_AFTER_SECS", "120")],
    )
    .await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = chat(&gw).await;
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=120).contains(&wait), "retry-after {wait}");
    }
    let metrics: Value = http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let circuit = &metrics["applicationMetrics"][0]["endpointMetrics"][0]["circuit"];
    assert_eq!(circuit["state"], "open");
    assert!(
        circuit["retryAfterMs"].as_u64().unwrap() <= 120_000,
        "{circuit}"
    );

    // A 429 naming no wait opens the circuit for the default wait.
    let silent = simulator(
        "silent",
        Behaviour {
            mode: Mode::Throttle,
            retry_after_header: RetryAfterHeader::None,
            ..Default::default()
        },
    )
    .await;
    let gw = Process::start(
        BIN,
        &config_for(&silent.url()),
        &[("API_GATEWAY_DEFAULT_RETRY_AFTER_SECS", "7")],
    )
    .await;
    let r = chat(&gw).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
}

#[tokio::test]
async fn log_level_and_format() {
    // Text logs to a file carry no colour codes.
    let text = Process::start(BIN, &idle_config(), &[]).await;
    let log = text.log();
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI escapes in a file: {log:?}"
    );

    let json_logs = Process::start(
        BIN,
        &idle_config(),
        &[
            ("API_GATEWAY_LOG_FORMAT", "json"),
            ("API_GATEWAY_NAME", "j"),
        ],
    )
    .await;
    let log = json_logs.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }

    let quiet = Process::start(BIN, &idle_config(), &[("API_GATEWAY_LOG_LEVEL", "warn")]).await;
    assert!(!quiet.log().contains("listening"), "{}", quiet.log());
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let hang = simulator(
        "hang",
        Behaviour {
            mode: Mode::Hang,
            ..Default::default()
        },
    )
    .await;
    let mut gw = Process::start(
        BIN,
        &config_for(&hang.url()),
        &[("API_GATEWAY_SHUTDOWN_GRACE_SECS", "1")],
    )
    .await;
    let url = gw.url("/lb/chat");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&chat_body("hi", false))
            .send()
            .await
    });
    assert!(
        hang.wait_for_stats(Duration::from_secs(10), |s| s.requests >= 1)
            .await
            .is_ok(),
        "the request reached the backend"
    );
    let started = std::time::Instant::now();
    gw.terminate();
    let status = gw.exited_within(Duration::from_secs(15)).await;
    assert!(status.is_some(), "exited after the grace period");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "drained for the grace period: {took:?}"
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the hung request was cut off"
    );
}

#[tokio::test]
async fn database_url_under_both_names() {
    for name in ["DATABASE_URL", "API_GATEWAY_DATABASE_URL"] {
        let url = aigw_tests::test_database().await;
        let gw = Process::start(
            BIN,
            &idle_config(),
            &[
                (name, url.as_str()),
                ("API_GATEWAY_METRICS_FLUSH_SECS", "0.2"),
            ],
        )
        .await;
        let health: Value = reqwest::get(gw.url("/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["store"]["kind"], "postgres", "{name}");
        assert_eq!(health["store"]["state"], "up", "{name}");
        assert!(!gw.log().contains(&url), "the database URL is never logged");
    }
}

#[tokio::test]
async fn metrics_flush_and_window_settings_drive_the_flusher() {
    let url = aigw_tests::test_database().await;
    let sim = simulator("flushed", Behaviour::default()).await;
    let gw = Process::start(
        BIN,
        &config_for(&sim.url()),
        &[
            ("DATABASE_URL", url.as_str()),
            ("API_GATEWAY_METRICS_FLUSH_SECS", "0.2"),
            ("API_GATEWAY_METRICS_CINTERVAL", "0.1"),
        ],
    )
    .await;
    let r = chat(&gw).await;
    assert_eq!(r.status(), 200);
    // Nothing asks for the metrics: only the flusher, on its 0.2 s period, writes the row, into
    // a 6 s window.
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut row = None;
    for _ in 0..250 {
        row = sqlx::query_as::<_, (i64, i64)>("SELECT window_start_ms, calls FROM gw_metrics")
            .fetch_optional(&mut db)
            .await
            .unwrap();
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (window, calls) = row.expect("the flusher wrote the request's row");
    assert_eq!(calls, 1);
    assert_eq!(window % 6_000, 0, "a 0.1-minute window");
    assert_ne!(window % 3_600_000, 0, "not the default hour");
}

#[tokio::test]
async fn the_sync_interval_paces_how_fast_an_instance_learns_of_a_429() {
    let url = aigw_tests::test_database().await;
    let busy = simulator("busy", aigw_tests::throttled(600_000)).await;
    let config = config_for(&busy.url());
    let db = [("DATABASE_URL", url.as_str())];
    let seer = Process::start(BIN, &config, &db).await;
    let fast = Process::start(
        BIN,
        &config,
        &[db[0], ("API_GATEWAY_SYNC_INTERVAL_MS", "20")],
    )
    .await;
    let slow = Process::start(
        BIN,
        &config,
        &[db[0], ("API_GATEWAY_SYNC_INTERVAL_MS", "60000")],
    )
    .await;
    let http = reqwest::Client::new();
    // Both have made their first pull; now one instance meets the 429.
    for gw in [&fast, &slow] {
        let metrics: Value = http
            .get(gw.url("/metrics"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            metrics["applicationMetrics"][0]["endpointMetrics"][0]["circuit"]["state"],
            "closed"
        );
    }
    let r = chat(&seer).await;
    assert_eq!(r.status(), 429);
    let state = |gw: &Process| {
        let url = gw.url("/metrics");
        let http = http.clone();
        async move {
            let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            v["applicationMetrics"][0]["endpointMetrics"][0]["circuit"]["state"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let started = std::time::Instant::now();
    while state(&fast).await != "open" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the 20 ms instance learnt of it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        state(&slow).await,
        "closed",
        "the 60 s instance has not pulled again yet"
    );
}
