//! Metrics counted right: cancelled streams, content filters by their code, the gateway's own
//! answers, token estimates for streams without usage, flushes that count once, and Prometheus
//! counters that never go down (over real sockets, the simulator, and real PostgreSQL where the
//! store matters).

#[path = "metrics/totals.rs"]
mod totals;

use aigw_core::metrics::estimate;
use aigw_simulator::Mode;
use aigw_tests::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const METRICS: &str = "/api/v1/dev/apirouter/metrics";

async fn get_json(url: String) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn metrics(gw: &TestGateway) -> Value {
    get_json(format!("{}{METRICS}", gw.url())).await
}

/// The `metrics` object of endpoint `id` of the first application.
fn endpoint(m: &Value, id: &str) -> Value {
    m["applicationMetrics"][0]["endpointMetrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap()["metrics"]
        .clone()
}

/// Every sample of `GET /metrics` (Prometheus), by series.
async fn prometheus(gw: &TestGateway) -> HashMap<String, f64> {
    let r = reqwest::get(format!("{}/metrics", gw.url())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("# EOF"), "0.0.4 text, not OpenMetrics");
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

/// Read a stream until two content deltas arrived, then hang up.
async fn hang_up_after_two_deltas(gw: &TestGateway) {
    let r = post_chat(gw, "chat", "tell me a long story", true).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = Vec::new();
    while seen
        .windows(DELTA.len())
        .filter(|w| *w == DELTA.as_bytes())
        .count()
        < 2
    {
        seen.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    drop(body);
}

const DELTA: &str = r#""delta":{"content":""#;

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_cancelled_not_failed() {
    // 200 words in 50 deltas: every delta has text.
    let slow = Behaviour {
        chunks: 50,
        chunk_interval_ms: 100,
        completion_tokens: Some(200),
        ..Behaviour::default()
    };
    let a = simulator("a", slow).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    hang_up_after_two_deltas(&gw).await;
    let counted = eventually(Duration::from_secs(5), || async {
        endpoint(&metrics(&gw).await, "ptu")["clientCancelledApiCalls"] == 1
    })
    .await;
    assert!(counted, "{:#}", endpoint(&metrics(&gw).await, "ptu"));
    let m = metrics(&gw).await;
    let ptu = endpoint(&m, "ptu");
    assert_eq!(ptu["failedApiCalls"], 0, "{ptu:#}");
    assert_eq!(ptu["apiCalls"], 0);
    assert_eq!(ptu["totalApiCalls"], 1);
    assert_eq!(m["clientCancelledApiCalls"], 1);
    assert_eq!(m["failedApiCalls"], 0);
    // The client asked for no usage and saw a few deltas: their tokens are estimated.
    let estimated = eventually(Duration::from_secs(5), || async {
        endpoint(&metrics(&gw).await, "ptu")["estimatedCompletionTokens"]
            .as_u64()
            .unwrap()
            > 0
    })
    .await;
    assert!(estimated, "{:#}", endpoint(&metrics(&gw).await, "ptu"));
    let p = prometheus(&gw).await;
    let labels = r#"app="chat",endpoint="ptu""#;
    let outcome = |o: &str| p[&series("aigw_requests_total", &format!("{labels},outcome=\"{o}\""))];
    assert_eq!((outcome("client_cancelled"), outcome("failed")), (1.0, 0.0));

    // A backend that breaks mid-stream is the endpoint's failure.
    a.set_behaviour(Behaviour {
        mode: Mode::DropMidStream,
        chunks_before_drop: 2,
        ..Behaviour::default()
    });
    let r = post_chat(&gw, "chat", "hi", true).await;
    assert!(r.bytes().await.is_err(), "the client's body is cut off");
    let failed = eventually(Duration::from_secs(5), || async {
        endpoint(&metrics(&gw).await, "ptu")["failedApiCalls"] == 1
    })
    .await;
    assert!(failed);
    assert_eq!(
        endpoint(&metrics(&gw).await, "ptu")["clientCancelledApiCalls"],
        1
    );
}

#[tokio::test]
async fn only_content_filter_errors_count_as_filtered() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let r = post_chat(&gw, "chat", aigw_simulator::CONTENT_FILTER_TRIGGER, false).await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("\"code\":\"content_filter\"")
    );
    a.set_behaviour(failing(400));
    let r = post_chat(&gw, "chat", "hi", false).await;
    assert_eq!(r.status(), 400, "a client error is relayed");
    r.bytes().await.unwrap();
    let m = metrics(&gw).await;
    let ptu = endpoint(&m, "ptu");
    assert_eq!(ptu["filteredApiCalls"], 1, "{ptu:#}");
    assert_eq!(
        ptu["failedApiCalls"], 2,
        "filters are failures too, as in the Node gateway"
    );
    assert_eq!(ptu["totalApiCalls"], 2);
    let p = prometheus(&gw).await;
    let labels = r#"app="chat",endpoint="ptu""#;
    assert_eq!(
        p[&series(
            "aigw_requests_total",
            &format!("{labels},outcome=\"filtered\"")
        )],
        1.0
    );
    assert_eq!(
        p[&series(
            "aigw_requests_total",
            &format!("{labels},outcome=\"failed\"")
        )],
        1.0
    );
}

#[tokio::test]
async fn the_gateways_own_answers_are_counted_per_application() {
    let a = simulator("a", Behaviour::default()).await;
    let mut config = app_config("chat", &[("ptu", &a.url(), None)]);
    config["applications"][0]["endpoints"][0]["timeouts"] = json!({"responseMs": 200});
    let gw = TestGateway::start(config).await;
    // A 1 ms wait: every request finds the endpoint callable again, and throttled.
    a.set_behaviour(throttled(1));
    for _ in 0..2 {
        assert_eq!(post_chat(&gw, "chat", "hi", false).await.status(), 429);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.set_behaviour(failing(500));
    assert_eq!(post_chat(&gw, "chat", "hi", false).await.status(), 502);
    a.set_behaviour(Behaviour {
        first_byte_ms: 2_000,
        ..Behaviour::default()
    });
    assert_eq!(post_chat(&gw, "chat", "hi", false).await.status(), 504);
    let bad = reqwest::Client::new()
        .post(gw.lb("chat"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = reqwest::Client::new()
        .post(gw.lb("nope"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        404,
        "not an application's answer: not counted"
    );

    let m = metrics(&gw).await;
    assert_eq!(
        m["applicationMetrics"][0]["gatewayAnswers"],
        json!({"429": 2, "502": 1, "504": 1, "4xx": 1})
    );
    let one = get_json(format!("{}{METRICS}/chat", gw.url())).await;
    assert_eq!(one["gatewayAnswers"]["429"], 2);
    let p = prometheus(&gw).await;
    let answers = |status: &str| {
        p[&series(
            "aigw_gateway_responses_total",
            &format!("app=\"chat\",status=\"{status}\""),
        )]
    };
    assert_eq!(
        (
            answers("429"),
            answers("502"),
            answers("504"),
            answers("4xx")
        ),
        (2.0, 1.0, 1.0, 1.0)
    );
}

/// A stream's content deltas and the model it names, as the client received them.
fn deltas(sse: &str) -> (String, Option<String>) {
    let mut text = String::new();
    let mut model = None;
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(m) = event["model"].as_str().filter(|m| !m.is_empty()) {
            model = Some(m.to_owned());
        }
        for choice in event["choices"].as_array().into_iter().flatten() {
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
    }
    (text, model)
}

#[tokio::test]
async fn a_stream_without_usage_has_its_tokens_estimated() {
    let a = simulator(
        "a",
        Behaviour {
            omit_usage: true,
            ..Behaviour::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let body = chat_body("How many tokens is this prompt, roughly?", true);
    let sse = reqwest::Client::new()
        .post(gw.lb("chat"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!sse.contains("\"usage\":{"), "the backend sent none");
    let (text, model) = deltas(&sse);
    assert!(!text.is_empty());
    let completion = estimate::count_text(model.as_deref(), &text);
    let prompt = estimate::prompt_tokens(model.as_deref(), body.to_string().as_bytes());
    assert!(prompt > 0 && completion > 0);
    let counted = eventually(Duration::from_secs(10), || async {
        endpoint(&metrics(&gw).await, "ptu")["estimatedCompletionTokens"] == completion
    })
    .await;
    let ptu = endpoint(&metrics(&gw).await, "ptu");
    assert!(counted, "{ptu:#}");
    assert_eq!(ptu["estimatedPromptTokens"], prompt);
    assert_eq!(
        (&ptu["promptTokens"], &ptu["completionTokens"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(ptu["apiCalls"], 1);
    assert_eq!(
        ptu["kInferenceTokens"].as_f64().unwrap(),
        (prompt + completion) as f64 / 1000.0
    );
    let p = prometheus(&gw).await;
    let tokens = |kind: &str, source: &str| {
        p[&series(
            "aigw_tokens_total",
            &format!("app=\"chat\",endpoint=\"ptu\",kind=\"{kind}\",source=\"{source}\""),
        )]
    };
    assert_eq!(tokens("prompt", "estimate"), prompt as f64);
    assert_eq!(tokens("completion", "estimate"), completion as f64);
    assert_eq!(tokens("total", "usage"), 0.0);

    // With usage, nothing is estimated.
    a.set_behaviour(Behaviour::default());
    post_chat(&gw, "chat", "hi", true)
        .await
        .text()
        .await
        .unwrap();
    let m = metrics(&gw).await;
    let ptu = endpoint(&m, "ptu");
    assert!(ptu["totalApiCalls"] == 2 && ptu["completionTokens"].as_u64().unwrap() > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ptu = endpoint(&metrics(&gw).await, "ptu");
    assert_eq!(ptu["estimatedCompletionTokens"], completion, "{ptu:#}");
}
