//! Stage two for one endpoint: its URI and what kind of target it is, its key (as written or
//! from the environment), id, limits, weight, `model` and timeouts. Problems go to the
//! application's list, located by JSON path, like every other check.

use super::raw::{RawEndpoint, RawTimeouts};
use super::validate::Problems;
use super::{Endpoint, Secret, Timeouts};
use crate::env::Env;
use crate::upstream::Target;
use reqwest::Url;
use std::sync::Arc;
use std::time::Duration;

/// Environment variables holding the gateway's own secrets, refused as `env:` keys.
const GATEWAY_SECRETS: [&str; 3] = [
    "API_GATEWAY_KEY",
    "DATABASE_URL",
    "API_GATEWAY_DATABASE_URL",
];

/// Longest timeout accepted (the Functions front door gives up after 230 s anyway).
const MAX_TIMEOUT_MS: i64 = 3_600_000;

/// An endpoint's `model`: a non-empty name of printable characters.
fn model(path: &str, raw: Option<String>, problems: &mut Problems) -> Option<Arc<str>> {
    let model = raw?;
    if model.trim().is_empty() || model.len() > 256 || model.chars().any(char::is_control) {
        problems.push(
            format!("{path}.model"),
            "must be a model or deployment name of 1-256 printable characters",
        );
        return None;
    }
    Some(model.into())
}

pub(super) fn endpoint(
    path: &str,
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
    let id: Arc<str> = match (raw.id, &uri) {
        (Some(id), _) if is_valid_id(&id) => id.into(),
        (Some(_), _) => {
            problems.push(
                format!("{path}.id"),
                "must be 1-100 characters of letters, digits, '-', '_' or '.'",
            );
            "".into()
        }
        (None, Some(uri)) => default_id(uri).into(),
        (None, None) => "".into(),
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
    let target = uri.as_ref().map(Target::of);
    if target == Some(Target::V1) && raw.model.is_none() {
        problems.push(
            format!("{path}.model"),
            "an endpoint on the v1 surface (uri ending /openai/v1) needs \"model\": the deployment name, which Azure reads from the body's model (clients of the gateway put the application id there)",
        );
    }
    let model = model(path, raw.model, problems);
    if problems.0.len() != before {
        return None;
    }
    // A valid id is visible ASCII, so this holds; said rather than assumed.
    let Ok(id_header) = http::HeaderValue::from_str(&id) else {
        problems.push(format!("{path}.id"), "cannot be sent as a header value");
        return None;
    };
    let uri = uri?;
    Some(Endpoint {
        id,
        id_header,
        display_uri: super::display_uri(&uri).into(),
        target: target?,
        model,
        uri,
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
        // The gateway's own secrets are never an endpoint's key: a configuration (which the
        // admin key can replace) must not be able to send them to a backend of its choosing.
        Some(name) if GATEWAY_SECRETS.contains(&name) => {
            problems.push(
                path,
                format!(
                    "'{name}' holds one of the gateway's own secrets and cannot be an endpoint key"
                ),
            );
            return None;
        }
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

/// The id of an endpoint that names none: `ep-` and the first 8 hex digits of the 64-bit FNV-1a
/// hash of its URI's scheme, host, port and path (no query, no credentials). It depends only on
/// where the endpoint is, so reordering or inserting endpoints never moves one endpoint's
/// circuit, limits, metrics or stored rows onto another.
pub fn default_id(uri: &Url) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let port = uri.port_or_known_default().unwrap_or(0);
    let place = format!(
        "{}://{}:{port}{}",
        uri.scheme(),
        uri.host_str().unwrap_or_default().to_ascii_lowercase(),
        uri.path()
    );
    let hash = place
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("ep-{:08x}", hash >> 32)
}

pub(super) fn is_valid_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
