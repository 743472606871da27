//! Bad input gets a clear 4xx with an OpenAI-shaped error body, and the server keeps serving.

use aigw_core::Settings;
use aigw_tests::*;
use serde_json::Value;

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["error"]["code"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_get_clear_errors() {
    let a = simulator("a", Behaviour::default()).await;
    let settings = Settings {
        max_body_bytes: 1024,
        ..Settings::default()
    };
    let gw =
        TestGateway::start_with(app_config("chat", &[("ptu", &a.url(), None)]), settings).await;
    let http = reqwest::Client::new();
    let lb = gw.lb("chat");

    let (s, b) = error_of(http.post(&lb).body("{not json").send().await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (s, _) = error_of(http.post(&lb).body("[1,2]").send().await.unwrap()).await;
    assert_eq!(s, 400);
    let (s, _) = error_of(http.post(&lb).body("").send().await.unwrap()).await;
    assert_eq!(s, 400);
    let (s, _) = error_of(
        http.post(&lb)
            .body(r#"{"stream":"yes"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);

    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2048)
    );
    let (s, b) = error_of(http.post(&lb).body(big.clone()).send().await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("request_too_large"))
    );
    // Without a declared length (chunked), the limit still holds.
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(vec![Ok::<
        _,
        std::io::Error,
    >(big)]));
    let (s, _) = error_of(http.post(&lb).body(chunked).send().await.unwrap()).await;
    assert_eq!(s, 413);

    let (s, b) = error_of(
        http.post(gw.lb("nope"))
            .json(&chat_body("hi", false))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("application_not_found"))
    );
    let (s, _) = error_of(http.get(&lb).send().await.unwrap()).await;
    assert_eq!(s, 405);
    let (s, _) = error_of(
        http.post(format!("{}/somewhere/else", gw.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);

    assert_eq!(a.stats().requests, 0, "nothing bad reached the backend");
    let ok = http
        .post(&lb)
        .json(&chat_body("still serving?", false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn an_inactive_application_is_refused() {
    let a = simulator("a", Behaviour::default()).await;
    let mut config = app_config("chat", &[("ptu", &a.url(), None)]);
    config["applications"][0]["isActive"] = Value::Bool(false);
    let gw = TestGateway::start(config).await;
    let r = post_chat(&gw, "chat", "hi", false).await;
    let (s, b) = error_of(r).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("application_inactive"))
    );
}
