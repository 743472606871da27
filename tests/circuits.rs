//! Operators close circuits: `POST {prefix}/circuits/{appId}/{endpointId}/close` with the admin
//! key closes the endpoint's circuit on the instance that took the call and, through the shared
//! database, on every other instance.

use aigw_core::Settings;
use aigw_core::settings::GatewayKey;
use aigw_tests::*;
use serde_json::Value;
use std::time::Duration;

const KEY: &str = "operator-key";

fn settings() -> Settings {
    Settings {
        gateway_key: Some(GatewayKey::new(KEY)),
        ..Settings::default()
    }
}

fn served_by(r: &reqwest::Response) -> String {
    r.headers()["x-endpoint-id"].to_str().unwrap().to_owned()
}

async fn close(
    gw: &TestGateway,
    app: &str,
    endpoint: &str,
    key: Option<&str>,
) -> reqwest::Response {
    let url = format!(
        "{}/api/v1/dev/apirouter/circuits/{app}/{endpoint}/close",
        gw.url()
    );
    let mut request = reqwest::Client::new().post(url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn closing_a_circuit_reaches_every_instance() {
    let url = test_database().await;
    let ptu = simulator("ptu", throttled(600_000)).await;
    let payg = simulator("payg", Behaviour::default()).await;
    let config = app_config(
        "chat",
        &[("ptu", &ptu.url(), None), ("payg", &payg.url(), None)],
    );
    let a = TestGateway::instance(&config, &url, "a", settings()).await;
    let b = TestGateway::instance(&config, &url, "b", settings()).await;

    assert_eq!(served_by(&post_chat(&a, "chat", "hi", false).await), "payg");
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.circuit_open("chat", 0)
        })
        .await,
        "b learnt of the 429"
    );

    // The backend has recovered; the operator says so on instance a.
    ptu.set_behaviour(Behaviour::default());
    let r = close(&a, "chat", "ptu", Some(KEY)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["appId"], "chat");
    assert_eq!(body["endpointId"], "ptu");
    assert_eq!(body["state"], "closed");
    assert_eq!(body["wasOpen"], true);
    assert_eq!(body["published"], true);
    assert!(
        !a.circuit_open("chat", 0),
        "closed at once where it was asked"
    );
    assert_eq!(served_by(&post_chat(&a, "chat", "hi", false).await), "ptu");

    assert!(
        eventually(Duration::from_secs(5), || async {
            !b.circuit_open("chat", 0)
        })
        .await,
        "b applied the closure"
    );
    assert_eq!(served_by(&post_chat(&b, "chat", "hi", false).await), "ptu");

    // A fresh 429 after the closure opens it again everywhere.
    ptu.set_behaviour(throttled(600_000));
    assert_eq!(served_by(&post_chat(&b, "chat", "hi", false).await), "payg");
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.circuit_open("chat", 0)
        })
        .await,
        "a learnt of the new 429"
    );
}

#[tokio::test]
async fn closing_needs_the_key_and_a_known_endpoint() {
    let sim = simulator("s", Behaviour::default()).await;
    let config = app_config("chat", &[("only", &sim.url(), None)]);
    let gw = TestGateway::start_with(config.clone(), settings()).await;

    let r = close(&gw, "chat", "only", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        close(&gw, "chat", "only", Some("wrong")).await.status(),
        401
    );

    let r = close(&gw, "nope", "only", Some(KEY)).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "application_not_found");

    let r = close(&gw, "chat", "nope", Some(KEY)).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "endpoint_not_found");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("nope"));

    let r = close(&gw, "chat", "only", Some(KEY)).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["wasOpen"], false);

    let off = TestGateway::start(config).await;
    let r = close(&off, "chat", "only", Some(KEY)).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn openings_queued_while_the_database_is_down_stay_one_per_endpoint() {
    // Nothing listens on this database port: the store is down for the whole test.
    let down = closed_port_url()
        .await
        .replace("http://", "postgres://u:p@")
        + "/db";
    // A zero wait: every request finds the circuits closed again and meets another 429.
    let a = simulator("a", throttled(0)).await;
    let b = simulator("b", throttled(0)).await;
    let config = app_config("chat", &[("a", &a.url(), None), ("b", &b.url(), None)]);
    let store = aigw_core::store::PostgresStore::connect_lazy(&down).unwrap();
    let gw =
        TestGateway::start_shared(config, Settings::default(), std::sync::Arc::new(store)).await;
    let mut throttled_answers = 0;
    for _ in 0..60 {
        let r = post_chat(&gw, "chat", "hi", false).await;
        if r.status() == 429 {
            throttled_answers += 1;
        }
    }
    assert!(a.stats().status_429 >= 30, "the endpoints kept throttling");
    assert!(throttled_answers >= 30);
    assert!(
        gw.gateway.shared.queued_openings() <= 2,
        "one queued opening per endpoint, not one per 429: {}",
        gw.gateway.shared.queued_openings()
    );
}

#[tokio::test]
async fn an_open_circuit_stays_with_its_backend_when_endpoints_are_reordered() {
    let busy = simulator("busy", throttled(600_000)).await;
    let idle = simulator("idle", Behaviour::default()).await;
    let fresh = simulator("fresh", Behaviour::default()).await;
    // No explicit ids: each endpoint's id comes from its URI.
    let config = |bases: &[&str]| {
        let endpoints: Vec<Value> = bases
            .iter()
            .map(|b| serde_json::json!({"uri": chat_uri(b), "apikey": BACKEND_KEY}))
            .collect();
        serde_json::json!({"applications": [{"appId": "chat", "appType": "azure_oai", "endpoints": endpoints}]})
    };
    let gw = TestGateway::start_with(config(&[&busy.url(), &idle.url()]), settings()).await;
    let r = post_chat(&gw, "chat", "hi", false).await;
    assert_eq!(r.status(), 200);
    let idle_id = served_by(&r);
    assert!(idle_id.starts_with("ep-"), "{idle_id}");
    assert_eq!(busy.stats().status_429, 1);

    // A new endpoint first, the two others swapped.
    let next = config(&[&fresh.url(), &idle.url(), &busy.url()]).to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/dev/apirouter/reconfig", gw.url()))
        .bearer_auth(KEY)
        .body(next)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    fresh.set_behaviour(throttled(600_000));
    // fresh throttles, idle answers: the busy backend's circuit stayed open under its own id,
    // and moved to no other endpoint.
    let r = post_chat(&gw, "chat", "hi", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), idle_id);
    assert_eq!(
        busy.stats().requests,
        1,
        "the throttled backend was not called again"
    );
    assert!(
        gw.circuit_open("chat", 2),
        "the circuit is at the busy backend's new place"
    );
    assert!(!gw.circuit_open("chat", 1));
}
