//! Shared helpers for the integration tests: a real gateway on an ephemeral port, wired to
//! simulated backends, and small polling helpers that await a condition instead of sleeping.

pub mod process;
pub mod raw;

use aigw_core::state::Background;
use aigw_core::store::{MemoryStore, SharedStore};
use aigw_core::{Gateway, Settings, config};
use serde_json::{Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use aigw_simulator::{Behaviour, SimOptions, Simulator};

/// The key every simulated backend in these tests expects.
pub const BACKEND_KEY: &str = "backend-key";

/// A gateway serving on 127.0.0.1 over real sockets.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    background: Option<Background>,
}

impl TestGateway {
    /// Start a gateway for `config` (JSON in the config file's shape) with default settings.
    pub async fn start(config: Value) -> Self {
        Self::start_with(config, Settings::default()).await
    }

    /// Start a gateway with the given settings (host and port are ignored: an ephemeral port on
    /// loopback is used).
    pub async fn start_with(config: Value, settings: Settings) -> Self {
        Self::start_shared(config, settings, Arc::new(MemoryStore::new())).await
    }

    /// Start a gateway sharing state through `store` (several gateways on one store behave as
    /// instances of one deployment).
    pub async fn start_shared(
        config: Value,
        settings: Settings,
        store: Arc<dyn SharedStore>,
    ) -> Self {
        let env: [(&str, &str); 0] = [];
        let config = config::validate(config, &env).expect("test config is valid");
        let gateway = Gateway::new(settings, config, store).expect("gateway builds");
        let background = Some(gateway.start_background());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = aigw_core::gateway_app(gateway.clone());
        let options = aigw_core::server::ServeOptions::from_settings(&gateway.settings);
        let task = tokio::spawn(aigw_core::server::serve(
            listener,
            app,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            gateway,
            stop: Some(stop),
            task,
            background,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Node gateway's load-balancer URL for `app`.
    pub fn lb(&self, app: &str) -> String {
        format!("{}/api/v1/dev/apirouter/lb/{app}", self.url())
    }

    /// Begin a graceful shutdown and wait for the server to finish draining and the
    /// background tasks to stop (a last sync and metrics flush).
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.task).await.unwrap();
        if let Some(background) = self.background.take() {
            background.stop().await;
        }
        served
    }

    /// Begin a graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Wait for the server task to end.
    pub async fn finished(mut self) -> std::io::Result<()> {
        let served = (&mut self.task).await.unwrap();
        if let Some(background) = self.background.take() {
            background.stop().await;
        }
        served
    }
}

/// Start a simulator named `name` that checks [`BACKEND_KEY`].
pub async fn simulator(name: &str, behaviour: Behaviour) -> Simulator {
    Simulator::start(SimOptions {
        api_key: Some(BACKEND_KEY.into()),
        behaviour,
        name: Some(name.into()),
    })
    .await
    .unwrap()
}

/// An Azure OpenAI chat-completions URI on a simulator.
pub fn chat_uri(base: &str) -> String {
    format!("{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21")
}

/// A config with one `azure_oai` application whose endpoints are `(id, base url, rpm)`.
pub fn app_config(app: &str, endpoints: &[(&str, &str, Option<u32>)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(id, base, rpm)| {
            let mut ep = json!({"id": id, "uri": chat_uri(base), "apikey": BACKEND_KEY});
            if let Some(rpm) = rpm {
                ep["rpm"] = json!(rpm);
            }
            ep
        })
        .collect();
    json!({"applications": [{"appId": app, "appType": "azure_oai", "endpoints": endpoints}]})
}

/// A base URL nothing listens on (a port bound and released).
pub async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A minimal chat body.
pub fn chat_body(text: &str, stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": text}], "stream": stream})
}

/// Await `check` becoming true, polling every 10 ms, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A backend that answers 429 asking for a wait of `retry_after_ms`.
pub fn throttled(retry_after_ms: u64) -> Behaviour {
    Behaviour {
        mode: aigw_simulator::Mode::Throttle,
        retry_after_ms,
        ..Default::default()
    }
}

/// A backend that answers every request with `status`.
pub fn failing(status: u16) -> Behaviour {
    Behaviour {
        mode: aigw_simulator::Mode::Error,
        status,
        ..Default::default()
    }
}

/// POST a chat body to `app` through the gateway's load-balancer path.
pub async fn post_chat(gw: &TestGateway, app: &str, text: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(gw.lb(app))
        .json(&chat_body(text, stream))
        .send()
        .await
        .unwrap()
}

/// A fresh, empty PostgreSQL database for one test, on the server `scripts/test` starts
/// (`AIGW_TEST_DATABASE_URL`). Returns its URL.
pub async fn test_database() -> String {
    let admin = std::env::var("AIGW_TEST_DATABASE_URL").expect(
        "AIGW_TEST_DATABASE_URL is not set: run the suite with scripts/test, which starts PostgreSQL",
    );
    database_on(&admin).await
}

/// A fresh database on the server of `admin_url`.
pub async fn database_on(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{}", uuid_like());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("test PostgreSQL reachable");
    // DDL cannot bind identifiers; the name is generated here from hex digits only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(admin_url);
    format!("{base}/{name}")
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:x}{:x}{:x}",
        nanos,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A PostgreSQL store on `url`, schema applied: what one gateway instance opens.
pub async fn postgres_store(url: &str) -> Arc<dyn SharedStore> {
    let store = aigw_core::store::PostgresStore::connect_lazy(url).unwrap();
    store.ping().await.unwrap();
    Arc::new(store)
}

impl TestGateway {
    /// Instance `name` of a gateway whose instances share the PostgreSQL database at `url`.
    pub async fn instance(config: &Value, url: &str, name: &str, settings: Settings) -> Self {
        let settings = Settings {
            instance: name.into(),
            ..settings
        };
        Self::start_shared(config.clone(), settings, postgres_store(url).await).await
    }

    /// Whether this instance currently keeps endpoint `index` of `app` off (circuit open).
    pub fn circuit_open(&self, app: &str, index: usize) -> bool {
        let snapshot = self.gateway.snapshot();
        let endpoint = &snapshot.app(app).unwrap().endpoints[index];
        endpoint
            .throttle
            .circuit
            .wait_ms(aigw_core::throttle::now_ms())
            .is_some()
    }
}
