//! Several gateway instances on one PostgreSQL behave as one gateway, and a database outage
//! degrades them to their local view without failing a request.

use aigw_core::Settings;
use aigw_core::store::PostgresStore;
use aigw_core::throttle::LEASE_TIMEOUT;
use aigw_tests::*;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const PG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg");

fn served_by(r: &reqwest::Response) -> String {
    r.headers()["x-endpoint-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_429_on_one_instance_steers_the_others_away_within_a_second() {
    let url = test_database().await;
    let a = simulator(
        "a",
        Behaviour {
            fail_next: Some(1),
            ..throttled(30_000)
        },
    )
    .await;
    let b = simulator("b", Behaviour::default()).await;
    let config = app_config("chat", &[("ptu", &a.url(), None), ("payg", &b.url(), None)]);
    let gws = [
        TestGateway::instance(&config, &url, "i1", Settings::default()).await,
        TestGateway::instance(&config, &url, "i2", Settings::default()).await,
        TestGateway::instance(&config, &url, "i3", Settings::default()).await,
    ];

    let seen = Instant::now();
    assert_eq!(
        served_by(&post_chat(&gws[0], "chat", "hi", false).await),
        "payg"
    );
    assert_eq!(a.stats().status_429, 1);
    // The others learn of it through the database within the sync bound.
    for gw in &gws[1..] {
        let steered = eventually(Duration::from_secs(1), || async {
            gw.circuit_open("chat", 0)
        })
        .await;
        assert!(
            steered,
            "instance learnt of the 429 within 1 s (took {:?})",
            seen.elapsed()
        );
        assert_eq!(served_by(&post_chat(gw, "chat", "hi", false).await), "payg");
    }
    assert_eq!(
        a.stats().requests,
        1,
        "no instance called the throttled endpoint again"
    );
}

#[tokio::test]
async fn the_rpm_limit_holds_across_instances_under_concurrent_load() {
    let url = test_database().await;
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    // 240 rpm: a burst may use 40, the 10 s share (Azure's granularity).
    let config = app_config(
        "chat",
        &[("ptu", &a.url(), Some(240)), ("payg", &b.url(), None)],
    );
    let gws = [
        TestGateway::instance(&config, &url, "i1", Settings::default()).await,
        TestGateway::instance(&config, &url, "i2", Settings::default()).await,
        TestGateway::instance(&config, &url, "i3", Settings::default()).await,
    ];

    let requests = (0..180).map(|i| post_chat(&gws[i % 3], "chat", "hi", false));
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|r| r.status() == 200),
        "every request answered"
    );
    let on_a = answers.iter().filter(|r| served_by(r) == "ptu").count();
    assert_eq!(a.stats().requests as usize, on_a);
    assert!(
        on_a <= 40,
        "the global 10 s share of 40 held: {on_a} reached the endpoint"
    );
    assert!(on_a >= 30, "most of the budget was usable: {on_a}");
}

/// A private PostgreSQL server for one test, stopped when dropped.
struct PrivatePg {
    dir: String,
    port: u16,
}

impl PrivatePg {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = format!("/tmp/aigw-pg-outage-{}-{port}", std::process::id());
        let pg = Self { dir, port };
        pg.up();
        pg
    }

    fn run(&self, action: &str) {
        let status = Command::new(PG_SCRIPT)
            .args([action, "--dir", &self.dir, "--port", &self.port.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/pg {action} failed");
    }

    fn up(&self) {
        self.run("start");
    }

    fn down(&self) {
        let status = Command::new(PG_SCRIPT)
            .args(["stop", "--dir", &self.dir])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn url(&self) -> String {
        format!(
            "postgres://gateway:gateway@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = Command::new(PG_SCRIPT)
            .args(["stop", "--dir", &self.dir])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_database_outage_fails_no_request_and_state_reconciles_after_it() {
    let pg = PrivatePg::start();
    let url = database_on(&pg.url()).await;
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let config = app_config(
        "chat",
        &[("ptu", &a.url(), Some(100_000)), ("payg", &b.url(), None)],
    );
    let (one, two) = (
        TestGateway::instance(&config, &url, "i1", Settings::default()).await,
        TestGateway::instance(&config, &url, "i2", Settings::default()).await,
    );

    let burst = |n: usize| {
        let (one, two) = (&one, &two);
        async move {
            let started = Instant::now();
            let answers = futures_util::future::join_all(
                (0..n).map(|i| post_chat(if i % 2 == 0 { one } else { two }, "chat", "hi", false)),
            )
            .await;
            (
                answers.iter().filter(|r| r.status() == 200).count(),
                started.elapsed(),
            )
        }
    };
    assert_eq!(burst(20).await.0, 20);

    pg.down();
    for _ in 0..3 {
        let (ok, took) = burst(20).await;
        assert_eq!(ok, 20, "every request answered while the database is down");
        assert!(
            took < Duration::from_secs(3),
            "no request waited long on the dead database: {took:?}"
        );
    }
    assert!(!one.gateway.sync_now().await, "the store is unreachable");
    assert!(!one.gateway.shared.is_up(), "and the instance knows it");

    // A 429 seen by one instance during the outage...
    a.set_behaviour(Behaviour {
        fail_next: Some(1),
        ..throttled(60_000)
    });
    assert_eq!(
        served_by(&post_chat(&one, "chat", "hi", false).await),
        "payg"
    );
    a.set_behaviour(Behaviour::default());

    // ... reaches the other once the database is back.
    pg.up();
    let reconciled = eventually(Duration::from_secs(10), || async {
        two.circuit_open("chat", 0)
    })
    .await;
    assert!(
        reconciled,
        "the circuit opened during the outage was shared after recovery"
    );
    assert!(one.gateway.shared.is_up() && two.gateway.shared.is_up());
    assert_eq!(
        served_by(&post_chat(&two, "chat", "hi", false).await),
        "payg"
    );
    assert_eq!(burst(20).await.0, 20);
}

/// A loopback TCP proxy to `target` that holds every chunk, each way, for `delay`: a database
/// that answers, slowly. It runs until the test's runtime ends.
async fn slow_proxy(target: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::join!(
                    delayed(from_client, to_server, delay),
                    delayed(from_server, to_client, delay)
                );
            });
        }
    });
    addr
}

/// Copy `from` to `to`, each chunk `delay` after it was read (the order and the rate are kept).
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (queue, mut due) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if queue
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[tokio::test]
async fn a_slow_database_delays_no_request_beyond_one_lease_attempt() {
    // The schema is applied directly; the instances then reach the database only through a
    // proxy that delays every packet by 500 ms each way (a round trip takes a second, far over
    // a lease attempt's bound).
    let direct = test_database().await;
    postgres_store(&direct).await;
    let server = direct
        .split_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(host_port, _)| host_port.to_owned())
        .unwrap();
    let target: SocketAddr = tokio::net::lookup_host(&server)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = slow_proxy(target, Duration::from_millis(500)).await;
    let slow_url = direct.replacen(&server, &proxy.to_string(), 1);

    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let config = app_config(
        "chat",
        &[("ptu", &a.url(), Some(600)), ("payg", &b.url(), None)],
    );
    // Not pinged first: the first contact would run the migrations through the proxy, for
    // many seconds. The store counts as reachable until an operation on it fails.
    let instance = |name: &str| {
        let settings = Settings {
            instance: name.into(),
            ..Settings::default()
        };
        let store = PostgresStore::connect_lazy(&slow_url).unwrap();
        TestGateway::start_shared(config.clone(), settings, Arc::new(store))
    };
    let gws = [instance("i1").await, instance("i2").await];

    let http = reqwest::Client::new();
    let timed = |i: usize| {
        let (gw, http) = (&gws[i % 2], &http);
        async move {
            let started = Instant::now();
            let r = http
                .post(gw.lb("chat"))
                .json(&chat_body("hi", false))
                .send()
                .await
                .unwrap();
            (r.status(), started.elapsed())
        }
    };
    // The first wave finds no lease and the store still counted reachable: every request
    // waits for its instance's one lease attempt, at most its bound, and then is admitted by
    // the local limiter. Later waves go to the local view at once.
    for wave in 0..3 {
        let answers = futures_util::future::join_all((0..50).map(timed)).await;
        assert!(
            answers.iter().all(|(status, _)| *status == 200),
            "wave {wave}: every request answered: {answers:?}"
        );
        let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
        assert!(
            slowest < Duration::from_millis(400),
            "wave {wave}: no request waited more than about one lease attempt ({LEASE_TIMEOUT:?}) \
             on the slow database; the slowest took {slowest:?}"
        );
    }
    assert_eq!(
        a.stats().requests,
        150,
        "the local limiter (600 rpm, bursts of 100 per instance) admitted them all"
    );
}
