//! Riding through throttling and failures: 429 circuits, RPM skips, 5xx and connection
//! failures, client errors that must not eject an endpoint, and the all-busy answer.

use aigw_simulator::{Mode, RetryAfterHeader};
use aigw_tests::*;
use serde_json::Value;
use std::time::Duration;

async fn post(gw: &TestGateway, text: &str) -> reqwest::Response {
    post_chat(gw, "chat", text, false).await
}

fn served_by(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-endpoint-id")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_429_opens_the_circuit_and_fails_over_within_the_request() {
    let a = simulator("a", throttled(30_000)).await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;

    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "payg");
    // The circuit is open: the next requests go straight to the second endpoint.
    for _ in 0..3 {
        assert_eq!(served_by(&post(&gw, "hi").await), "payg");
    }
    assert_eq!(
        a.stats().requests,
        1,
        "the throttled endpoint is not called again while open"
    );
    assert_eq!(b.stats().requests, 4);
}

#[tokio::test]
async fn every_retry_after_header_form_is_honoured() {
    for (header, expect_secs) in [
        (RetryAfterHeader::Ms, 3),
        (RetryAfterHeader::XMs, 3),
        (RetryAfterHeader::Seconds, 3),
        (RetryAfterHeader::Date, 3),
    ] {
        let a = simulator(
            "a",
            Behaviour {
                mode: Mode::Throttle,
                retry_after_ms: 2_100,
                retry_after_header: header,
                ..Default::default()
            },
        )
        .await;
        let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
        let r = post(&gw, "hi").await;
        assert_eq!(r.status(), 429, "{header:?}");
        let secs: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // An HTTP date has whole-second precision, so it may round down by up to a second.
        assert!(
            (expect_secs - 1..=expect_secs).contains(&secs),
            "{header:?}: {secs}"
        );
    }
}

#[tokio::test]
async fn all_busy_answers_429_with_the_shortest_wait() {
    let a = simulator("a", throttled(9_000)).await;
    let b = simulator("b", throttled(2_500)).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;

    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3", "2.5 s rounds up to 3");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "429");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retry after 3 seconds")
    );

    // Both circuits open now: answered without calling either backend.
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&secs));
    assert_eq!((a.stats().requests, b.stats().requests), (1, 1));
}

#[tokio::test]
async fn a_429_without_any_wait_header_uses_the_default_wait() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::Throttle,
            retry_after_header: RetryAfterHeader::None,
            ..Default::default()
        },
    )
    .await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), None)])).await;
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 429, "never a 500 for a 429 without Retry-After");
    assert_eq!(r.headers()["retry-after"], "10");
}

#[tokio::test]
async fn the_circuit_closes_after_the_wait() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::Throttle,
            retry_after_ms: 300,
            fail_next: Some(1),
            ..Default::default()
        },
    )
    .await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;
    assert_eq!(served_by(&post(&gw, "hi").await), "payg");
    let back = eventually(Duration::from_secs(5), || async {
        served_by(&post(&gw, "hi").await) == "ptu"
    })
    .await;
    assert!(
        back,
        "traffic returns to the first priority once its wait is over"
    );
    assert_eq!(a.stats().status_429, 1);
}

#[tokio::test]
async fn a_spent_rpm_budget_skips_the_endpoint() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    // 12 rpm: 2 per 10 s, all that a burst may use.
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), Some(12)), ("payg", &b.url(), None)],
    ))
    .await;
    let served: Vec<String> = futures_util::future::join_all((0..5).map(|_| post(&gw, "hi")))
        .await
        .iter()
        .map(served_by)
        .collect();
    assert_eq!(
        served.iter().filter(|s| *s == "ptu").count(),
        2,
        "{served:?}"
    );
    assert_eq!(
        served.iter().filter(|s| *s == "payg").count(),
        3,
        "{served:?}"
    );
    assert_eq!(
        a.stats().requests,
        2,
        "concurrent requests never overshoot the limit"
    );
}

#[tokio::test]
async fn a_spent_rpm_budget_alone_answers_429_with_the_window_wait() {
    let a = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &a.url(), Some(1))])).await;
    assert_eq!(post(&gw, "hi").await.status(), 200);
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // A leased permit counts for its 1 s validity plus the 60 s window.
    assert!((60..=61).contains(&secs), "{secs}");
}

#[tokio::test]
async fn server_errors_and_connection_failures_fail_over() {
    let a = simulator("a", failing(500)).await;
    let b = simulator(
        "b",
        Behaviour {
            mode: Mode::Error,
            status: 503,
            retry_after_header: RetryAfterHeader::None,
            ..Default::default()
        },
    )
    .await;
    let c = simulator("c", Behaviour::default()).await;
    let dead = closed_port_url().await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[
            ("down", &dead, None),
            ("e500", &a.url(), None),
            ("e503", &b.url(), None),
            ("ok", &c.url(), None),
        ],
    ))
    .await;
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "ok");
    assert_eq!(
        (a.stats().requests, b.stats().requests, c.stats().requests),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn dropped_connections_fail_over() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::Drop,
            ..Default::default()
        },
    )
    .await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("flaky", &a.url(), None), ("ok", &b.url(), None)],
    ))
    .await;
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 200);
    assert_eq!(served_by(&r), "ok");
}

#[tokio::test]
async fn when_everything_fails_the_client_gets_a_502_naming_each_endpoint() {
    let a = simulator("a", failing(500)).await;
    let dropper = simulator(
        "dropper",
        Behaviour {
            mode: aigw_simulator::Mode::Drop,
            ..Default::default()
        },
    )
    .await;
    let dead = closed_port_url().await;
    // A backend that answers with something that is not HTTP.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = garbage.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(b"SSH-2.0-not-http\r\n\r\n").await;
        }
    });
    let gw = TestGateway::start(app_config(
        "chat",
        &[
            ("e500", &a.url(), None),
            ("down", &dead, None),
            ("dropped", &dropper.url(), None),
            ("garbled", &garbage_url, None),
        ],
    ))
    .await;
    let r = post(&gw, "hi").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    for part in [
        "e500: status 500",
        "down: connect",
        "dropped: reset",
        "garbled: protocol",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    let details: Vec<(String, String)> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["endpoint"].as_str().unwrap().to_owned(),
                d["failure"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(details.len(), 4, "{details:?}");
    assert!(details.contains(&("garbled".into(), "protocol".into())));
    assert!(
        !text.contains("127.0.0.1") && !text.contains("http://") && !text.contains("url"),
        "no backend address leaks: {text}"
    );
}

#[tokio::test]
async fn a_throttled_endpoint_beats_a_failed_one_in_the_final_answer() {
    let a = simulator("a", throttled(4_000)).await;
    let b = simulator("b", failing(500)).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("busy", &a.url(), None), ("broken", &b.url(), None)],
    ))
    .await;
    let r = post(&gw, "hi").await;
    assert_eq!(
        r.status(),
        429,
        "a 5xx elsewhere never masks a retryable 429"
    );
    assert_eq!(r.headers()["retry-after"], "4");
}

#[tokio::test]
async fn a_content_filter_400_is_returned_as_is_and_the_endpoint_stays_healthy() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;
    let r = post(&gw, "please trigger-content-filter now").await;
    assert_eq!(r.status(), 400);
    assert_eq!(served_by(&r), "ptu");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_filter");
    assert_eq!(
        body["error"]["innererror"]["code"],
        "ResponsibleAIPolicyViolation"
    );
    assert_eq!(
        served_by(&post(&gw, "a normal question").await),
        "ptu",
        "not ejected"
    );
    assert_eq!(b.stats().requests, 0, "no failover on a client error");
}

#[tokio::test]
async fn a_backend_failure_mid_stream_ends_that_stream_without_failover() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::DropMidStream,
            chunks: 10,
            ..Default::default()
        },
    )
    .await;
    let b = simulator("b", Behaviour::default()).await;
    let gw = TestGateway::start(app_config(
        "chat",
        &[("ptu", &a.url(), None), ("payg", &b.url(), None)],
    ))
    .await;
    let r = post_chat(&gw, "chat", "hi", true).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await;
    assert!(
        body.is_err(),
        "the client sees the stream break, not a clean end: {body:?}"
    );
    assert_eq!(
        b.stats().requests,
        0,
        "a second response is never written into the same one"
    );
}

#[tokio::test]
async fn a_stalled_backend_is_timed_out_and_failed_over() {
    let a = simulator(
        "a",
        Behaviour {
            mode: Mode::Hang,
            ..Default::default()
        },
    )
    .await;
    let b = simulator("b", Behaviour::default()).await;
    let mut config = app_config("chat", &[("slow", &a.url(), None), ("ok", &b.url(), None)]);
    config["applications"][0]["endpoints"][0]["timeouts"] = serde_json::json!({"responseMs": 200});
    let gw = TestGateway::start(config).await;
    let r = post(&gw, "hi").await;
    assert_eq!(served_by(&r), "ok");
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.stats().cancelled_before_response == 1
        })
        .await
    );
}
