//! Plays AWS Lambda (no Lambda here): a fake of the runtime API (`invocation/next`, streamed
//! `invocation/{id}/response`) and of the Extensions API (the runtime's graceful-shutdown support
//! registers an internal extension), serving the real router binary. Between invocations the
//! process is frozen as Lambda freezes it — SIGSTOP once it asks for the next invocation — so what
//! reaches PostgreSQL by then was written after the invocation, not by a background task later.

// A failed unwrap here is a failed assertion; clippy.toml's test allowance does not reach helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::process::temp_file;
use aigw_tests::{Behaviour, app_config, chat_body, simulator, test_database, throttled};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc};

const LIMIT: Duration = Duration::from_secs(30);

/// What the function sent back for one invocation.
#[derive(Debug)]
struct Posted {
    id: String,
    /// `response` or `error` (and `init` for an initialisation error).
    kind: &'static str,
    streaming: bool,
    body: Bytes,
}

struct FakeState {
    queue: Mutex<mpsc::UnboundedReceiver<(String, Value)>>,
    asked: mpsc::UnboundedSender<()>,
    posted: mpsc::UnboundedSender<Posted>,
}

/// `GET /2018-06-01/runtime/invocation/next`: pending until the test hands out an invocation.
async fn next(State(s): State<Arc<FakeState>>) -> Response {
    let _ = s.asked.send(());
    let Some((id, event)) = s.queue.lock().await.recv().await else {
        return std::future::pending().await;
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    Response::builder()
        .header("lambda-runtime-aws-request-id", &id)
        .header("lambda-runtime-deadline-ms", deadline.to_string())
        .header(
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:router",
        )
        .header(
            "lambda-runtime-trace-id",
            "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c",
        )
        .header("content-type", "application/json")
        .body(Body::from(event.to_string()))
        .unwrap()
}

fn record(s: &FakeState, id: String, kind: &'static str, headers: &HeaderMap, body: Bytes) {
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v == "streaming");
    let _ = s.posted.send(Posted {
        id,
        kind,
        streaming,
        body,
    });
}

/// `POST …/invocation/{id}/response` (the whole streamed body is read before answering, as
/// Lambda does).
async fn response(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    record(&s, id, "response", &headers, body);
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

async fn error(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    record(&s, id, "error", &headers, body);
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
}

async fn init_error(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(&s, String::new(), "init", &headers, body);
    StatusCode::ACCEPTED
}

/// `POST /2020-01-01/extension/register`: the runtime's no-op extension for SIGTERM.
async fn register() -> Response {
    Response::builder()
        .header("lambda-extension-identifier", "ext-1")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"functionName": "router", "functionVersion": "$LATEST", "handler": "bootstrap"})
                .to_string(),
        ))
        .unwrap()
}

/// `GET /2020-01-01/extension/event/next`: an extension subscribed to nothing waits forever.
async fn extension_next() -> StatusCode {
    std::future::pending().await
}

/// The router binary under the fake Lambda.
struct Lambda {
    child: Child,
    log: PathBuf,
    invocations: mpsc::UnboundedSender<(String, Value)>,
    asked: mpsc::UnboundedReceiver<()>,
    posted: mpsc::UnboundedReceiver<Posted>,
    count: u32,
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lambda {
    async fn start(config: &Value, database_url: &str) -> Self {
        let (invocations, queue) = mpsc::unbounded_channel();
        let (asked_tx, asked) = mpsc::unbounded_channel();
        let (posted_tx, posted) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            queue: Mutex::new(queue),
            asked: asked_tx,
            posted: posted_tx,
        });
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(register))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let file = temp_file("lambda-config.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let log = temp_file("lambda-stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_router"))
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .env_remove("AWS_LAMBDA_MAX_CONCURRENCY")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "router")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]test")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/router")
            .env("API_GATEWAY_CONFIG_FILE", &file)
            .env("API_GATEWAY_NAME", "lambda-router")
            .env(
                "API_GATEWAY_LOG_LEVEL",
                std::env::var("AIGW_TEST_ROUTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("DATABASE_URL", database_url)
            // Background tasks that would not write anything during the test on their own (a
            // flush a day, a week-long window, a sync a minute: its first round is at start-up),
            // so whatever reaches the store was written after an invocation or at shutdown.
            .env("API_GATEWAY_METRICS_FLUSH_SECS", "86400")
            .env("API_GATEWAY_METRICS_CINTERVAL", "10080")
            .env("API_GATEWAY_SYNC_INTERVAL_MS", "60000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            invocations,
            asked,
            posted,
            count: 0,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the function asks for its next invocation (the moment Lambda freezes it).
    async fn wait_idle(&mut self) {
        match tokio::time::timeout(LIMIT, self.asked.recv()).await {
            Ok(Some(())) => {}
            _ => panic!(
                "the function never asked for an invocation; log:\n{}",
                self.log()
            ),
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// Freeze the process as Lambda does between invocations.
    fn freeze(&self) {
        self.signal("-STOP");
    }

    fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Hand out one function URL invocation (a `POST {path}` with a JSON body) and return the
    /// streamed answer: (status, headers, body).
    async fn invoke(&mut self, path: &str, body: &Value) -> (u16, Value, Bytes) {
        self.count += 1;
        let id = format!("inv-{}", self.count);
        let event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": "",
            "headers": {
                "content-type": "application/json",
                "host": "abcdefgh.lambda-url.us-east-1.on.aws",
                "x-forwarded-proto": "https",
                "x-forwarded-for": "198.51.100.7"
            },
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "abcdefgh",
                "domainName": "abcdefgh.lambda-url.us-east-1.on.aws",
                "domainPrefix": "abcdefgh",
                "http": {
                    "method": "POST",
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "198.51.100.7",
                    "userAgent": "lambda-test"
                },
                "requestId": id,
                "routeKey": "$default",
                "stage": "$default",
                "time": "01/Jan/2026:00:00:00 +0000",
                "timeEpoch": 1_767_225_600_000u64
            },
            "body": body.to_string(),
            "isBase64Encoded": false
        });
        self.invocations.send((id.clone(), event)).unwrap();
        let posted = match tokio::time::timeout(LIMIT, self.posted.recv()).await {
            Ok(Some(posted)) => posted,
            _ => panic!("no answer to {id}; log:\n{}", self.log()),
        };
        assert_eq!(
            (posted.kind, posted.id.as_str()),
            ("response", id.as_str()),
            "{posted:?}; log:\n{}",
            self.log()
        );
        assert!(posted.streaming, "answers are streamed");
        // Streaming format: a JSON prelude, eight NUL bytes, then the body as it was sent.
        let split = posted
            .body
            .windows(8)
            .position(|w| w == [0u8; 8])
            .expect("prelude delimiter");
        let prelude: Value = serde_json::from_slice(&posted.body[..split]).unwrap();
        let status = prelude["statusCode"].as_u64().unwrap() as u16;
        (
            status,
            prelude["headers"].clone(),
            posted.body.slice(split + 8..),
        )
    }
}

async fn rows(pool: &sqlx::PgPool, sql: &'static str) -> Vec<(String, String, i64)> {
    sqlx::query_as(sql).fetch_all(pool).await.unwrap()
}

#[tokio::test]
async fn under_lambda_metrics_and_circuits_reach_postgres_before_each_freeze_and_at_shutdown() {
    let ok = simulator("ok", Behaviour::default()).await;
    let busy = simulator("busy", throttled(60_000)).await;
    let mut config = app_config("chat", &[("ptu", &ok.url(), None)]);
    let other = app_config("busy", &[("ptu", &busy.url(), None)])["applications"][0].clone();
    config["applications"].as_array_mut().unwrap().push(other);
    let database_url = test_database().await;
    let mut lambda = Lambda::start(&config, &database_url).await;
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let pid = lambda.child.id();
    let instance =
        |name: &str| name.starts_with("lambda-router-") && name.ends_with(&format!("-{pid}"));
    let metrics = "SELECT instance, app_id, calls FROM gw_metrics ORDER BY app_id";
    lambda.wait_idle().await;

    // 1. A JSON chat. Once the function asks for the next invocation it is frozen; the
    //    metrics row is in the store already (the first answer always flushes).
    let (status, headers, body) = lambda
        .invoke("/api/v1/dev/apirouter/lb/chat", &chat_body("hi", false))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-endpoint-id"], "ptu");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    lambda.wait_idle().await;
    lambda.freeze();
    // Nothing can write for the frozen process, so one look is the whole wait.
    let found = rows(&pool, metrics).await;
    assert!(
        matches!(found.as_slice(), [(who, app, 1)] if app == "chat" && instance(who)),
        "one call of chat counted by the Lambda process before the freeze: {found:?}"
    );
    lambda.thaw();

    // 2. A streamed chat: the SSE events arrive in the streamed answer.
    let (status, headers, body) = lambda
        .invoke("/api/v1/dev/apirouter/lb/chat", &chat_body("hi", true))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers["content-type"]
            .as_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.matches("chat.completion.chunk").count() >= 5, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    lambda.wait_idle().await;

    // 3. A backend answering 429: the circuit it opened is published before the freeze.
    let (status, _, _) = lambda
        .invoke("/api/v1/dev/apirouter/lb/busy", &chat_body("hi", false))
        .await;
    assert_eq!(status, 429);
    lambda.wait_idle().await;
    lambda.freeze();
    let circuits: Vec<(String, String, i64)> = rows(
        &pool,
        "SELECT opened_by, app_id, open_until_ms FROM gw_circuits",
    )
    .await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        matches!(circuits.as_slice(), [(who, app, until)]
            if app == "busy" && instance(who) && *until > now_ms + 30_000),
        "the busy endpoint's circuit, opened by the Lambda process: {circuits:?}"
    );
    lambda.thaw();

    // 4. Shutdown (SIGTERM, which Lambda sends because an extension is registered): the last
    //    flush writes what the invocations since the first flush counted.
    lambda.signal("-TERM");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = lambda.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no exit after SIGTERM; log:\n{}",
            lambda.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}; log:\n{}", lambda.log());
    let found = rows(&pool, metrics).await;
    let calls = |app: &str| {
        found
            .iter()
            .filter(|(who, a, _)| a == app && instance(who))
            .map(|(_, _, calls)| calls)
            .sum::<i64>()
    };
    assert_eq!(
        (calls("busy"), calls("chat")),
        (1, 2),
        "all three invocations counted: {found:?}"
    );
}
