//! Cancellation, graceful shutdown and live reload.

use aigw_simulator::Mode;
use aigw_tests::*;
use futures_util::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_request() {
    let a = simulator(
        "a",
        Behaviour {
            chunks: 200,
            chunk_interval_ms: 50,
            ..Default::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let response = post_chat(&gw, "chat", "hi", true).await;
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(first.unwrap().is_ok());
    drop(body);
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.stats().streams_cancelled == 1
        })
        .await,
        "{:?}",
        a.stats()
    );
    assert_eq!(a.stats().streams_completed, 0);
}

#[tokio::test]
async fn a_client_that_gives_up_before_the_answer_cancels_the_upstream_request() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::Hang,
            ..Default::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        client
            .post(gw.lb("chat"))
            .json(&chat_body("hi", false))
            .send()
            .await
            .is_err()
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.stats().cancelled_before_response == 1
        })
        .await,
        "{:?}",
        a.stats()
    );
}

#[tokio::test]
async fn shutdown_lets_a_stream_in_flight_finish_and_refuses_new_connections() {
    let a = simulator(
        "a",
        Behaviour {
            chunks: 8,
            chunk_interval_ms: 50,
            ..Default::default()
        },
    )
    .await;
    let mut gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let url = gw.lb("chat");
    let response = reqwest::Client::new()
        .post(&url)
        .json(&chat_body("hi", true))
        .send()
        .await
        .unwrap();
    gw.begin_shutdown();
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream in flight ran to its end"
    );
    tokio::time::timeout(Duration::from_secs(10), gw.finished())
        .await
        .unwrap()
        .unwrap();
    let after = reqwest::Client::new()
        .post(&url)
        .json(&chat_body("hi", false))
        .send()
        .await;
    assert!(after.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn a_reload_swaps_the_configuration_and_keeps_endpoint_state() {
    let a = simulator("a", throttled(60_000)).await;
    let b = simulator("b", Behaviour::default()).await;
    let c = simulator("c", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;
    let http = reqwest::Client::new();
    let served = |r: reqwest::Response| r.headers()["x-endpoint-id"].to_str().unwrap().to_owned();
    assert_eq!(
        served(
            http.post(gw.lb("chat"))
                .json(&chat_body("hi", false))
                .send()
                .await
                .unwrap()
        ),
        "payg"
    );

    // New config: same throttled "ptu" first, a new endpoint second.
    let env: [(&str, &str); 0] = [];
    let next = aigw_core::config::validate(
        app_config("chat", &[("ptu", &a.url(), None), ("west", &c.url(), None)]),
        &env,
    )
    .unwrap();
    gw.gateway.reload(next).unwrap();
    let r = http
        .post(gw.lb("chat"))
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        served(r),
        "west",
        "the open circuit of 'ptu' survived the reload"
    );
    assert_eq!(a.stats().requests, 1);
}
