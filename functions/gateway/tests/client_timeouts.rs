//! The server's client timeouts and its conduct when out of file descriptors, observed on a real
//! `gateway` process from raw sockets: a half-sent head, a stalled body and an idle keep-alive
//! connection are each cut after their setting while a client that keeps talking is not; the soft
//! open-files limit is raised at start-up; running out of descriptors is logged once and survived.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

/// One application whose only endpoint nobody answers: enough for everything here.
const CONFIG: &str = r#"{"applications":[{"appId":"chat","appType":"azure_oai","endpoints":[{"id":"a","uri":"http://127.0.0.1:9/openai/deployments/x/chat/completions?api-version=2024-10-21","apikey":"k"}]}]}"#;

const HEALTHZ: &[u8] = b"GET /api/v1/dev/apirouter/healthz HTTP/1.1\r\nhost: gw\r\n\r\n";

/// The longest any condition here is awaited.
const LIMIT: Duration = Duration::from_secs(10);

/// A `gateway` process on a free port, its stderr in a file; killed on drop.
struct Gateway {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_under(&[], env).await
    }

    /// Start the binary through `wrapper` (a command and its arguments, e.g. `prlimit`), with
    /// `env` on top of a clean set of gateway settings; returns once `healthz` answers.
    async fn start_under(wrapper: &[&str], env: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aigw-client-timeouts-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        std::fs::write(&config, CONFIG).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        for (name, _) in std::env::vars() {
            if name.starts_with("API_GATEWAY_") || name.contains("DATABASE_URL") {
                command.env_remove(name);
            }
        }
        command
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .env("API_GATEWAY_CONFIG_FILE", &config)
            .env("API_GATEWAY_PORT", port.to_string())
            .env("API_GATEWAY_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        let gateway = Self {
            child: command.spawn().unwrap(),
            port,
            dir,
        };
        let started = Instant::now();
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(1), gateway.healthz()).await;
            if matches!(&answer, Ok(Ok(head)) if head.starts_with("HTTP/1.1 200")) {
                return gateway;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the gateway did not start: {}",
                gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }

    /// `healthz` on a new connection: the response head.
    async fn healthz(&self) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(HEALTHZ).await?;
        Ok(read_response(&mut stream).await?.0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

/// One whole response (head, and a body of its `content-length`).
async fn read_response(stream: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| std::io::Error::other(format!("no content-length in {head}")))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Ok((head, body))
}

/// `healthz` on an open connection, which must answer 200.
async fn healthz_on(stream: &mut TcpStream, what: &str) {
    stream.write_all(HEALTHZ).await.unwrap();
    let (head, _) = read_response(stream)
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer ({e})"));
    assert!(head.starts_with("HTTP/1.1 200"), "{what}: {head}");
}

/// When the gateway closed `stream` (whatever else arrives is read and dropped).
async fn closed(stream: &mut TcpStream, what: &str) -> Instant {
    let mut chunk = [0u8; 1024];
    let until_closed = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, until_closed)
        .await
        .unwrap_or_else(|_| panic!("{what}: the gateway did not close the connection"))
}

fn assert_between(what: &str, took: Duration, low: f64, high: f64) {
    let secs = took.as_secs_f64();
    assert!(
        (low..=high).contains(&secs),
        "{what}: {secs:.2} s, expected {low}–{high} s"
    );
}

/// Await `check` becoming true, polling every 20 ms, for at most [`LIMIT`].
async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if check() {
            return true;
        }
        if started.elapsed() > LIMIT {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_head_must_arrive_within_the_header_timeout() {
    let gw = Gateway::start(&[("API_GATEWAY_HEADER_TIMEOUT_SECS", "1")]).await;
    let half_head = async {
        let mut s = gw.connect().await;
        s.write_all(b"GET /api/v1/dev/apirouter/healthz HTTP/1.1\r\nhost: gw\r\n")
            .await
            .unwrap();
        let sent = Instant::now();
        closed(&mut s, "half a head").await - sent
    };
    let nothing = async {
        let mut s = gw.connect().await;
        let opened = Instant::now();
        closed(&mut s, "a silent connection").await - opened
    };
    let half_head_after_a_request = async {
        let mut s = gw.connect().await;
        healthz_on(&mut s, "first request").await;
        // The client's own pause between its requests.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"GET /api/v1/dev/apirouter/healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let sent = Instant::now();
        closed(&mut s, "half a second head").await - sent
    };
    let idle_past_the_header_timeout = async {
        let mut s = gw.connect().await;
        healthz_on(&mut s, "first request").await;
        // Idle for longer than the header timeout: only the keep-alive timeout (60 s) applies.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        healthz_on(&mut s, "a request after 1.5 s idle").await;
    };
    let (half, silent, second, ()) = tokio::join!(
        half_head,
        nothing,
        half_head_after_a_request,
        idle_past_the_header_timeout
    );
    assert_between("half a head", half, 0.9, 3.0);
    assert_between("a connection that sent nothing", silent, 0.9, 3.0);
    assert_between("half a head on a kept-alive connection", second, 0.9, 3.0);
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_connection_closes() {
    let gw = Gateway::start(&[("API_GATEWAY_BODY_TIMEOUT_SECS", "1")]).await;
    let stalled = async {
        let mut s = gw.connect().await;
        s.write_all(
            b"POST /api/v1/dev/apirouter/lb/chat HTTP/1.1\r\nhost: gw\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"messages",
        )
        .await
        .unwrap();
        let sent = Instant::now();
        let answer = tokio::time::timeout(LIMIT, read_response(&mut s))
            .await
            .expect("an answer to the stalled body")
            .unwrap();
        let answered = sent.elapsed();
        let closed = closed(&mut s, "after the 408").await - sent;
        (answer, answered, closed)
    };
    // 100 bytes in five pieces 300 ms apart: 1.2 s in all, but never 1 s without progress.
    let slow_but_steady = async {
        let body = format!(
            "{:<100}",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#
        );
        let mut s = gw.connect().await;
        s.write_all(
            b"POST /api/v1/dev/apirouter/lb/chat HTTP/1.1\r\nhost: gw\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n",
        )
        .await
        .unwrap();
        for piece in body.as_bytes().chunks(20) {
            // The client's pace.
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.write_all(piece).await.unwrap();
        }
        tokio::time::timeout(LIMIT, read_response(&mut s))
            .await
            .expect("an answer to the slow body")
            .unwrap()
            .0
    };
    let (((head, body), answered, closed), slow) = tokio::join!(stalled, slow_but_steady);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("connection: close"), "{head}");
    assert!(lower.contains("x-request-id: req_"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "request_timeout", "{body}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
    assert!(error["error"]["param"].is_null(), "{body}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stopped arriving"),
        "{body}"
    );
    assert_between("408 after the body stalled", answered, 0.9, 3.0);
    assert_between("connection closed after the 408", closed, 0.9, 3.5);
    // The whole body arrived and was forwarded: the endpoint (nobody listening) failed it.
    assert!(slow.starts_with("HTTP/1.1 502"), "{slow}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let gw = Gateway::start(&[("API_GATEWAY_KEEPALIVE_SECS", "1")]).await;
    let idle = async {
        let mut s = gw.connect().await;
        healthz_on(&mut s, "the only request").await;
        let answered = Instant::now();
        closed(&mut s, "an idle keep-alive connection").await - answered
    };
    let talking = async {
        let mut s = gw.connect().await;
        let began = Instant::now();
        let mut requests = 0;
        while began.elapsed() < Duration::from_secs(3) {
            requests += 1;
            healthz_on(&mut s, &format!("request {requests} on one connection")).await;
            // The client's pace: a request every 200 ms.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        requests
    };
    let (idle, requests) = tokio::join!(idle, talking);
    assert_between("an idle keep-alive connection", idle, 0.9, 3.0);
    assert!(requests >= 10, "{requests} requests in 3 s");
}

#[tokio::test]
async fn start_up_raises_the_soft_open_files_limit_to_the_hard_limit() {
    let gw = Gateway::start_under(&["prlimit", "--nofile=128:4096"], &[]).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    let values: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    assert_eq!(values[..2], ["4096", "4096"], "{line}");
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_once_and_survived() {
    let gw = Gateway::start_under(
        &["prlimit", "--nofile=64:64"],
        &[("API_GATEWAY_HEADER_TIMEOUT_SECS", "1")],
    )
    .await;
    // More silent connections than the gateway has descriptors: those it cannot accept wait in
    // the listen backlog.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(gw.connect().await);
    }
    assert!(
        eventually(|| gw.log().contains("out of file descriptors")).await,
        "{}",
        gw.log()
    );
    // The header timeout reaps the silent connections, the backlog is accepted (and reaped in
    // turn), and a new client is answered.
    let head = tokio::time::timeout(LIMIT, gw.healthz())
        .await
        .expect("healthz answered after the shortage")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        eventually(|| gw.log().contains("file descriptors available again")).await,
        "{}",
        gw.log()
    );
    let log = gw.log();
    assert_eq!(
        log.matches("out of file descriptors").count(),
        1,
        "one warning for the whole shortage: {log}"
    );
    drop(held);
}
