//! The last model requests the simulator received, as the gateway sent them.
//!
//! Counters say how many requests arrived, not where they were sent: a gateway test that checks
//! which operation a request was forwarded to, with which `api-version` and content type, reads
//! this log. It keeps the most recent [`KEPT`] requests; recording one costs a lock and three
//! reference-counted clones (the path, query and content type share the request's buffers).

use std::collections::VecDeque;
use std::sync::Mutex;

use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};

/// How many requests the log keeps.
pub const KEPT: usize = 64;

/// One request as the simulator received it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeenRequest {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string as sent, without the `?`.
    pub query: Option<String>,
    pub content_type: Option<String>,
}

impl SeenRequest {
    /// The value of query parameter `name`, if the query has it.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| value.to_owned())
        })
    }
}

#[derive(Debug)]
struct Raw {
    method: Method,
    path_and_query: Option<PathAndQuery>,
    content_type: Option<HeaderValue>,
}

/// The log.
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<VecDeque<Raw>>);

impl Seen {
    /// Notes a model request.
    pub fn record(&self, parts: &Parts) {
        let raw = Raw {
            method: parts.method.clone(),
            path_and_query: parts.uri.path_and_query().cloned(),
            content_type: parts.headers.get(CONTENT_TYPE).cloned(),
        };
        let mut log = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.len() == KEPT {
            log.pop_front();
        }
        log.push_back(raw);
    }

    /// The requests kept, oldest first.
    pub fn snapshot(&self) -> Vec<SeenRequest> {
        let log = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        log.iter()
            .map(|raw| SeenRequest {
                method: raw.method.to_string(),
                path: raw
                    .path_and_query
                    .as_ref()
                    .map_or_else(|| "/".to_owned(), |pq| pq.path().to_owned()),
                query: raw
                    .path_and_query
                    .as_ref()
                    .and_then(|pq| pq.query())
                    .map(str::to_owned),
                content_type: raw
                    .content_type
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            })
            .collect()
    }

    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, content_type: Option<&'static str>) -> Parts {
        let mut builder = http::Request::builder().method(Method::POST).uri(uri);
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn requests_are_kept_newest_last_up_to_the_limit() {
        let seen = Seen::default();
        seen.record(&parts(
            "/openai/deployments/d/embeddings?api-version=2024-10-21&x=1",
            Some("application/json"),
        ));
        let first = &seen.snapshot()[0];
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/openai/deployments/d/embeddings");
        assert_eq!(
            first.query_param("api-version").as_deref(),
            Some("2024-10-21")
        );
        assert_eq!(first.query_param("x").as_deref(), Some("1"));
        assert_eq!(first.query_param("y"), None);
        assert_eq!(first.content_type.as_deref(), Some("application/json"));
        for i in 0..KEPT {
            seen.record(&parts(&format!("/v1/chat/completions?n={i}"), None));
        }
        let all = seen.snapshot();
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].query.as_deref(), Some("n=0"));
        assert_eq!(
            all[KEPT - 1].query.as_deref(),
            Some(&*format!("n={}", KEPT - 1))
        );
        assert_eq!(all[0].content_type, None);
        seen.clear();
        assert!(seen.snapshot().is_empty());
    }
}
