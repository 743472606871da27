//! Secrets inside endpoint URIs (a `?code=` query value, a userinfo password) never leave the
//! process: after traffic to such endpoints, `instanceinfo` (both prefixes), the metrics JSON
//! (all and per application), Prometheus, the clients' error bodies and the log at its most
//! verbose level are scanned for them. Each surface shows the display form instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::process::Process;
use aigw_tests::{BACKEND_KEY, Behaviour, chat_body, simulator};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");
const SECRETS: [&str; 4] = ["hunter2", "SECRETCODE", "DEADCODE", "pw-dead"];

#[tokio::test]
async fn no_surface_shows_a_secret_from_an_endpoint_uri() {
    let sim = simulator("live", Behaviour::default()).await;
    let port = sim.addr().port();
    let live = format!(
        "http://ops:hunter2@127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21&code=SECRETCODE"
    );
    let dead = "http://ops:pw-dead@127.0.0.1:9/openai/deployments/gpt-4o/chat/completions?code=DEADCODE&api-version=2024-10-21";
    let config = json!({"applications": [
        {"appId": "chat", "appType": "azure_oai", "endpoints": [
            {"id": "dead", "uri": dead, "apikey": BACKEND_KEY},
            {"id": "live", "uri": live, "apikey": BACKEND_KEY}
        ]},
        {"appId": "down", "appType": "azure_oai", "endpoints": [
            {"uri": dead, "apikey": BACKEND_KEY}
        ]}
    ]});
    let gw = Process::start(BIN, &config, &[("API_GATEWAY_LOG_LEVEL", "trace")]).await;
    let http = reqwest::Client::new();
    let mut seen = Vec::new();

    for stream in [false, true] {
        let r = http
            .post(gw.url("/lb/chat"))
            .json(&chat_body("hi", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "failed over to the live endpoint");
        assert_eq!(r.headers()["x-endpoint-id"], "live");
        r.bytes().await.unwrap();
    }
    let r = http
        .post(gw.url("/lb/down"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    let failure = &body["error"]["details"][0];
    assert_eq!(failure["failure"], "connect", "{body}");
    assert!(
        failure["endpoint"].as_str().unwrap().starts_with("ep-"),
        "{body}"
    );
    seen.push(("502 body", body.to_string()));

    for path in [
        "/api/v1/dev/apirouter/instanceinfo",
        "/api/v1/dev/aigateway/instanceinfo",
        "/api/v1/dev/apirouter/metrics",
        "/api/v1/dev/apirouter/metrics/chat",
        "/api/v1/dev/apirouter/metrics/down",
        "/metrics",
    ] {
        let r = http.get(format!("{}{path}", gw.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        seen.push((path, r.text().await.unwrap()));
    }
    let info = &seen[1].1;
    assert!(
        info.contains(&format!(
            "http://127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21&code=***"
        )),
        "instanceinfo shows the display form: {info}"
    );
    assert!(
        seen[6].1.contains("code=***"),
        "Prometheus names the endpoint's place"
    );

    let log = gw.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is verbose"
    );
    assert!(
        log.contains("/openai/deployments/gpt-4o/chat/completions?code=***&api-version=2024-10-21"),
        "the log names the failed endpoint in display form: {log}"
    );
    seen.push(("log", log));
    for (surface, text) in &seen {
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{surface} shows '{secret}':\n{text}"
            );
        }
    }
}
