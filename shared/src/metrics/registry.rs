//! Every endpoint's and application's counters on this instance, kept across reloads like
//! throttle state (endpoints that leave the configuration are dropped), and their flush to the
//! shared store in batches that count once.
//!
//! **Batches.** A flush takes (swaps to zero) the counters into a batch with an id new to this
//! instance and has the store add it. If the write fails or times out, the batch is kept as it
//! is and written again, with the same id, before anything new is taken: a write that timed out
//! after its commit is then recognised by its id and adds nothing. Counters gathered meanwhile
//! stay in the atomics.

use super::endpoint::{AppMetrics, EndpointMetrics};
use crate::store::{EndpointKey, GATEWAY_ENDPOINT, MetricsRow, StoreError};
use crate::throttle::Shared;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one write to the store may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Maps {
    endpoints: HashMap<EndpointKey, Arc<EndpointMetrics>>,
    apps: HashMap<Arc<str>, Arc<AppMetrics>>,
}

/// A flush's rows and the id that makes writing them again harmless.
#[derive(Debug)]
struct Batch {
    id: u64,
    rows: Vec<MetricsRow>,
}

/// See the module doc.
#[derive(Debug)]
pub struct MetricsRegistry {
    maps: Mutex<Maps>,
    /// The batch whose write failed, written again first; held through a flush, so flushes
    /// (the flusher's, an admin request's) take turns.
    pending: tokio::sync::Mutex<Option<Batch>>,
    next_batch: AtomicU64,
    /// The configuration changed: the stored totals of endpoints that left it are to go.
    reconfigured: AtomicBool,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        // Ids go on from a random start, so a restarted instance of the same name does not
        // reuse the ids of its previous life (62 bits: they fit the store's BIGINT).
        Self {
            maps: Mutex::default(),
            pending: tokio::sync::Mutex::default(),
            next_batch: AtomicU64::new(fastrand::u64(..) >> 2),
            reconfigured: AtomicBool::new(false),
        }
    }
}

impl MetricsRegistry {
    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters of `key` (made on first use; the same object for as long as the endpoint
    /// stays configured).
    pub fn resolve(&self, key: &EndpointKey) -> Arc<EndpointMetrics> {
        let mut maps = self.maps();
        if let Some(m) = maps.endpoints.get(key) {
            return m.clone();
        }
        let app = maps.apps.entry(key.app.clone()).or_default().clone();
        let m = Arc::new(EndpointMetrics::new(app));
        maps.endpoints.insert(key.clone(), m.clone());
        m
    }

    /// Forget the endpoints (and applications left without one) that `keep` does not name:
    /// they left the configuration. Their stored totals go at the flusher's next round.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut maps = self.maps();
        maps.endpoints.retain(|k, _| keep(&k.app, &k.endpoint));
        let apps: HashSet<Arc<str>> = maps.endpoints.keys().map(|k| k.app.clone()).collect();
        maps.apps.retain(|app, _| apps.contains(app));
        self.reconfigured.store(true, Ordering::Release);
    }

    /// Relayed bodies of configured endpoints not counted yet (and token counts not added yet).
    pub fn open(&self) -> u64 {
        self.maps().endpoints.values().map(|m| m.open()).sum()
    }

    /// The keys whose stored totals are kept: every configured endpoint, and each application's
    /// row of the gateway's own answers.
    fn live_keys(&self) -> Vec<EndpointKey> {
        let maps = self.maps();
        let apps = maps.apps.keys().map(|app| EndpointKey {
            app: app.clone(),
            endpoint: GATEWAY_ENDPOINT.into(),
        });
        maps.endpoints.keys().cloned().chain(apps).collect()
    }

    /// After a reconfiguration: drop the stored totals of endpoints no longer configured.
    /// Returns false when the store failed (it is tried again next time).
    pub async fn forget_removed(&self, shared: &Shared) -> bool {
        if !self.reconfigured.swap(false, Ordering::AcqRel) {
            return true;
        }
        let live = self.live_keys();
        let done = tokio::time::timeout(WRITE_TIMEOUT, shared.store.retain_metric_totals(&live))
            .await
            .unwrap_or(Err(StoreError::Timeout));
        if let Err(e) = done {
            shared.report_failure(&e);
            self.reconfigured.store(true, Ordering::Release);
            return false;
        }
        true
    }

    /// Take every counter into rows of window `window_start_ms`.
    fn take(&self, window_start_ms: u64) -> Vec<MetricsRow> {
        let (endpoints, apps): (Vec<_>, Vec<_>) = {
            let maps = self.maps();
            (
                maps.endpoints
                    .iter()
                    .filter(|(_, m)| m.touched())
                    .map(|(k, m)| (k.clone(), m.clone()))
                    .collect(),
                maps.apps
                    .iter()
                    .map(|(app, m)| (app.clone(), m.clone()))
                    .collect(),
            )
        };
        let endpoints = endpoints.into_iter().map(|(key, m)| (key, m.take()));
        let apps = apps.into_iter().map(|(app, m)| {
            let key = EndpointKey {
                app,
                endpoint: GATEWAY_ENDPOINT.into(),
            };
            (key, m.take())
        });
        endpoints
            .chain(apps)
            .filter(|(_, counters)| !counters.is_empty())
            .map(|(key, counters)| MetricsRow {
                key,
                window_start_ms,
                counters,
            })
            .collect()
    }

    /// Write what a failed flush left first, then take every counter and write it, both as
    /// batches (see the module doc). Returns false when the store failed.
    pub async fn flush(&self, shared: &Shared, window_start_ms: u64) -> bool {
        let mut pending = self.pending.lock().await;
        if let Some(batch) = pending.as_ref() {
            if !write(shared, batch).await {
                return false;
            }
            *pending = None;
        }
        let rows = self.take(window_start_ms);
        if rows.is_empty() {
            return true;
        }
        // Kept as pending before the write: a flush whose future is dropped mid-write (a
        // scrape that timed out, a cut connection) leaves the batch to the next flush, which
        // writes it again under the same id, instead of losing it.
        let batch = pending.insert(Batch {
            id: self.next_batch.fetch_add(1, Ordering::Relaxed),
            rows,
        });
        let written = write(shared, batch).await;
        if written {
            *pending = None;
        }
        written
    }
}

async fn write(shared: &Shared, batch: &Batch) -> bool {
    let write = shared
        .store
        .record_metrics(&shared.instance, Some(batch.id), &batch.rows);
    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            shared.report_failure(&e);
            false
        }
        Err(_) => {
            shared.report_failure(&StoreError::Timeout);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;
    use crate::store::{MemoryStore, SharedStore};

    fn setup() -> (Arc<MemoryStore>, Shared, MetricsRegistry) {
        let store = Arc::new(MemoryStore::new());
        let shared = Shared::new(store.clone(), "i1", Duration::from_secs(60));
        (store, shared, MetricsRegistry::default())
    }

    #[tokio::test]
    async fn a_batch_whose_commit_was_not_acknowledged_counts_once() {
        let (store, shared, registry) = setup();
        let key = EndpointKey::new("chat", "ptu");
        let m = registry.resolve(&key);
        m.count(Outcome::Failed);
        m.gateway_answer(http::StatusCode::TOO_MANY_REQUESTS);
        // A write that committed, then timed out: the store has it, the registry kept it.
        let batch = Batch {
            id: 41,
            rows: registry.take(0),
        };
        assert_eq!(
            batch.rows.len(),
            2,
            "the endpoint's row and the application's"
        );
        store
            .record_metrics("i1", Some(41), &batch.rows)
            .await
            .unwrap();
        *registry.pending.lock().await = Some(batch);
        m.count(Outcome::Throttled);
        assert!(registry.flush(&shared, 0).await);
        assert!(registry.pending.lock().await.is_none());
        let totals = store.metric_totals().await.unwrap();
        let ep = &totals[1].1;
        assert_eq!((ep.calls, ep.failed, ep.throttled), (2, 1, 1));
        assert_eq!(totals[0].0, EndpointKey::new("chat", GATEWAY_ENDPOINT));
        assert_eq!(totals[0].1.gateway_429, 1);
    }

    #[tokio::test]
    async fn endpoints_that_leave_take_their_totals_along() {
        let (store, shared, registry) = setup();
        for ep in ["a", "b"] {
            registry
                .resolve(&EndpointKey::new("chat", ep))
                .count(Outcome::Failed);
        }
        registry
            .resolve(&EndpointKey::new("other", "c"))
            .gateway_answer(http::StatusCode::BAD_GATEWAY);
        assert!(registry.flush(&shared, 0).await);
        assert_eq!(
            store.metric_totals().await.unwrap().len(),
            3,
            "a, b and other's answers"
        );
        registry.retain(|app, ep| app == "chat" && ep == "b");
        assert!(registry.forget_removed(&shared).await);
        let kept: Vec<String> = store
            .metric_totals()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(kept, vec!["chat/b"]);
        assert_eq!(
            registry.maps().apps.len(),
            1,
            "'other' has no endpoint left"
        );
    }
}
