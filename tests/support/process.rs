//! A real gateway process for tests that must go through the product's own entry point: the
//! binary reads its settings from its environment, exactly as on a host. Its stderr (the log)
//! goes to a file the test can read; the process is killed when the handle is dropped.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running gateway binary.
pub struct Process {
    pub child: Child,
    /// `http://HOST:PORT`
    pub base: String,
    /// The `/api/v1/{env}/apirouter` prefix it serves.
    pub prefix: String,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh file path under the temp dir for this test process.
pub fn temp_file(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("aigw-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)))
}

impl Process {
    /// Start `binary` with `config` written to a file named by `API_GATEWAY_CONFIG_FILE`, on a
    /// free port of 127.0.0.1 unless `env` sets `API_GATEWAY_PORT`/`API_GATEWAY_HOST`, with `env`
    /// added to (a cleaned copy of) this process's environment. Waits until `healthz` answers.
    pub async fn start(binary: &str, config: &Value, env: &[(&str, &str)]) -> Self {
        let process = Self::spawn(binary, config, env, &[]);
        process.wait_ready().await;
        process
    }

    /// Like [`Process::start`] but with command-line arguments and without waiting.
    pub fn spawn(binary: &str, config: &Value, env: &[(&str, &str)], args: &[&str]) -> Self {
        let file = temp_file("config.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let log = temp_file("stderr.log");
        let var = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let port = var("API_GATEWAY_PORT")
            .map(str::to_owned)
            .unwrap_or_else(|| free_port().to_string());
        let host = var("API_GATEWAY_HOST").unwrap_or("127.0.0.1");
        let host = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        let prefix = format!(
            "/api/v1/{}/apirouter",
            var("API_GATEWAY_ENV").unwrap_or("dev")
        );
        let mut command = Command::new(binary);
        for name in [
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "AWS_LAMBDA_RUNTIME_API",
            "DATABASE_URL",
            "API_GATEWAY_DATABASE_URL",
            "API_GATEWAY_KEY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "RUST_LOG",
        ] {
            command.env_remove(name);
        }
        command
            .env("API_GATEWAY_CONFIG_FILE", &file)
            .env("API_GATEWAY_PORT", &port)
            .env("API_GATEWAY_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        Self {
            child,
            base: format!("http://{host}:{port}"),
            prefix,
            log,
        }
    }

    /// Wait (at most 30 s) until `healthz` answers 200.
    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(self.url("/healthz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "gateway did not start; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `{base}{prefix}{path}`
    pub fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, self.prefix)
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET {prefix}/instanceinfo` as JSON.
    pub async fn instance_info(&self) -> Value {
        reqwest::get(self.url("/instanceinfo"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Wait (at most `limit`) for the process to exit; its status, if it did.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Send SIGTERM (as a host does when it scales in).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}
