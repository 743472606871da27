//! OpenTelemetry traces: with the standard `OTEL_*` variables set, the router exports the
//! spans of a request over OTLP/HTTP to the collector they name.

// A failed unwrap here is a failed assertion; clippy.toml's test allowance does not reach helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::{Behaviour, app_config, chat_body, simulator};
use axum::body::Bytes;
use axum::http::HeaderMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake collector received: (content-type, body) per export.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

async fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .unwrap_or_default();
                sink.lock().unwrap().push((ct, body));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn spans_are_exported_over_otlp_when_the_otel_variables_say_so() {
    let (otlp, received) = collector().await;
    let sim = simulator("a", Behaviour::default()).await;
    let dir = std::env::temp_dir().join(format!("aigw-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.json");
    std::fs::write(
        &file,
        app_config("chat", &[("ptu", &sim.url(), None)]).to_string(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_router"))
        .env("API_GATEWAY_CONFIG_FILE", &file)
        .env("API_GATEWAY_PORT", port.to_string())
        .env("API_GATEWAY_LOG_LEVEL", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
        .env("OTEL_SERVICE_NAME", "aigw-router-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("{base}/api/v1/dev/apirouter/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = http
        .post(format!("{base}/api/v1/dev/apirouter/lb/chat"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();

    let exported = |needle: &[u8]| {
        received.lock().unwrap().iter().any(|(ct, body)| {
            ct.starts_with("application/x-protobuf")
                && body.windows(needle.len()).any(|w| w == needle)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(exported(b"inference") && exported(b"upstream")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        exported(b"inference"),
        "the request span reached the collector"
    );
    assert!(
        exported(b"upstream"),
        "the backend call span reached the collector"
    );
    assert!(
        exported(b"aigw-router-test"),
        "with the service name from OTEL_SERVICE_NAME"
    );
}
