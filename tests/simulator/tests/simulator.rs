//! The simulator over real sockets, driven by a real HTTP client.
//!
//! Every test is bounded in time: each network step runs under a timeout,
//! and counters are awaited with a bounded polling loop, never a blind sleep.

// Helpers outside `#[test]` functions fail the test the same way assertions do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::{Duration, Instant};

use aigw_simulator::{
    Behaviour, Mode, RetryAfterHeader, SimOptions, Simulator, Stats, cosine, embed,
};
use futures_util::StreamExt;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const STEP: Duration = Duration::from_secs(10);

/// Runs one step of a test under a deadline.
async fn bounded<F: Future>(step: F) -> F::Output {
    tokio::time::timeout(STEP, step)
        .await
        .expect("test step timed out")
}

async fn start(opts: SimOptions) -> Simulator {
    bounded(Simulator::start(opts)).await.unwrap()
}

async fn start_with(behaviour: Behaviour) -> Simulator {
    start(SimOptions {
        behaviour,
        ..SimOptions::default()
    })
    .await
}

/// Waits until the stats satisfy `done` (for at most a few seconds).
async fn stats_until(sim: &Simulator, done: impl Fn(&Stats) -> bool) -> Stats {
    match sim.wait_for_stats(Duration::from_secs(5), done).await {
        Ok(stats) => stats,
        Err(stats) => panic!("stats never got there: {stats:?}"),
    }
}

fn chat(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the gateway"}
        ]
    });
    if stream {
        body["stream"] = json!(true);
    }
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

async fn post(client: &Client, url: String, body: &Value) -> Response {
    bounded(client.post(url).json(body).send()).await.unwrap()
}

async fn post_chat(sim: &Simulator, body: &Value) -> Response {
    post(
        &Client::new(),
        format!("{}/v1/chat/completions", sim.url()),
        body,
    )
    .await
}

async fn json_of(response: Response) -> Value {
    bounded(response.json::<Value>()).await.unwrap()
}

/// The `data:` payloads of a whole SSE body.
async fn events_of(response: Response) -> Vec<String> {
    let text = bounded(response.text()).await.unwrap();
    split_events(&text)
}

fn split_events(text: &str) -> Vec<String> {
    text.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .expect("every event is a data line")
                .to_owned()
        })
        .collect()
}

fn header<'r>(response: &'r Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn chat_completion_json_shape_and_headers() {
    let sim = start(SimOptions {
        name: Some("alpha".into()),
        ..SimOptions::default()
    })
    .await;
    let response = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(header(&response, "x-sim-name"), Some("alpha"));
    assert_eq!(header(&response, "x-request-id").unwrap().len(), 36);
    assert!(header(&response, "apim-request-id").is_some());
    assert!(header(&response, "x-ratelimit-remaining-requests").is_some());
    assert!(header(&response, "x-ratelimit-remaining-tokens").is_some());
    let v = json_of(response).await;
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .unwrap()
            .contains("alpha")
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &v["usage"];
    // 3 + 5 words, plus 3 per message.
    assert_eq!(usage["prompt_tokens"], 8 + 6);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.requests, stats.status_200, stats.in_flight),
        (1, 1, 0)
    );
    bounded(sim.shutdown()).await;
}

#[tokio::test]
async fn azure_paths_default_the_model_to_the_deployment_and_fix_completion_size() {
    let sim = start_with(Behaviour {
        completion_tokens: Some(42),
        ..Behaviour::default()
    })
    .await;
    let client = Client::new();
    let url = format!(
        "{}/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01",
        sim.url()
    );
    let v = json_of(
        post(
            &client,
            url,
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(v["model"], "my-gpt");
    assert_eq!(v["usage"]["completion_tokens"], 42);
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        42
    );
    for path in ["/openai/v1/chat/completions", "/chat/completions"] {
        let response = post(&client, format!("{}{path}", sim.url()), &chat(false, false)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn stream_on_openai_path_with_usage() {
    let sim = start(SimOptions::default()).await;
    let response = post_chat(&sim, &chat(true, true)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), Some("text/event-stream"));
    let events = events_of(response).await;
    // role, 5 content chunks, finish, usage, [DONE]
    assert_eq!(events.len(), 9, "{events:#?}");
    let chunks: Vec<Value> = events[..8]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks[..8] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["model"], "gpt-4o");
    }
    let text: String = chunks[1..6]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(text.starts_with("Simulated reply from simulator:"));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[7]["choices"], json!([]));
    assert_eq!(
        chunks[7]["usage"]["completion_tokens"],
        text.split_whitespace().count()
    );
    assert_eq!(events[8], "[DONE]");
    let stats = stats_until(&sim, |s| s.streams_completed == 1).await;
    assert_eq!(
        (
            stats.streams_started,
            stats.streams_cancelled,
            stats.in_flight
        ),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn stream_on_azure_path_starts_with_prompt_filter_and_omits_usage_by_default() {
    let sim = start_with(Behaviour {
        chunks: 2,
        ..Behaviour::default()
    })
    .await;
    let url = format!(
        "{}/openai/deployments/d1/chat/completions?api-version=2024-06-01",
        sim.url()
    );
    let events = events_of(post(&Client::new(), url, &chat(true, false)).await).await;
    // prompt filter, role, 2 content chunks, finish, [DONE]
    assert_eq!(events.len(), 6, "{events:#?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        first,
        json!({"id":"","choices":[],"created":0,"model":"","object":"",
               "prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]})
    );
    let finish: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish.get("usage").is_none());
    assert_eq!(events[5], "[DONE]");
}

#[tokio::test]
async fn legacy_completions_json_and_stream() {
    let sim = start(SimOptions::default()).await;
    let client = Client::new();
    let url = format!("{}/v1/completions", sim.url());
    let v = json_of(
        post(
            &client,
            url.clone(),
            &json!({"model": "davinci", "prompt": "one two three"}),
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "text_completion");
    assert!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Simulated reply")
    );
    assert_eq!(v["usage"]["prompt_tokens"], 3);

    let body =
        json!({"prompt": ["a", "b"], "stream": true, "stream_options": {"include_usage": true}});
    let events = events_of(post(&client, url, &body).await).await;
    // 5 content chunks, finish, usage, [DONE]
    assert_eq!(events.len(), 8, "{events:#?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert!(first["choices"][0]["text"].is_string());
    let usage: Value = serde_json::from_str(&events[6]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 2);
}

#[tokio::test]
async fn chunks_arrive_spaced_by_the_interval() {
    let sim = start_with(Behaviour {
        chunks: 3,
        chunk_interval_ms: 100,
        ..Behaviour::default()
    })
    .await;
    let response = post_chat(&sim, &chat(true, false)).await;
    let started = Instant::now();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut arrivals = Vec::new();
    while let Some(piece) = bounded(body.next()).await {
        text.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
        let complete = text.matches("\n\n").count();
        while arrivals.len() < complete {
            arrivals.push(started.elapsed());
        }
    }
    // role, 3 content chunks, finish, [DONE]: five intervals in between.
    assert_eq!(arrivals.len(), 6, "{text}");
    let (first, last) = (arrivals[0], arrivals[5]);
    assert!(
        first < Duration::from_millis(250),
        "first event took {first:?}"
    );
    assert!(
        last - first >= Duration::from_millis(350),
        "events came too close: {arrivals:?}"
    );
}

#[tokio::test]
async fn throttle_speaks_every_retry_after_dialect() {
    let sim = start(SimOptions::default()).await;
    let client = Client::new();
    let url = format!("{}/v1/chat/completions", sim.url());
    for dialect in [
        RetryAfterHeader::Ms,
        RetryAfterHeader::XMs,
        RetryAfterHeader::Seconds,
        RetryAfterHeader::Date,
        RetryAfterHeader::All,
        RetryAfterHeader::None,
    ] {
        sim.set_behaviour(Behaviour {
            retry_after_ms: 2500,
            retry_after_header: dialect,
            ..Behaviour::with_mode(Mode::Throttle)
        });
        let response = post(&client, url.clone(), &chat(false, false)).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let ms = header(&response, "retry-after-ms").map(str::to_owned);
        let x_ms = header(&response, "x-ms-retry-after-ms").map(str::to_owned);
        let after = header(&response, "retry-after").map(str::to_owned);
        match dialect {
            RetryAfterHeader::Ms => {
                assert_eq!((ms.as_deref(), x_ms, after), (Some("2500"), None, None))
            }
            RetryAfterHeader::XMs => {
                assert_eq!((ms, x_ms.as_deref(), after), (None, Some("2500"), None))
            }
            RetryAfterHeader::Seconds => {
                assert_eq!((ms, x_ms, after.as_deref()), (None, None, Some("3")))
            }
            RetryAfterHeader::Date => {
                assert_eq!((ms, x_ms), (None, None));
                assert!(after.unwrap().ends_with(" GMT"));
            }
            RetryAfterHeader::All => assert_eq!(
                (ms.as_deref(), x_ms.as_deref(), after.as_deref()),
                (Some("2500"), Some("2500"), Some("3"))
            ),
            RetryAfterHeader::None => assert_eq!((ms, x_ms, after), (None, None, None)),
        }
        let v = json_of(response).await;
        assert_eq!(v["error"]["code"], "429");
    }
    assert_eq!(sim.stats().status_429, 6);
}

#[tokio::test]
async fn fail_next_reverts_to_ok_by_itself() {
    let sim = start_with(Behaviour {
        status: 503,
        fail_next: Some(2),
        ..Behaviour::with_mode(Mode::Error)
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post_chat(&sim, &chat(false, false)).await.status().as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 200]);
    assert_eq!(sim.behaviour().fail_next, Some(0));
    let stats = sim.stats();
    assert_eq!((stats.status_5xx, stats.status_200), (2, 2));
}

#[tokio::test]
async fn throttle_every_follows_its_schedule() {
    let sim = start_with(Behaviour {
        throttle_every: Some(3),
        ..Behaviour::default()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post_chat(&sim, &chat(false, false)).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
}

#[tokio::test]
async fn rpm_budget_answers_429_until_the_window_frees() {
    let sim = start_with(Behaviour {
        rpm: Some(2),
        retry_after_header: RetryAfterHeader::Ms,
        ..Behaviour::default()
    })
    .await;
    let first = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("1"));
    let second = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(header(&second, "x-ratelimit-remaining-requests"), Some("0"));
    let third = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = header(&third, "retry-after-ms").unwrap().parse().unwrap();
    assert!(wait > 0 && wait <= 60_000, "retry-after-ms {wait}");
}

#[tokio::test]
async fn tpm_budget_counts_tokens() {
    let sim = start_with(Behaviour {
        tpm: Some(50),
        completion_tokens: Some(20),
        ..Behaviour::default()
    })
    .await;
    // Each call costs 14 prompt + 20 completion tokens.
    assert_eq!(
        post_chat(&sim, &chat(false, false)).await.status(),
        StatusCode::OK
    );
    let refused = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(header(&refused, "x-ratelimit-remaining-tokens"), Some("16"));
}

#[tokio::test]
async fn error_mode_answers_the_configured_status() {
    let sim = start_with(Behaviour {
        status: 502,
        ..Behaviour::with_mode(Mode::Error)
    })
    .await;
    let response = post_chat(&sim, &chat(false, false)).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let v = json_of(response).await;
    assert_eq!(v["error"]["code"], "BadGateway");
    assert!(v["error"]["message"].is_string());
}

#[tokio::test]
async fn drop_mode_closes_the_connection_without_an_answer() {
    let sim = start_with(Behaviour::with_mode(Mode::Drop)).await;
    let result = bounded(
        Client::new()
            .post(format!("{}/v1/chat/completions", sim.url()))
            .json(&chat(false, false))
            .send(),
    )
    .await;
    let error = result.expect_err("a dropped connection is an error");
    assert!(error.status().is_none() && !error.is_timeout(), "{error:?}");
    let stats = stats_until(&sim, |s| s.dropped == 1).await;
    assert_eq!(
        (stats.requests, stats.status_200, stats.in_flight),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn drop_mid_stream_sends_some_chunks_then_breaks() {
    let sim = start_with(Behaviour::with_mode(Mode::DropMidStream)).await;
    let response = post_chat(&sim, &chat(true, false)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut failed = false;
    while let Some(piece) = bounded(body.next()).await {
        match piece {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body must end in an error, got {text:?}");
    // chunks_before_drop defaults to 2: the role event and one content event.
    assert_eq!(split_events(&text).len(), 2, "{text:?}");
    assert!(!text.contains("[DONE]"));
    let stats = stats_until(&sim, |s| s.dropped == 1 && s.in_flight == 0).await;
    assert_eq!(
        (
            stats.streams_started,
            stats.streams_completed,
            stats.streams_cancelled
        ),
        (1, 0, 0)
    );

    // A request that does not stream is dropped outright.
    let plain = bounded(
        Client::new()
            .post(format!("{}/v1/chat/completions", sim.url()))
            .json(&chat(false, false))
            .send(),
    )
    .await;
    assert!(plain.is_err());
}

#[tokio::test]
async fn hang_until_the_client_gives_up_counts_a_cancellation() {
    let sim = start_with(Behaviour::with_mode(Mode::Hang)).await;
    let client = Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let result = bounded(
        client
            .post(format!("{}/v1/chat/completions", sim.url()))
            .json(&chat(false, false))
            .send(),
    )
    .await;
    assert!(result.unwrap_err().is_timeout());
    let stats = stats_until(&sim, |s| s.cancelled_before_response == 1).await;
    assert_eq!((stats.in_flight, stats.dropped), (0, 0));
}

#[tokio::test]
async fn first_byte_delay_holds_the_answer() {
    let sim = start_with(Behaviour {
        first_byte_ms: 150,
        ..Behaviour::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        post_chat(&sim, &chat(false, false)).await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));

    // A client that stops waiting is counted as cancelled before the response.
    sim.set_behaviour(Behaviour {
        first_byte_ms: 5_000,
        ..Behaviour::default()
    });
    let impatient = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let result = bounded(
        impatient
            .post(format!("{}/v1/chat/completions", sim.url()))
            .json(&chat(false, false))
            .send(),
    )
    .await;
    assert!(result.is_err());
    stats_until(&sim, |s| s.cancelled_before_response == 1).await;
}

#[tokio::test]
async fn dropping_a_stream_midway_counts_a_cancelled_stream() {
    let sim = start_with(Behaviour {
        chunk_interval_ms: 1_000,
        ..Behaviour::default()
    })
    .await;
    let response = post_chat(&sim, &chat(true, false)).await;
    let mut body = response.bytes_stream();
    let first = bounded(body.next()).await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    assert_eq!(sim.stats().in_flight, 1);
    drop(body);
    let stats = stats_until(&sim, |s| s.streams_cancelled == 1).await;
    assert_eq!((stats.streams_started, stats.streams_completed), (1, 0));
    stats_until(&sim, |s| s.in_flight == 0).await;
}

#[tokio::test]
async fn sse_content_type_can_be_overridden() {
    let sim = start_with(Behaviour {
        sse_content_type: Some("application/json".into()),
        ..Behaviour::default()
    })
    .await;
    let response = post_chat(&sim, &chat(true, false)).await;
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(
        events_of(response).await.last().map(String::as_str),
        Some("[DONE]")
    );
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let sim = start(SimOptions {
        api_key: Some("s3cret".into()),
        ..SimOptions::default()
    })
    .await;
    let client = Client::new();
    let url = format!("{}/openai/deployments/d/chat/completions", sim.url());
    let send = |request: reqwest::RequestBuilder| async move {
        bounded(request.json(&chat(false, false)).send())
            .await
            .unwrap()
    };

    let missing = send(client.post(&url)).await;
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let v = json_of(missing).await;
    assert_eq!(v["error"]["code"], "401");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Access denied due to invalid subscription key")
    );
    assert_eq!(
        send(client.post(&url).header("api-key", "wrong"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(client.post(&url).header("api-key", "s3cret"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        send(client.post(&url).bearer_auth("s3cret")).await.status(),
        StatusCode::OK
    );
    assert_eq!(sim.stats().status_401, 2);
}

#[tokio::test]
async fn content_filter_trigger_gets_azures_400() {
    let sim = start(SimOptions::default()).await;
    let body =
        json!({"messages": [{"role": "user", "content": "please trigger-content-filter now"}]});
    let response = post_chat(&sim, &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let v = json_of(response).await;
    let e = &v["error"];
    assert_eq!(e["code"], "content_filter");
    assert_eq!(e["param"], "prompt");
    assert_eq!(e["status"], 400);
    assert!(e["type"].is_null());
    assert_eq!(e["innererror"]["code"], "ResponsibleAIPolicyViolation");
    assert_eq!(
        e["innererror"]["content_filter_result"]["violence"],
        json!({"filtered": true, "severity": "medium"})
    );
}

#[tokio::test]
async fn bad_json_gets_an_openai_400() {
    let sim = start(SimOptions::default()).await;
    let response = bounded(
        Client::new()
            .post(format!("{}/v1/chat/completions", sim.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let v = json_of(response).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].is_string());
    assert_eq!(sim.stats().status_400, 1);
}

#[tokio::test]
async fn embeddings_are_deterministic_and_semantic() {
    let sim = start(SimOptions::default()).await;
    let client = Client::new();
    let url = format!(
        "{}/openai/deployments/emb/embeddings?api-version=2024-06-01",
        sim.url()
    );
    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "the quick brown fox jumped over the lazy dog",
        "quarterly revenue grew in every region except europe",
    ];
    let v = json_of(post(&client, url.clone(), &json!({"input": texts})).await).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "emb");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let vectors: Vec<Vec<f32>> = (0..3)
        .map(|i| {
            assert_eq!(v["data"][i]["index"], i);
            assert_eq!(v["data"][i]["object"], "embedding");
            serde_json::from_value(v["data"][i]["embedding"].clone()).unwrap()
        })
        .collect();
    assert!(vectors.iter().all(|vector| vector.len() == 1536));
    assert!(cosine(&vectors[0], &vectors[1]) > 0.8);
    assert!(cosine(&vectors[0], &vectors[2]).abs() < 0.2);
    assert_eq!(
        vectors[0],
        embed(texts[0], 1536),
        "the library function gives the served vector"
    );

    let again = json_of(
        post(
            &client,
            url.clone(),
            &json!({"input": texts[0], "dimensions": 64}),
        )
        .await,
    )
    .await;
    let small: Vec<f32> = serde_json::from_value(again["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(small, embed(texts[0], 64));

    let bad = post(&client, url, &json!({"input": []})).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn control_endpoints() {
    let sim = start(SimOptions::default()).await;
    let client = Client::new();
    let base = sim.url();
    let health = bounded(client.get(format!("{base}/healthz")).send())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let put = |body: &'static str| {
        let request = client.put(format!("{base}/_sim/behaviour")).body(body);
        async move { bounded(request.send()).await.unwrap() }
    };
    assert_eq!(
        put(r#"{"mode":"throttle","retry_after_ms":100}"#)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.behaviour().mode, Mode::Throttle);
    assert_eq!(
        post_chat(&sim, &chat(false, false)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let rejected = put(r#"{"mode":"throttle","colour":"red"}"#).await;
    assert_eq!(rejected.status(), StatusCode::BAD_REQUEST);
    assert!(
        json_of(rejected).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );

    let read = bounded(client.get(format!("{base}/_sim/behaviour")).send())
        .await
        .unwrap();
    assert_eq!(json_of(read).await["retry_after_ms"], 100);

    let stats = bounded(client.get(format!("{base}/_sim/stats")).send())
        .await
        .unwrap();
    let stats: Stats = bounded(stats.json()).await.unwrap();
    assert_eq!(
        (stats.requests, stats.status_429),
        (1, 1),
        "control calls are not counted"
    );
    assert_eq!(stats, sim.stats());

    let reset = bounded(client.post(format!("{base}/_sim/reset")).send())
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.stats(), Stats::default());
}

#[tokio::test]
async fn unknown_paths_get_404() {
    let sim = start(SimOptions::default()).await;
    let client = Client::new();
    let response = bounded(
        client
            .post(format!("{}/v1/images/generations", sim.url()))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(header(&response, "x-request-id").is_some());
    let v = json_of(response).await;
    assert_eq!(v["error"]["code"], "404");
    assert!(v["error"]["message"].is_string());
    let get = bounded(
        client
            .get(format!("{}/v1/chat/completions", sim.url()))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    assert_eq!(sim.stats().status_404, 2);
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    let sim = start(SimOptions::default()).await;
    let client = Client::builder().http2_prior_knowledge().build().unwrap();
    let response = post(
        &client,
        format!("{}/v1/chat/completions", sim.url()),
        &chat(true, true),
    )
    .await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        events_of(response).await.last().map(String::as_str),
        Some("[DONE]")
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let sim = start(SimOptions::default()).await;
    let url = format!("{}/healthz", sim.url());
    assert!(bounded(Client::new().get(&url).send()).await.is_ok());
    bounded(sim.shutdown()).await;
    assert!(bounded(Client::new().get(&url).send()).await.is_err());
}

#[tokio::test]
async fn shutdown_releases_hanging_requests() {
    let sim = start_with(Behaviour::with_mode(Mode::Hang)).await;
    let url = format!("{}/v1/chat/completions", sim.url());
    let hanging = tokio::spawn(async move {
        Client::new()
            .post(url)
            .json(&chat(false, false))
            .send()
            .await
    });
    let sim_ref = &sim;
    stats_until(sim_ref, |s| s.in_flight == 1).await;
    let started = Instant::now();
    bounded(sim.shutdown()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown waited for the hang"
    );
    assert!(bounded(hanging).await.unwrap().is_err());
}

mod binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;

    use super::*;

    fn wait_exit(child: &mut Child) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the simulator did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn prints_its_address_serves_and_exits_on_sigterm() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_simulator"))
            .args([
                "--port",
                "0",
                "--name",
                "bin-sim",
                "--behaviour",
                r#"{"chunks":1}"#,
            ])
            .env_remove("SIM_PORT")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let url = line
            .trim()
            .strip_prefix("simulator listening on ")
            .unwrap()
            .to_owned();
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{line}"
        );

        let response = post(
            &Client::new(),
            format!("{url}/v1/chat/completions"),
            &chat(false, false),
        )
        .await;
        assert_eq!(header(&response, "x-sim-name"), Some("bin-sim"));
        let stats: Stats = bounded(
            bounded(Client::new().get(format!("{url}/_sim/stats")).send())
                .await
                .unwrap()
                .json(),
        )
        .await
        .unwrap();
        assert_eq!(stats.status_200, 1);

        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert!(wait_exit(&mut child).success());
    }

    #[test]
    fn bad_arguments_exit_with_code_2() {
        for args in [&["--bogus"][..], &["--port", "nope"], &["--behaviour", "{"]] {
            let mut child = Command::new(env!("CARGO_BIN_EXE_simulator"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            assert_eq!(wait_exit(&mut child).code(), Some(2), "{args:?}");
        }
    }
}
