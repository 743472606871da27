//! Stage two: judge the raw shape and build the typed [`GatewayConfig`].
//!
//! Every check appends to one list of [`Problem`]s instead of returning early, so that a user
//! fixing a file sees everything wrong with it in one run.

use super::endpoint::{default_id, endpoint, is_valid_id};
use super::raw::{RawApplication, RawEndpoint, RawGatewayConfig};
use super::{AppType, Application, GatewayConfig, Problem, Strategy};
use crate::env::Env;
use crate::upstream::Target;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;

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
    // The first endpoint built and its index: the others must take the operation as it does.
    let mut first_kind: Option<(usize, Target)> = None;
    for (i, ep) in raw.endpoints.into_iter().enumerate() {
        let ep_path = format!("{path}.endpoints[{i}]");
        let Some(ep) = problems.deserialize::<RawEndpoint>(&ep_path, ep) else {
            continue;
        };
        unused.extend(ep.unused_fields().iter().map(|f| format!("{ep_path}.{f}")));
        // Duplicates are reported even for endpoints with other problems.
        let explicit = ep.id.is_some();
        let id = ep
            .id
            .clone()
            .or_else(|| Url::parse(&ep.uri).ok().map(|u| default_id(&u)));
        let duplicate = id.as_ref().is_some_and(|id| !ids.insert(id.clone()));
        if let (true, Some(id)) = (duplicate, &id) {
            let message = if explicit {
                format!("duplicate endpoint id '{id}'")
            } else {
                format!(
                    "this endpoint's default id '{id}' (from its URI) is already used by another endpoint of this application; give each such endpoint an explicit \"id\""
                )
            };
            problems.push(format!("{ep_path}.id"), message);
        }
        let Some(ep) = endpoint(&ep_path, ep, env, problems) else {
            continue;
        };
        if duplicate {
            continue;
        }
        match first_kind {
            None => first_kind = Some((i, ep.target)),
            Some((first, kind))
                if kind.takes_client_operation() != ep.target.takes_client_operation() =>
            {
                problems.push(
                    format!("{ep_path}.uri"),
                    mixed_targets(first, kind, ep.target),
                );
            }
            Some(_) => {}
        }
        endpoints.push(ep);
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

/// Why two endpoints of one application cannot stand together: one takes the operation from the
/// client's path, the other names its own.
fn mixed_targets(first: usize, first_kind: Target, this: Target) -> String {
    let describe = |target: Target| match target {
        Target::Deployment { .. } => {
            "ends at a deployment (…/openai/deployments/{name})".to_owned()
        }
        Target::V1 => "ends at the v1 surface (…/openai/v1)".to_owned(),
        Target::Fixed {
            operation: Some(op),
        } => format!("names its operation ({op})"),
        Target::Fixed { operation: None } => "is called as written".to_owned(),
    };
    format!(
        "this uri {} but endpoints[{first}]'s {}; in one application either every uri ends at a deployment or the v1 surface (the operation comes from the client's path) or every uri names its operation",
        describe(this),
        describe(first_kind)
    )
}

/// The growing list of problems, with a helper that turns serde errors into located problems.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialize the JSON object `value` (found at `base`), recording a located problem on
    /// failure.
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        base: &str,
        value: Value,
    ) -> Option<T> {
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
