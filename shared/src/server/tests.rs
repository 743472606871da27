//! The server over real sockets: HTTP/2 with prior knowledge served and drained, a stalled body
//! answered `408` over HTTP/1 and HTTP/2, and the grace period cutting off what still runs.

use super::{ServeOptions, serve};
use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{StatusCode, Version, header};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

struct Running {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn start(app: Router, options: ServeOptions) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app, options, async move {
        let _ = stopped.await;
    }));
    Running {
        url: format!("http://{addr}/"),
        stop,
        task,
    }
}

impl Running {
    async fn shut_down(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_and_drained() {
    let app = Router::new().route("/", get(|| async { "hi" }));
    let server = start(app, ServeOptions::default()).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let answer = client.get(&server.url).send().await.unwrap();
    assert_eq!(answer.version(), Version::HTTP_2);
    assert_eq!(answer.text().await.unwrap(), "hi");
    // The client's connection is still open: the drain closes it (GOAWAY).
    server.shut_down().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_over_http1_and_http2() {
    let app = Router::new().route("/", post(|body: Bytes| async move { body }));
    let options = ServeOptions {
        body_timeout: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let server = start(app, options).await;
    for client in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    ] {
        let first = futures_util::stream::once(async { Ok::<_, io::Error>("{\"a\"") });
        let stalls = futures_util::stream::pending();
        let body = reqwest::Body::wrap_stream(futures_util::StreamExt::chain(first, stalls));
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            client.post(&server.url).body(body).send(),
        )
        .await
        .unwrap()
        .unwrap();
        let version = answer.version();
        assert_eq!(answer.status(), StatusCode::REQUEST_TIMEOUT, "{version:?}");
        let close = answer.headers().get(header::CONNECTION).cloned();
        let error: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["code"], "request_timeout", "{version:?}");
        if version == Version::HTTP_11 {
            assert_eq!(close.unwrap(), "close");
        }
    }
    // A body that keeps coming is read whole, however long it takes in all.
    let pieces = futures_util::StreamExt::then(
        futures_util::stream::iter(["{", "\"a\"", ":", "1}"]),
        |piece| async move {
            tokio::time::sleep(Duration::from_millis(120)).await;
            Ok::<_, io::Error>(piece)
        },
    );
    let answer = reqwest::Client::new()
        .post(&server.url)
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "{\"a\":1}");
    server.shut_down().await;
}

#[tokio::test]
async fn the_grace_period_cuts_the_requests_still_running() {
    let entered = Arc::new(Notify::new());
    let app = Router::new().route(
        "/",
        get({
            let entered = entered.clone();
            move || async move {
                entered.notify_one();
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let options = ServeOptions {
        grace: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let server = start(app, options).await;
    let request = tokio::spawn(reqwest::get(server.url.clone()));
    entered.notified().await;
    server.shut_down().await;
    let cut = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .unwrap()
        .unwrap();
    assert!(cut.is_err(), "the request was cut off: {cut:?}");
}
