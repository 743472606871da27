//! The physical limit the gateway is compared with: the least a Rust proxy can do on the same
//! stack (axum in, reqwest out). It reads the body, posts it upstream with the same content type,
//! and relays status, content type and body, streamed as it arrives. Nothing else.
//!
//! `passthrough --port N --upstream URL`

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use std::error::Error;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: String,
}

async fn relay(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    let mut request = up.client.post(&up.url).body(body);
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(ct) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, ct);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn arg(args: &[String], name: &str) -> Result<String, Box<dyn Error>> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .ok_or_else(|| {
            format!("usage: passthrough --port N --upstream URL (missing {name})").into()
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = arg(&args, "--port")?.parse()?;
    let url = arg(&args, "--upstream")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()?;
    let app = Router::new()
        .fallback(relay)
        .with_state(Upstream { client, url });
    // Like any proxy tuned for latency (the gateway included): no Nagle delay on responses.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("passthrough listening on http://127.0.0.1:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}
