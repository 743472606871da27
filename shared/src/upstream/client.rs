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
        let client = reqwest::Client::builder()
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
