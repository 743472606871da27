//! Three router processes on one PostgreSQL: a 429 seen by one steers the others away, and an
//! endpoint's RPM limit holds for the three together.

// A failed unwrap here is a failed assertion; clippy.toml's test allowance does not reach helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::{Behaviour, app_config, chat_body, simulator, test_database, throttled};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Router {
    child: Child,
    base: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Router {
    fn lb(&self) -> String {
        format!("{}/api/v1/dev/apirouter/lb/chat", self.base)
    }
}

async fn start_routers(config: &serde_json::Value, database_url: &str, n: usize) -> Vec<Router> {
    let dir = std::env::temp_dir().join(format!("aigw-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Each test has its own database, so its name keeps the tests' config files apart.
    let db = database_url.rsplit('/').next().unwrap();
    let file = dir.join(format!("config-{db}.json"));
    std::fs::write(&file, config.to_string()).unwrap();
    let mut routers = Vec::new();
    for i in 0..n {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_router"))
            .env("API_GATEWAY_CONFIG_FILE", &file)
            .env("API_GATEWAY_PORT", port.to_string())
            .env("API_GATEWAY_NAME", format!("router{i}"))
            .env(
                "API_GATEWAY_LOG_LEVEL",
                std::env::var("AIGW_TEST_ROUTER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("DATABASE_URL", database_url)
            .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
            .env_remove("AWS_LAMBDA_RUNTIME_API")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        routers.push(Router {
            child,
            base: format!("http://127.0.0.1:{port}"),
        });
    }
    let http = reqwest::Client::new();
    for r in &routers {
        let started = Instant::now();
        while http
            .get(format!("{}/api/v1/dev/apirouter/healthz", r.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "router did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    routers
}

async fn post(http: &reqwest::Client, router: &Router) -> reqwest::Response {
    http.post(router.lb())
        .json(&chat_body("hi", false))
        .send()
        .await
        .unwrap()
}

fn served_by(r: &reqwest::Response) -> &str {
    r.headers()["x-endpoint-id"].to_str().unwrap()
}

#[tokio::test]
async fn a_429_on_one_router_steers_the_other_two_away() {
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
    let routers = start_routers(&config, &test_database().await, 3).await;
    let http = reqwest::Client::new();

    assert_eq!(served_by(&post(&http, &routers[0]).await), "payg");
    assert_eq!(a.stats().status_429, 1);
    // The bound under test: every instance keeps off the endpoint within 1 s. The other
    // processes' state cannot be awaited from here, so the test waits out the bound itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for router in &routers[1..] {
        for _ in 0..3 {
            assert_eq!(served_by(&post(&http, router).await), "payg");
        }
    }
    assert_eq!(
        a.stats().requests,
        1,
        "no router called the throttled endpoint again"
    );
}

#[tokio::test]
async fn the_rpm_limit_holds_for_three_routers_under_concurrent_load() {
    let a = simulator("a", Behaviour::default()).await;
    let b = simulator("b", Behaviour::default()).await;
    let config = app_config(
        "chat",
        // 360 a minute: a share of 60 in any 10 s, which is what a burst of requests meets.
        &[("ptu", &a.url(), Some(360)), ("payg", &b.url(), None)],
    );
    let routers = start_routers(&config, &test_database().await, 3).await;
    let http = reqwest::Client::new();

    let answers =
        futures_util::future::join_all((0..300).map(|i| post(&http, &routers[i % 3]))).await;
    assert!(
        answers.iter().all(|r| r.status() == 200),
        "every request answered"
    );
    let on_a = a.stats().requests;
    eprintln!("{on_a} of 300 requests reached the endpoint limited to 360 rpm (60 per 10 s)");
    assert!(
        on_a <= 60,
        "at most the 10 s share of 60 reached the endpoint, got {on_a}"
    );
    assert!(on_a >= 45, "most of the budget was usable, got {on_a}");
    assert_eq!(on_a + b.stats().requests, 300);
}
