//! HTTP clients for backends. A client owns a connection pool, so clients are kept outside the
//! configuration snapshot and reused across reloads; endpoints that share a connect timeout share
//! a client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Clients keyed by connect timeout.
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
}

impl ClientCache {
    /// The client for this connect timeout, built on first use.
    pub fn get(&self, connect_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder();
        if !system_proxy_configured() {
            // With no proxy configured the answer is always "direct"; saying so up front spares
            // reqwest a proxy lookup on every request.
            builder = builder.no_proxy();
        }
        let client = builder
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            // Answers are relayed byte for byte: never decompress or follow redirects.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }
}

/// Whether the environment names a proxy for reqwest to use. On Linux the environment is the only
/// source of system proxy settings; elsewhere (Windows registry, macOS settings) assume one.
fn system_proxy_configured() -> bool {
    const VARS: [&str; 6] = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    !cfg!(target_os = "linux") || VARS.iter().any(|v| std::env::var_os(v).is_some())
}
