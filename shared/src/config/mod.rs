//! Gateway configuration: the file users write, validated into the typed form the gateway runs on.
//!
//! Two stages: [`raw`] mirrors the JSON (the Node gateway's file loads unchanged), and
//! [`validate`] turns it into [`GatewayConfig`], reporting every problem at once with the JSON
//! path of the bad field. Nothing downstream ever sees an unvalidated value.

mod endpoint;
mod raw;
mod secret;
mod validate;

#[cfg(test)]
mod tests;

pub use secret::Secret;
pub use validate::validate;

use crate::env::Env;
use reqwest::Url;
use serde_json::Value;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A complete, validated configuration.
#[derive(Debug)]
pub struct GatewayConfig {
    pub server_id: Option<String>,
    pub applications: Vec<Arc<Application>>,
    /// Fields the file sets that this gateway accepts for compatibility but does not act on;
    /// worth a warning at start-up, not a refusal.
    pub unused: Vec<String>,
}

impl GatewayConfig {
    /// The application with this id.
    pub fn application(&self, app_id: &str) -> Option<&Arc<Application>> {
        self.applications.iter().find(|a| &*a.id == app_id)
    }
}

/// The kinds of backend service an application can front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppType {
    AzureOpenAi,
}

impl AppType {
    pub fn as_str(self) -> &'static str {
        match self {
            AppType::AzureOpenAi => "azure_oai",
        }
    }
}

/// How an application orders its endpoints for each request. See [`crate::routing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Priority,
    LeastRecentlyUsed,
    WeightedRandom,
    LeastActiveConnections,
}

impl Strategy {
    /// The name used in the config file and in `instanceinfo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "Priority",
            Strategy::LeastRecentlyUsed => "LeastRecentlyUsed",
            Strategy::WeightedRandom => "WeightedRandom",
            Strategy::LeastActiveConnections => "LeastActiveConnections",
        }
    }
}

/// One configured AI application.
#[derive(Debug)]
pub struct Application {
    pub id: Arc<str>,
    pub description: Option<String>,
    pub app_type: AppType,
    pub active: bool,
    pub strategy: Strategy,
    /// In priority order: index 0 first.
    pub endpoints: Vec<Endpoint>,
    /// Kept verbatim for the cache and memory features and for `instanceinfo`.
    pub cache_settings: Option<Value>,
    pub memory_settings: Option<Value>,
}

/// One backend deployment.
#[derive(Debug)]
pub struct Endpoint {
    /// Names the endpoint in headers, metrics, logs and errors (never the URI).
    pub id: Arc<str>,
    /// `id` as the `x-endpoint-id` header value every answer carries, built once.
    pub id_header: http::HeaderValue,
    pub uri: Url,
    /// What `uri` is: one that names its operation (called as is), or a deployment or v1 base
    /// the request's operation is appended to. Decided from `uri` at validation.
    pub target: crate::upstream::Target,
    /// The model the body's `model` is set to upstream (v1 and Foundry endpoints read the
    /// deployment there); the client's is sent when unset.
    pub model: Option<Arc<str>>,
    /// `uri` as every surface shows it (instanceinfo, metrics, logs): see [`display_uri`].
    pub display_uri: Arc<str>,
    pub key: Secret,
    pub rpm: Option<u32>,
    /// Share for the WeightedRandom strategy (1–100).
    pub weight: u32,
    pub timeouts: Timeouts,
}

/// An endpoint URI as it may be shown anywhere (`instanceinfo`, the metrics JSON, Prometheus,
/// logs): scheme, host, the port when it is not the scheme's default, the path, `api-version`
/// as written, and every other query parameter with its value replaced by `***`. Credentials in
/// the userinfo part are dropped. Query values (`?code=…`) and passwords are secrets in practice.
pub fn display_uri(uri: &Url) -> String {
    let mut out = format!("{}://{}", uri.scheme(), uri.host_str().unwrap_or_default());
    if let Some(port) = uri.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(uri.path());
    let mut first = true;
    for (name, value) in uri.query_pairs() {
        out.push(if first { '?' } else { '&' });
        first = false;
        let name = url_form(&name);
        out.push_str(&name);
        out.push('=');
        if name == "api-version" {
            out.push_str(&url_form(&value));
        } else {
            out.push_str("***");
        }
    }
    out
}

/// A query name or value percent-encoded for display.
fn url_form(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Per-endpoint time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            // Non-streamed completions send their headers only when generation is done.
            response: Duration::from_secs(120),
            idle: Duration::from_secs(60),
        }
    }
}

/// One thing wrong with a configuration, located by its JSON path (`applications[1].endpoints[0].rpm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration is not valid JSON (line {line}, column {column}): {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("configuration has {} problem(s):\n{}", .0.len(), list(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem, one per entry (a read or syntax error is one problem at the root).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid(problems) => problems.clone(),
            other => vec![Problem {
                path: "$".into(),
                message: other.to_string(),
            }],
        }
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parse and validate a configuration from JSON text.
pub fn parse(text: &[u8], env: &dyn Env) -> Result<GatewayConfig, ConfigError> {
    let value: Value = serde_json::from_slice(text).map_err(|e| ConfigError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    validate(value, env)
}

/// Read, parse and validate a configuration file.
pub fn load_file(path: &Path, env: &dyn Env) -> Result<GatewayConfig, ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, env)
}
