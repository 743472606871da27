//! Stage two: judge the raw shape and build the typed [`GatewayConfig`].
//!
//! Every check appends to one list of [`Problem`]s instead of returning early, so that a user
//! fixing a file sees everything wrong with it in one run.

use super::raw::{RawApplication, RawEndpoint, RawGatewayConfig, RawTimeouts};
use super::{AppType, Application, Endpoint, GatewayConfig, Problem, Secret, Strategy, Timeouts};
use crate::env::Env;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Application types the Node gateway knows but this gateway does not front yet.
const LATER_APP_TYPES: &[&str] = &[
    "azure_aimodel_inf",
    "azure_ai_agent",
    "azure_language",
    "azure_translator",
    "azure_content_safety",
    "azure_search",
];

/// Router types the Node gateway knows but this gateway does not implement yet.
const LATER_ROUTERS: &[&str] = &[
    "LatencyWeighted",
    "FeedbackWeightedRandom",
    "PayloadSwitch",
    "HeaderSwitch",
    "ModelAware",
    "TokenAware",
    "TimeAware",
    "BudgetAware",
    "AdaptiveBudgetAware",
];

/// Longest timeout accepted (the Functions front door gives up after 230 s anyway).
const MAX_TIMEOUT_MS: i64 = 3_600_000;

/// Validate a parsed JSON document into a [`GatewayConfig`], or list every problem.
pub fn validate(value: Value, env: &dyn Env) -> Result<GatewayConfig, super::ConfigError> {
    let mut problems = Problems::default();
    let Some(raw) = problems.deserialize::<RawGatewayConfig>("", value) else {
        return Err(super::ConfigError::Invalid(problems.0));
    };
    if raw.applications.is_empty() {
        problems.push("applications", "at least one application is required");
    }
    let mut unused: Vec<String> = raw.unused_fields().iter().map(|f| f.to_string()).collect();
    let mut seen = HashSet::new();
    let mut applications = Vec::with_capacity(raw.applications.len());
    for (i, app) in raw.applications.into_iter().enumerate() {
        let path = format!("applications[{i}]");
        let Some(app) = problems.deserialize::<RawApplication>(&path, app) else {
            continue;
        };
        if !seen.insert(app.app_id.clone()) {
            problems.push(
                format!("{path}.appId"),
                format!("duplicate appId '{}'", app.app_id),
            );
        }
        unused.extend(app.unused_fields().iter().map(|f| format!("{path}.{f}")));
        if let Some(app) = application(&path, app, env, &mut problems, &mut unused) {
            applications.push(Arc::new(app));
        }
    }
    if problems.0.is_empty() {
        Ok(GatewayConfig {
            server_id: raw.server_id,
            applications,
            unused,
        })
    } else {
        Err(super::ConfigError::Invalid(problems.0))
    }
}

fn application(
    path: &str,
    raw: RawApplication,
    env: &dyn Env,
    problems: &mut Problems,
    unused: &mut Vec<String>,
) -> Option<Application> {
    let before = problems.0.len();
    if !is_valid_id(&raw.app_id) {
        problems.push(
            format!("{path}.appId"),
            "must be 1-100 characters of letters, digits, '-', '_' or '.'",
        );
    }
    let app_type = match raw.app_type.as_str() {
        "azure_oai" => Some(AppType::AzureOpenAi),
        other if LATER_APP_TYPES.contains(&other) => {
            problems.push(
                format!("{path}.appType"),
                format!(
                    "appType '{other}' is not supported by this gateway yet; only 'azure_oai' applications can be served"
                ),
            );
            None
        }
        other => {
            problems.push(
                format!("{path}.appType"),
                format!("unknown appType '{other}'; expected 'azure_oai'"),
            );
            None
        }
    };
    let strategy = strategy(path, raw.endpoint_router_type.as_deref(), problems);
    if raw.endpoints.is_empty() {
        problems.push(
            format!("{path}.endpoints"),
            "at least one endpoint is required",
        );
    }
    let mut ids = HashSet::new();
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, ep) in raw.endpoints.into_iter().enumerate() {
        let ep_path = format!("{path}.endpoints[{i}]");
        let Some(ep) = problems.deserialize::<RawEndpoint>(&ep_path, ep) else {
            continue;
        };
        unused.extend(ep.unused_fields().iter().map(|f| format!("{ep_path}.{f}")));
        let id = ep.id.clone().unwrap_or_else(|| format!("ep{i}"));
        if !ids.insert(id) {
            problems.push(
                format!("{ep_path}.id"),
                format!(
                    "duplicate endpoint id '{}'",
                    ep.id.as_deref().unwrap_or_default()
                ),
            );
        }
        if let Some(ep) = endpoint(&ep_path, i, ep, env, problems) {
            endpoints.push(ep);
        }
    }
    if problems.0.len() != before {
        return None;
    }
    Some(Application {
        id: raw.app_id.into(),
        description: raw.description.or(raw.name),
        app_type: app_type?,
        active: raw.is_active.unwrap_or(true),
        strategy: strategy?,
        endpoints,
        cache_settings: raw.cache_settings,
        memory_settings: raw.memory_settings,
    })
}

fn strategy(path: &str, name: Option<&str>, problems: &mut Problems) -> Option<Strategy> {
    let strategy = match name {
        None | Some("Priority") => Strategy::Priority,
        Some("LeastRecentlyUsed") | Some("RoundRobin") => Strategy::LeastRecentlyUsed,
        Some("WeightedRandom") => Strategy::WeightedRandom,
        Some("LeastActiveConnections") => Strategy::LeastActiveConnections,
        Some(other) => {
            let message = if LATER_ROUTERS.contains(&other) {
                format!("endpointRouterType '{other}' is not supported by this gateway yet")
            } else {
                format!("unknown endpointRouterType '{other}'")
            };
            problems.push(
                format!("{path}.endpointRouterType"),
                format!(
                    "{message}; expected one of Priority, LeastRecentlyUsed, WeightedRandom, LeastActiveConnections"
                ),
            );
            return None;
        }
    };
    Some(strategy)
}

fn endpoint(
    path: &str,
    index: usize,
    raw: RawEndpoint,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<Endpoint> {
    let before = problems.0.len();
    let uri = match Url::parse(&raw.uri) {
        Ok(uri) if matches!(uri.scheme(), "http" | "https") && uri.has_host() => Some(uri),
        Ok(_) => {
            problems.push(
                format!("{path}.uri"),
                "must be an absolute http:// or https:// URL",
            );
            None
        }
        Err(e) => {
            problems.push(format!("{path}.uri"), format!("not a valid URL: {e}"));
            None
        }
    };
    let key = api_key(path, raw.apikey.as_deref(), env, problems);
    let id: Arc<str> = match raw.id {
        Some(id) if is_valid_id(&id) => id.into(),
        Some(_) => {
            problems.push(
                format!("{path}.id"),
                "must be 1-100 characters of letters, digits, '-', '_' or '.'",
            );
            "".into()
        }
        None => format!("ep{index}").into(),
    };
    let rpm = raw.rpm.and_then(|rpm| {
        let valid = u32::try_from(rpm).ok().filter(|r| *r > 0);
        if valid.is_none() {
            problems.push(format!("{path}.rpm"), "must be a whole number above 0");
        }
        valid
    });
    let weight = match raw.weight {
        None => 1,
        Some(w @ 1..=100) => w as u32,
        Some(_) => {
            problems.push(
                format!("{path}.weight"),
                "must be a whole number from 1 to 100",
            );
            1
        }
    };
    let timeouts = timeouts(path, raw.timeouts, problems);
    if problems.0.len() != before {
        return None;
    }
    // A valid id is visible ASCII, so this holds; said rather than assumed.
    let Ok(id_header) = http::HeaderValue::from_str(&id) else {
        problems.push(format!("{path}.id"), "cannot be sent as a header value");
        return None;
    };
    Some(Endpoint {
        id,
        id_header,
        uri: uri?,
        key: key?,
        rpm,
        weight,
        timeouts,
    })
}

/// The key as written, or read from the environment when written `env:NAME`.
fn api_key(
    path: &str,
    written: Option<&str>,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<Secret> {
    let path = format!("{path}.apikey");
    let Some(written) = written else {
        problems.push(
            path,
            "an API key is required (write \"env:NAME\" to read it from the environment)",
        );
        return None;
    };
    let key = match written.strip_prefix("env:") {
        Some(name) => match env.var(name) {
            Some(key) => key,
            None => {
                problems.push(path, format!("environment variable '{name}' is not set"));
                return None;
            }
        },
        None => written.to_owned(),
    };
    if key.is_empty() {
        problems.push(path, "the API key is empty");
        return None;
    }
    let secret = Secret::new(&key);
    if secret.is_none() {
        problems.push(
            path,
            "the API key contains characters that cannot be sent in a header",
        );
    }
    secret
}

fn timeouts(path: &str, raw: Option<RawTimeouts>, problems: &mut Problems) -> Timeouts {
    let mut timeouts = Timeouts::default();
    let Some(raw) = raw else {
        return timeouts;
    };
    let mut set = |field: &str, value: Option<i64>, slot: &mut Duration| {
        if let Some(ms) = value {
            if (1..=MAX_TIMEOUT_MS).contains(&ms) {
                *slot = Duration::from_millis(ms as u64);
            } else {
                problems.push(
                    format!("{path}.timeouts.{field}"),
                    format!("must be from 1 to {MAX_TIMEOUT_MS} milliseconds"),
                );
            }
        }
    };
    set("connectMs", raw.connect_ms, &mut timeouts.connect);
    set("responseMs", raw.response_ms, &mut timeouts.response);
    set("idleMs", raw.idle_ms, &mut timeouts.idle);
    timeouts
}

fn is_valid_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The growing list of problems, with a helper that turns serde errors into located problems.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialize the JSON object `value` (found at `base`), recording a located problem on
    /// failure.
    fn deserialize<T: DeserializeOwned>(&mut self, base: &str, value: Value) -> Option<T> {
        if !value.is_object() {
            let found = match value {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            };
            let path = if base.is_empty() { "$" } else { base };
            self.push(path, format!("expected a JSON object, found {found}"));
            return None;
        }
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let path = match (base, inner.as_str()) {
                    ("", ".") => "$".to_owned(),
                    ("", inner) => inner.to_owned(),
                    (base, ".") => base.to_owned(),
                    (base, inner) => format!("{base}.{inner}"),
                };
                self.push(path, e.into_inner().to_string());
                None
            }
        }
    }
}
