//! Process settings: environment variables (the Node gateway's names where they exist) and the
//! few command-line flags that override them. Read once at start-up through [`Env`], so tests
//! build settings from a map.

use crate::env::Env;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the process needs to know before it loads a configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `API_GATEWAY_CONFIG_FILE` or `--config`.
    pub config_file: Option<PathBuf>,
    /// `API_GATEWAY_HOST` or `--host` (default 127.0.0.1).
    pub host: IpAddr,
    /// `API_GATEWAY_PORT` or `--port` (default 8000).
    pub port: u16,
    /// `API_GATEWAY_ENV`: the `{env}` in `/api/v1/{env}/apirouter` (default `dev`).
    pub env_name: String,
    /// `API_GATEWAY_NAME`: this instance's name in `instanceinfo` and logs.
    pub name: String,
    /// `API_GATEWAY_LOG_LEVEL` (default `info`); a `tracing` filter directive.
    pub log_level: String,
    /// `API_GATEWAY_MAX_BODY_BYTES` (default 4 MiB).
    pub max_body_bytes: usize,
    /// `API_GATEWAY_DEFAULT_RETRY_AFTER_SECS`: how long a 429 without any wait header opens the
    /// circuit (default 10 s).
    pub default_retry_after: Duration,
    /// `API_GATEWAY_SHUTDOWN_GRACE_SECS`: how long requests in flight may run after SIGTERM
    /// (default 30 s).
    pub shutdown_grace: Duration,
    /// `DATABASE_URL` (or `API_GATEWAY_DATABASE_URL`): PostgreSQL for state shared across
    /// instances; without it state stays in memory.
    pub database_url: Option<DatabaseUrl>,
    /// `API_GATEWAY_METRICS_CINTERVAL`: collection window length in minutes (default 60;
    /// fractions allowed).
    pub metrics_interval: Duration,
    /// `API_GATEWAY_METRICS_CHISTORY`: how many windows are kept (default 24).
    pub metrics_history: u32,
    /// `API_GATEWAY_METRICS_FLUSH_SECS`: how often counters are written to the store (default 5).
    pub metrics_flush: Duration,
    /// `API_GATEWAY_SYNC_INTERVAL_MS`: how often circuit state is exchanged with the store
    /// (default 250).
    pub sync_interval: Duration,
    /// This instance's unique name in the shared store: `{name}-{host}-{pid}`.
    pub instance: String,
    /// `API_GATEWAY_KEY`: the bearer key for the admin routes that change state
    /// (`POST {prefix}/reconfig`, `POST {prefix}/circuits/...`); they are off without it. Never
    /// printed.
    pub gateway_key: Option<GatewayKey>,
    /// `API_GATEWAY_MAX_RETRY_AFTER_SECS`: the longest wait a backend's 429 may open a circuit
    /// for (default 86,400 s: Azure quota 429s can name a day).
    pub max_retry_after: Duration,
    /// `API_GATEWAY_DEFAULT_API_VERSION`: the `api-version` sent to an endpoint whose URI names
    /// none when the client named none either (default `2024-10-21`).
    pub default_api_version: String,
    /// `API_GATEWAY_HEADER_TIMEOUT_SECS`: how long a client may take to send a request head
    /// (default 10 s).
    pub header_timeout: Duration,
    /// `API_GATEWAY_BODY_TIMEOUT_SECS`: how long a request body may stop arriving before the
    /// request is refused (default 30 s).
    pub body_timeout: Duration,
    /// `API_GATEWAY_KEEPALIVE_SECS`: how long an idle keep-alive connection is kept open
    /// (default 60 s).
    pub keepalive: Duration,
    /// `API_GATEWAY_LOG_FORMAT`: `text` (default) or `json` (one object per line, for hosts).
    pub log_format: LogFormat,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (what log collectors on Functions, Container Apps and Lambda
    /// parse best).
    Json,
}

/// The gateway's admin key, compared in constant time and never printed.
#[derive(Clone)]
pub struct GatewayKey(String);

impl GatewayKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// Whether `presented` is the key, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayKey(***)")
    }
}

/// A database URL; never printed, since it usually holds a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(***)")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            config_file: None,
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            env_name: "dev".into(),
            name: "aigw".into(),
            log_level: "info".into(),
            max_body_bytes: 4 * 1024 * 1024,
            default_retry_after: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            database_url: None,
            metrics_interval: Duration::from_secs(3600),
            metrics_history: 24,
            metrics_flush: Duration::from_secs(5),
            sync_interval: Duration::from_millis(250),
            instance: format!("aigw-local-{}", std::process::id()),
            gateway_key: None,
            max_retry_after: Duration::from_secs(86_400),
            default_api_version: "2024-10-21".into(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            log_format: LogFormat::Text,
        }
    }
}

/// A setting that could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name}: {message}")]
pub struct SettingsError {
    pub name: String,
    pub message: String,
}

impl Settings {
    /// Settings from the environment, then the command-line arguments (without the program name).
    pub fn load(env: &dyn Env, args: &[String]) -> Result<Self, SettingsError> {
        let mut s = Settings::default();
        if let Some(v) = env.var("API_GATEWAY_CONFIG_FILE").filter(|v| !v.is_empty()) {
            s.config_file = Some(v.into());
        }
        if let Some(v) = env.var("API_GATEWAY_HOST") {
            s.host = parse("API_GATEWAY_HOST", &v, "an IP address")?;
        }
        if let Some(v) = env.var("API_GATEWAY_PORT") {
            s.port = parse("API_GATEWAY_PORT", &v, "a port number")?;
        }
        if let Some(v) = env.var("API_GATEWAY_ENV").filter(|v| !v.is_empty()) {
            if !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err("API_GATEWAY_ENV", "letters, digits, '-' and '_' only"));
            }
            s.env_name = v;
        }
        if let Some(v) = env.var("API_GATEWAY_NAME").filter(|v| !v.is_empty()) {
            s.name = v;
        }
        if let Some(v) = env.var("API_GATEWAY_LOG_LEVEL").filter(|v| !v.is_empty()) {
            s.log_level = v;
        }
        if let Some(v) = env.var("API_GATEWAY_MAX_BODY_BYTES") {
            s.max_body_bytes = parse("API_GATEWAY_MAX_BODY_BYTES", &v, "a number of bytes")?;
        }
        if let Some(v) = env.var("API_GATEWAY_DEFAULT_RETRY_AFTER_SECS") {
            let secs: u64 = parse("API_GATEWAY_DEFAULT_RETRY_AFTER_SECS", &v, "seconds")?;
            if secs == 0 {
                return Err(err(
                    "API_GATEWAY_DEFAULT_RETRY_AFTER_SECS",
                    "must be at least 1",
                ));
            }
            s.default_retry_after = Duration::from_secs(secs);
        }
        if let Some(v) = env.var("API_GATEWAY_SHUTDOWN_GRACE_SECS") {
            s.shutdown_grace =
                Duration::from_secs(parse("API_GATEWAY_SHUTDOWN_GRACE_SECS", &v, "seconds")?);
        }
        if let Some(v) = env
            .var("DATABASE_URL")
            .or_else(|| env.var("API_GATEWAY_DATABASE_URL"))
            .filter(|v| !v.is_empty())
        {
            if !(v.starts_with("postgres://") || v.starts_with("postgresql://")) {
                return Err(err(
                    "DATABASE_URL",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
            s.database_url = Some(DatabaseUrl(v));
        }
        if let Some(v) = env.var("API_GATEWAY_METRICS_CINTERVAL") {
            let minutes: f64 = parse("API_GATEWAY_METRICS_CINTERVAL", &v, "minutes")?;
            if !(minutes.is_finite() && minutes > 0.0 && minutes <= 10_080.0) {
                return Err(err(
                    "API_GATEWAY_METRICS_CINTERVAL",
                    "must be above 0 and at most a week",
                ));
            }
            s.metrics_interval = Duration::from_secs_f64(minutes * 60.0);
        }
        if let Some(v) = env.var("API_GATEWAY_METRICS_CHISTORY") {
            s.metrics_history = parse("API_GATEWAY_METRICS_CHISTORY", &v, "a number of windows")?;
            if s.metrics_history == 0 {
                return Err(err("API_GATEWAY_METRICS_CHISTORY", "must be at least 1"));
            }
        }
        if let Some(v) = env.var("API_GATEWAY_METRICS_FLUSH_SECS") {
            s.metrics_flush = positive_secs("API_GATEWAY_METRICS_FLUSH_SECS", &v)?;
        }
        if let Some(v) = env.var("API_GATEWAY_SYNC_INTERVAL_MS") {
            let ms: u64 = parse("API_GATEWAY_SYNC_INTERVAL_MS", &v, "milliseconds")?;
            if !(10..=60_000).contains(&ms) {
                return Err(err(
                    "API_GATEWAY_SYNC_INTERVAL_MS",
                    "must be from 10 to 60000",
                ));
            }
            s.sync_interval = Duration::from_millis(ms);
        }
        if let Some(v) = env.var("API_GATEWAY_KEY").filter(|v| !v.is_empty()) {
            s.gateway_key = Some(GatewayKey::new(v));
        }
        if let Some(v) = env.var("API_GATEWAY_MAX_RETRY_AFTER_SECS") {
            let secs: u64 = parse("API_GATEWAY_MAX_RETRY_AFTER_SECS", &v, "seconds")?;
            if secs == 0 {
                return Err(err(
                    "API_GATEWAY_MAX_RETRY_AFTER_SECS",
                    "must be at least 1",
                ));
            }
            s.max_retry_after = Duration::from_secs(secs);
        }
        if let Some(v) = env
            .var("API_GATEWAY_DEFAULT_API_VERSION")
            .filter(|v| !v.is_empty())
        {
            if !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(err(
                    "API_GATEWAY_DEFAULT_API_VERSION",
                    "letters, digits, '-' and '.' only (for example 2024-10-21)",
                ));
            }
            s.default_api_version = v;
        }
        if let Some(v) = env.var("API_GATEWAY_HEADER_TIMEOUT_SECS") {
            s.header_timeout = positive_secs("API_GATEWAY_HEADER_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env.var("API_GATEWAY_BODY_TIMEOUT_SECS") {
            s.body_timeout = positive_secs("API_GATEWAY_BODY_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env.var("API_GATEWAY_KEEPALIVE_SECS") {
            s.keepalive = positive_secs("API_GATEWAY_KEEPALIVE_SECS", &v)?;
        }
        if let Some(v) = env.var("API_GATEWAY_LOG_FORMAT").filter(|v| !v.is_empty()) {
            s.log_format = match v.trim().to_ascii_lowercase().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(err("API_GATEWAY_LOG_FORMAT", "must be 'text' or 'json'")),
            };
        }
        let host = [
            "WEBSITE_INSTANCE_ID",
            "CONTAINER_APP_REPLICA_NAME",
            "POD_NAME",
            "HOSTNAME",
        ]
        .iter()
        .find_map(|name| env.var(name).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "local".into());
        let host: String = host.chars().take(24).collect();
        s.instance = format!("{}-{host}-{}", s.name, std::process::id());
        s.apply_args(args)?;
        Ok(s)
    }

    /// How long 429s keep endpoints off.
    pub fn waits(&self) -> crate::forward::Waits {
        crate::forward::Waits {
            default: self.default_retry_after.min(self.max_retry_after),
            max: self.max_retry_after,
        }
    }

    /// This instance's unique name in the shared store.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// The metrics collection windows.
    pub fn metrics_windows(&self) -> crate::metrics::Windows {
        crate::metrics::Windows {
            interval: self.metrics_interval,
            history: self.metrics_history,
        }
    }

    fn apply_args(&mut self, args: &[String]) -> Result<(), SettingsError> {
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = |flag: &str| {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| err(flag, "needs a value"))
            };
            match flag {
                "--config" => self.config_file = Some(value("--config")?.into()),
                "--port" => self.port = parse("--port", &value("--port")?, "a port number")?,
                "--host" => self.host = parse("--host", &value("--host")?, "an IP address")?,
                other => {
                    return Err(err(
                        other,
                        "unknown argument (expected --config FILE, --port N or --host IP)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The path prefix every route hangs under: `/api/v1/{env}/apirouter`.
    pub fn prefix(&self) -> String {
        format!("/api/v1/{}/apirouter", self.env_name)
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str, what: &str) -> Result<T, SettingsError> {
    value
        .trim()
        .parse()
        .map_err(|_| err(name, &format!("'{value}' is not {what}")))
}

/// Seconds (fractions allowed) above 0 and at most a day.
fn positive_secs(name: &str, value: &str) -> Result<Duration, SettingsError> {
    let secs: f64 = parse(name, value, "seconds")?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(err(name, "must be above 0 and at most 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn err(name: &str, message: &str) -> SettingsError {
    SettingsError {
        name: name.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_match_the_node_gateway() {
        let s = Settings::load(&[], &[]).unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.prefix(), "/api/v1/dev/apirouter");
        assert_eq!(s.max_body_bytes, 4 << 20);
        assert_eq!(s.default_retry_after, Duration::from_secs(10));
    }

    #[test]
    fn flags_override_environment() {
        let env = [("API_GATEWAY_PORT", "9000"), ("API_GATEWAY_ENV", "prod")];
        let s = Settings::load(&env, &args(&["--port", "9100", "--config=x.json"])).unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.config_file, Some(PathBuf::from("x.json")));
        assert_eq!(s.prefix(), "/api/v1/prod/apirouter");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = Settings::load(&[("API_GATEWAY_PORT", "eighty")], &[]).unwrap_err();
        assert_eq!(e.name, "API_GATEWAY_PORT");
        let e = Settings::load(&[], &args(&["--port"])).unwrap_err();
        assert_eq!(e.name, "--port");
        let e = Settings::load(&[], &args(&["--verbose"])).unwrap_err();
        assert_eq!(e.name, "--verbose");
        let e = Settings::load(&[("API_GATEWAY_ENV", "a/b")], &[]).unwrap_err();
        assert_eq!(e.name, "API_GATEWAY_ENV");
    }
}
