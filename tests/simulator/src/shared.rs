//! State shared by every connection of one simulator.
//!
//! Fixed settings (name, api key) are prepared once; the behaviour sits
//! behind an `ArcSwap` so requests read it without a lock and a change is a
//! pointer swap; the counters are atomics; a watch channel tells
//! connections and hanging requests when the server stops.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use tokio::sync::watch;

use crate::SimOptions;
use crate::active::Active;
use crate::behaviour::Behaviour;
use crate::seen::Seen;
use crate::stats::Counters;

/// Name used when the options give none.
pub(crate) const DEFAULT_NAME: &str = "simulator";

/// Where the server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    Running,
    /// No new connections; in-flight requests may finish.
    Draining,
    /// Stop everything now.
    Aborting,
}

/// State every request can reach.
pub(crate) struct Shared {
    pub name: Box<str>,
    /// `name` as a header value (invalid characters replaced by `?`).
    pub name_header: HeaderValue,
    api_key: Option<Box<[u8]>>,
    pub active: ArcSwap<Active>,
    pub counters: Arc<Counters>,
    /// The last model requests, for tests that check where a request was sent.
    pub seen: Seen,
    pub lifecycle: watch::Sender<Lifecycle>,
}

impl Shared {
    pub fn new(opts: &SimOptions) -> Arc<Self> {
        let name: Box<str> = opts
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAME)
            .into();
        let printable: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        let name_header =
            HeaderValue::from_str(&printable).unwrap_or(HeaderValue::from_static(DEFAULT_NAME));
        Arc::new(Self {
            active: ArcSwap::from_pointee(Active::new(opts.behaviour.clone(), &name)),
            name,
            name_header,
            api_key: opts
                .api_key
                .as_deref()
                .filter(|k| !k.is_empty())
                .map(|k| k.as_bytes().into()),
            counters: Arc::default(),
            seen: Seen::default(),
            lifecycle: watch::Sender::new(Lifecycle::Running),
        })
    }

    /// Puts `behaviour` in force for the next request.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.active
            .store(Arc::new(Active::new(behaviour, &self.name)));
    }

    /// True if no key is configured, or the request carries it as
    /// `api-key: <key>` or `Authorization: Bearer <key>`.
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = self.api_key.as_deref() else {
            return true;
        };
        let api_key_ok = headers
            .get_all("api-key")
            .iter()
            .any(|v| v.as_bytes() == key);
        let bearer_ok = headers.get_all(AUTHORIZATION).iter().any(|v| {
            let v = v.as_bytes();
            v.len() == key.len() + 7
                && v.get(..7)
                    .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
                && v.get(7..) == Some(key)
        });
        api_key_ok || bearer_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn api_key_in_either_header() {
        let s = Shared::new(&SimOptions {
            api_key: Some("k1".into()),
            ..SimOptions::default()
        });
        assert!(s.authorized(&headers(&[("api-key", "k1")])));
        assert!(s.authorized(&headers(&[("authorization", "Bearer k1")])));
        assert!(s.authorized(&headers(&[("authorization", "bearer k1")])));
        assert!(!s.authorized(&headers(&[])));
        assert!(!s.authorized(&headers(&[("api-key", "k2")])));
        assert!(!s.authorized(&headers(&[("authorization", "Bearer k12")])));
        assert!(!s.authorized(&headers(&[("authorization", "Basic k1")])));
    }

    #[test]
    fn no_key_or_empty_key_means_open() {
        assert!(Shared::new(&SimOptions::default()).authorized(&headers(&[])));
        let empty = Shared::new(&SimOptions {
            api_key: Some(String::new()),
            ..SimOptions::default()
        });
        assert!(empty.authorized(&headers(&[])));
    }

    #[test]
    fn names_become_safe_header_values() {
        assert_eq!(Shared::new(&SimOptions::default()).name_header, "simulator");
        let s = Shared::new(&SimOptions {
            name: Some("east\nüs".into()),
            ..SimOptions::default()
        });
        assert_eq!(&*s.name, "east\nüs");
        assert_eq!(s.name_header, "east??s");
    }

    #[test]
    fn behaviour_changes_are_seen_by_the_next_load() {
        let s = Shared::new(&SimOptions::default());
        assert_eq!(s.active.load().behaviour.chunks, 5);
        s.set_behaviour(Behaviour {
            chunks: 9,
            ..Behaviour::default()
        });
        assert_eq!(s.active.load().behaviour.chunks, 9);
    }
}
