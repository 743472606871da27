//! The gateway as a chatbot sees it: real OpenAI and Azure OpenAI clients (async-openai) over
//! real sockets, simulated backends behind.

use aigw_tests::*;
use async_openai::Client;
use async_openai::config::{AzureConfig, OpenAIConfig};
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use futures_util::StreamExt;
use std::time::Duration;

fn request(text: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("gpt-4o")
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content(text)
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn openai_sdk_json_chat_goes_to_the_first_priority() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;

    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(gw.lb("chat"))
            .with_api_key("client-key-never-forwarded"),
    );
    let answer = client.chat().create(request("Hello there")).await.unwrap();
    let text = answer.choices[0].message.content.clone().unwrap();
    assert!(text.contains("Simulated reply from a"), "{text}");
    assert!(answer.usage.unwrap().total_tokens > 0);
    assert_eq!((a.stats().requests, b.stats().requests), (1, 0));
}

#[tokio::test]
async fn azure_sdk_works_at_the_root_and_under_lb() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    for base in [gw.url(), format!("{}/api/v1/dev/apirouter/lb", gw.url())] {
        let client = Client::with_config(
            AzureConfig::new()
                .with_api_base(base)
                .with_deployment_id("chat")
                .with_api_version("2024-10-21")
                .with_api_key("client-key"),
        );
        let answer = client.chat().create(request("Hi")).await.unwrap();
        assert!(
            answer.choices[0]
                .message
                .content
                .as_deref()
                .unwrap()
                .contains("from a")
        );
    }
    assert_eq!(a.stats().requests, 2);
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_backend_finishes() {
    let a = simulator(
        "a",
        Behaviour {
            chunks: 6,
            chunk_interval_ms: 150,
            ..Default::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let client = Client::with_config(OpenAIConfig::new().with_api_base(gw.lb("chat")));
    let mut req = request("Stream please");
    req.stream = Some(true);
    req.stream_options = Some(ChatCompletionStreamOptions {
        include_usage: Some(true),
        include_obfuscation: None,
    });
    let mut stream = client.chat().create_stream(req).await.unwrap();

    let mut content_chunks = 0;
    let mut completed_when_first_seen = None;
    let mut usage = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        let chunk = chunk.unwrap();
        if chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_ref())
            .is_some_and(|c| !c.is_empty())
        {
            content_chunks += 1;
            if completed_when_first_seen.is_none() {
                completed_when_first_seen = Some(a.stats().streams_completed);
            }
        }
        if chunk.usage.is_some() {
            usage = chunk.usage;
        }
    }
    assert_eq!(content_chunks, 6);
    assert_eq!(
        completed_when_first_seen,
        Some(0),
        "the first chunk arrived while the backend was still streaming"
    );
    assert!(
        usage.unwrap().total_tokens > 0,
        "the usage chunk the client asked for is relayed"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.stats().streams_completed == 1
        })
        .await
    );
}

#[tokio::test]
async fn streams_are_event_streams_whatever_the_backend_declares() {
    let a = simulator(
        "a",
        Behaviour {
            sse_content_type: Some("application/json".into()),
            ..Default::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let response = post_chat(&gw, "chat", "hi", true).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

/// Gateway for a stream whose backend sends `chunks` events, one every `interval_ms`, on an
/// endpoint whose idle limit is `idle_ms`.
async fn paced_stream(chunks: u32, interval_ms: u64, idle_ms: u64) -> (Simulator, TestGateway) {
    let a = simulator(
        "a",
        Behaviour {
            chunks,
            chunk_interval_ms: interval_ms,
            ..Default::default()
        },
    )
    .await;
    let mut config = app_config("chat", &[("ptu", &a.url(), None)]);
    config["applications"][0]["endpoints"][0]["timeouts"] = serde_json::json!({"idleMs": idle_ms});
    let gw = TestGateway::start(config).await;
    (a, gw)
}

#[tokio::test]
async fn a_stream_that_stalls_mid_body_is_cut_after_the_idle_limit() {
    let (_a, gw) = paced_stream(3, 5_000, 300).await;
    let started = std::time::Instant::now();
    let mut response = post_chat(&gw, "chat", "hi", true).await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "));
    // The next event is 5 s away: the body must end in error (never look complete) long before.
    let mut rest = Vec::new();
    let ended = loop {
        match response.chunk().await {
            Ok(Some(piece)) => rest.extend_from_slice(&piece),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(ended.is_err(), "a cut stream must not end cleanly");
    assert!(!String::from_utf8_lossy(&rest).contains("[DONE]"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn steady_pieces_keep_a_stream_alive_past_the_idle_limit() {
    // 8 events 100 ms apart: 800 ms in all, far past the 300 ms idle limit, never idle that long.
    let (_a, gw) = paced_stream(8, 100, 300).await;
    let text = post_chat(&gw, "chat", "hi", true)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn request_ids_and_rate_limit_headers_come_back() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let http = reqwest::Client::new();
    let response = http
        .post(gw.lb("chat"))
        .header("x-request-id", "my-trace-42")
        .header("api-key", "wrong-client-key")
        .header("authorization", "Bearer wrong-client-token")
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the backend got the configured key, not the client's"
    );
    let h = response.headers();
    assert_eq!(h["x-request-id"], "my-trace-42");
    assert_eq!(h["x-endpoint-id"], "ptu");
    assert!(h.contains_key("x-ratelimit-remaining-requests"));
    assert!(h.contains_key("x-ratelimit-remaining-tokens"));

    let response = http
        .post(gw.lb("chat"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("req_") && id.len() > 10, "{id}");
}

#[tokio::test]
async fn sdk_suffix_paths_and_the_aigateway_prefix_route_to_the_app() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/dev/apirouter/lb/chat/chat/completions",
        "/api/v1/dev/aigateway/lb/chat",
        "/api/v1/dev/apirouter/lb/deployments/chat/chat/completions",
        "/api/v1/dev/apirouter/lb/openai/deployments/chat/chat/completions?api-version=2024-02-01",
    ] {
        let r = http
            .post(format!("{}{path}", gw.url()))
            .json(&chat_body("hi", false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn instanceinfo_lists_endpoints_in_priority_order_without_keys() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), Some(60)), ("payg", &a.url(), None)],
    ))
    .await;
    let http = reqwest::Client::new();
    let info: serde_json::Value = http
        .get(format!("{}/api/v1/dev/apirouter/instanceinfo", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = info.to_string();
    assert!(!text.contains(BACKEND_KEY), "no key in {text}");
    let eps = &info["aiApplications"][0]["endpoints"];
    assert_eq!(eps[0]["id"], "ptu");
    assert_eq!(eps[0]["rpm"], 60);
    assert_eq!(eps[1]["priority"], 1);
    let health = http
        .get(format!("{}/api/v1/dev/apirouter/healthz", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
