//! Server-sent event framing through the real gateway: a raw TCP backend (no HTTP library, so
//! the test decides every byte and every piece) sends streams framed with CRLF, LF or CR line
//! ends, JSON answers to stream requests, and an endless line; the client sees exactly the
//! backend's bytes minus the usage event it did not ask for, and going away stops the backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::raw::read_request;
use aigw_tests::*;
use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

const LIMIT: Duration = Duration::from_secs(20);

/// A response head with a chunked body.
fn head(content_type: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n"
    )
}

/// One chunk of a chunked body.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A backend answering every request with `body` as `content_type`, written in pieces of
/// `piece` bytes (one chunk each, so line ends fall across pieces). The bodies of the requests
/// it got come out of the receiver. Returns its base URL.
async fn scripted_backend(
    content_type: &'static str,
    body: Vec<u8>,
    piece: usize,
) -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (requests, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let (body, requests) = (body.clone(), requests.clone());
            tokio::spawn(async move {
                let request = read_request(&mut socket).await.body;
                let _ = requests.send(serde_json::from_slice(&request).unwrap());
                socket
                    .write_all(head(content_type).as_bytes())
                    .await
                    .unwrap();
                for part in body.chunks(piece) {
                    socket.write_all(&chunk(part)).await.unwrap();
                    socket.flush().await.unwrap();
                }
                socket.write_all(b"0\r\n\r\n").await.unwrap();
                socket.shutdown().await.unwrap();
            });
        }
    });
    (url, received)
}

const USAGE: &str = r#"data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;

/// A chat stream with every line ended by `eol`: content events, the usage event, `[DONE]`.
/// Returns it and what a client that did not ask for usage gets.
fn chat_stream(eol: &str) -> (Vec<u8>, Vec<u8>) {
    let events = [
        r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
        r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}"#,
        r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"}}],"usage":null}"#,
        r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        USAGE,
        "data: [DONE]",
    ];
    let (mut all, mut kept) = (String::new(), String::new());
    for e in events {
        let framed = format!("{e}{eol}{eol}");
        all.push_str(&framed);
        if e != USAGE {
            kept.push_str(&framed);
        }
    }
    (all.into_bytes(), kept.into_bytes())
}

/// POST `body` to the gateway's `chat` application; returns the status and the whole body.
async fn post(gw: &TestGateway, body: &Value) -> (u16, Bytes) {
    let response = reqwest::Client::new()
        .post(gw.lb("chat"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(LIMIT, response.bytes())
        .await
        .expect("the body ends")
        .unwrap();
    (status, bytes)
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// A gateway in front of a backend that answers with `stream`.
async fn gateway_for(
    content_type: &'static str,
    stream: Vec<u8>,
    piece: usize,
) -> (TestGateway, mpsc::UnboundedReceiver<Value>) {
    let (url, requests) = scripted_backend(content_type, stream, piece).await;
    let gw = TestGateway::start(app_config("chat", &[("raw", &url, None)])).await;
    (gw, requests)
}

/// A client that did not ask for usage gets the stream in `eol` framing without the usage
/// event, every other byte as sent, whatever pieces the backend sends it in.
async fn usage_is_dropped_in(eol: &str) {
    let (all, kept) = chat_stream(eol);
    for piece in [1, 7, all.len()] {
        let (gw, mut requests) = gateway_for("text/event-stream", all.clone(), piece).await;
        let (status, body) = post(&gw, &chat_body("hi", true)).await;
        assert_eq!(status, 200);
        assert!(
            body == kept,
            "{eol:?} in pieces of {piece}: {}",
            show(&body)
        );
        let request = requests.recv().await.unwrap();
        assert_eq!(
            request["stream_options"]["include_usage"], true,
            "the gateway asked for usage"
        );
    }
}

#[tokio::test]
async fn a_crlf_framed_stream_loses_only_the_usage_event() {
    usage_is_dropped_in("\r\n").await;
}

#[tokio::test]
async fn cr_and_lf_framed_streams_lose_only_the_usage_event() {
    usage_is_dropped_in("\r").await;
    usage_is_dropped_in("\n").await;
}

#[tokio::test]
async fn a_client_that_asked_for_usage_gets_it_in_every_framing() {
    for eol in ["\r\n", "\r", "\n"] {
        let (all, _) = chat_stream(eol);
        let (gw, _requests) = gateway_for("text/event-stream", all.clone(), 7).await;
        let mut body = chat_body("hi", true);
        body["stream_options"] = json!({"include_usage": true});
        let (status, got) = post(&gw, &body).await;
        assert_eq!(status, 200);
        assert!(got == all, "{eol:?}: {}", show(&got));
    }
}

#[tokio::test]
async fn a_json_answer_to_a_stream_request_passes_through_whole() {
    // Small and shaped like the usage chunk; large, pretty-printed with blank lines.
    let small = br#"{"id":"c","object":"chat.completion","choices":[],"usage":{"total_tokens":7}}"#
        .to_vec();
    let large = format!(
        "{{\n\n  \"id\": \"c\",\n\n  \"choices\": [{{\"message\": {{\"content\": \"{}\"}}}}],\n\n  \"usage\": {{\"total_tokens\": 7}}\n}}\n",
        "z".repeat(300 * 1024)
    )
    .into_bytes();
    for (content_type, answer) in [
        ("application/json", small.clone()),
        ("application/json", large.clone()),
        // Mislabelled: the bytes decide, not the label.
        ("text/event-stream", small),
        ("text/event-stream", large),
    ] {
        let (gw, _requests) = gateway_for(content_type, answer.clone(), 16 * 1024).await;
        let (status, got) = post(&gw, &chat_body("hi", true)).await;
        assert_eq!(status, 200);
        assert!(got == answer, "{content_type}, {} bytes", answer.len());
    }
}

/// A JSON answer's first piece reaches the client while the backend still holds back the
/// rest (until `go`): nothing waits for the answer to end.
#[tokio::test]
async fn a_json_answer_to_a_stream_request_is_not_held_until_it_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (go, gate) = oneshot::channel::<()>();
    let first = format!("{{\"id\":\"c\",\"pad\":\"{}", "p".repeat(16 * 1024));
    let rest = r#"","choices":[],"usage":{"total_tokens":7}}"#;
    let sent = first.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request(&mut socket).await;
        socket
            .write_all(head("application/json").as_bytes())
            .await
            .unwrap();
        socket.write_all(&chunk(sent.as_bytes())).await.unwrap();
        let _ = gate.await;
        socket.write_all(&chunk(rest.as_bytes())).await.unwrap();
        socket.write_all(b"0\r\n\r\n").await.unwrap();
    });
    let gw = TestGateway::start(app_config("chat", &[("raw", &url, None)])).await;
    let mut response = reqwest::Client::new()
        .post(gw.lb("chat"))
        .json(&chat_body("hi", true))
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < first.len() {
        let piece = tokio::time::timeout(LIMIT, response.chunk())
            .await
            .expect("the start of the answer arrives before its end is sent")
            .unwrap()
            .expect("the body goes on");
        got.extend_from_slice(&piece);
    }
    go.send(()).unwrap();
    while let Some(piece) = tokio::time::timeout(LIMIT, response.chunk())
        .await
        .expect("the body ends")
        .unwrap()
    {
        got.extend_from_slice(&piece);
    }
    assert!(
        got == format!("{first}{rest}").into_bytes(),
        "{}",
        show(&got[first.len()..])
    );
}

#[tokio::test]
async fn a_stream_labelled_json_still_loses_the_usage_event() {
    let (all, kept) = chat_stream("\r\n");
    let (gw, _requests) = gateway_for("application/json", all, 7).await;
    let (status, got) = post(&gw, &chat_body("hi", true)).await;
    assert_eq!(status, 200);
    assert!(got == kept, "{}", show(&got));
}

/// A backend that sends one endless line, in 16 KiB pieces, until a write fails; the receiver
/// gets how much it wrote then.
async fn endless_backend() -> (String, oneshot::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed, seen) = oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        read_request(&mut socket).await;
        socket
            .write_all(head("text/event-stream").as_bytes())
            .await
            .unwrap();
        let first = chunk(b"data: ");
        let piece = chunk(&[b'x'; 16 * 1024]);
        let mut written = 0;
        let mut next: &[u8] = &first;
        while socket.write_all(next).await.is_ok() {
            written += next.len();
            next = &piece;
        }
        let _ = closed.send(written);
    });
    (url, seen)
}

#[tokio::test]
async fn a_client_that_goes_away_mid_line_stops_the_backend() {
    let (url, closed) = endless_backend().await;
    let gw = TestGateway::start(app_config("chat", &[("raw", &url, None)])).await;
    let client = reqwest::Client::new();
    let mut response = client
        .post(gw.lb("chat"))
        .json(&chat_body("hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The line has no end, yet it reaches the client: nothing waits for its blank line.
    let mut read = 0;
    while read < 256 * 1024 {
        let piece = tokio::time::timeout(LIMIT, response.chunk())
            .await
            .expect("the endless line keeps coming")
            .unwrap()
            .expect("the body goes on");
        if read == 0 {
            assert!(
                piece.starts_with(b"data: x"),
                "{}",
                show(&piece[..16.min(piece.len())])
            );
        }
        read += piece.len();
    }
    drop(response);
    drop(client);
    let written = tokio::time::timeout(LIMIT, closed)
        .await
        .expect("the backend sees its connection closed")
        .unwrap();
    assert!(written >= read, "{written} written, {read} read");
}
