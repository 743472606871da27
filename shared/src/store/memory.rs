//! The in-memory [`SharedStore`]: the embedded default. Gateways in one process that share one
//! `MemoryStore` behave exactly like instances sharing a database.

use super::memory_metrics::MetricTables;
use super::{
    Counted, Counters, EndpointKey, LEASE_VALID_MS, Lease, MetricsRow, SharedStore, StoreError,
    WINDOW_MS, grant,
};
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    metrics: Mutex<MetricTables>,
}

#[derive(Debug, Default)]
struct Inner {
    circuits: HashMap<EndpointKey, u64>,
    /// The moment of each endpoint's last closure.
    closures: HashMap<EndpointKey, u64>,
    leases: HashMap<EndpointKey, Vec<LeaseRow>>,
    next_lease: i64,
    configs: Vec<serde_json::Value>,
}

#[derive(Debug)]
struct LeaseRow {
    id: i64,
    expires_at_ms: u64,
    granted: u32,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn metrics_lock(&self) -> std::sync::MutexGuard<'_, MetricTables> {
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl SharedStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn open_circuit(
        &self,
        key: &EndpointKey,
        until_ms: u64,
        opened_at_ms: u64,
        _instance: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner
            .closures
            .get(key)
            .is_some_and(|closed| opened_at_ms <= *closed)
        {
            return Ok(());
        }
        let slot = inner.circuits.entry(key.clone()).or_default();
        *slot = (*slot).max(until_ms);
        Ok(())
    }

    async fn open_circuits(&self, now_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError> {
        let mut inner = self.lock();
        inner.circuits.retain(|_, until| *until > now_ms);
        Ok(inner
            .circuits
            .iter()
            .map(|(k, u)| (k.clone(), *u))
            .collect())
    }

    async fn close_circuit(
        &self,
        key: &EndpointKey,
        closed_at_ms: u64,
        _instance: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.circuits.remove(key);
        let slot = inner.closures.entry(key.clone()).or_default();
        *slot = (*slot).max(closed_at_ms);
        Ok(())
    }

    async fn closed_circuits(&self, since_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .closures
            .iter()
            .filter(|(_, at)| **at > since_ms)
            .map(|(k, at)| (k.clone(), *at))
            .collect())
    }

    /// Under the store's one lock, on the process's clock (or `at_ms`): drop leases that no
    /// longer count, apply [`grant`], record the lease.
    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        at_ms: Option<u64>,
    ) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        let now_ms = at_ms.unwrap_or_else(crate::throttle::now_ms);
        inner.next_lease += 1;
        let id = inner.next_lease;
        let rows = inner.leases.entry(key.clone()).or_default();
        rows.retain(|l| l.expires_at_ms + WINDOW_MS > now_ms);
        let counted = Counted::of(rows.iter().map(|l| (l.expires_at_ms, l.granted)), now_ms);
        let (granted, retry_after_ms) = grant(limit, &counted, want, now_ms);
        if granted == 0 {
            return Ok(Lease {
                id: 0,
                granted,
                retry_after_ms,
            });
        }
        rows.push(LeaseRow {
            id,
            expires_at_ms: now_ms + LEASE_VALID_MS,
            granted,
        });
        Ok(Lease {
            id,
            granted,
            retry_after_ms,
        })
    }

    async fn give_back(&self, id: i64, unused: u32) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(row) = inner.leases.values_mut().flatten().find(|l| l.id == id) {
            row.granted = row.granted.saturating_sub(unused);
        }
        Ok(())
    }

    async fn record_metrics(
        &self,
        instance: &str,
        batch: Option<u64>,
        rows: &[MetricsRow],
    ) -> Result<bool, StoreError> {
        Ok(self
            .metrics_lock()
            .record(instance, batch, rows, crate::throttle::now_ms()))
    }

    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError> {
        Ok(self.metrics_lock().windows(since_ms))
    }

    async fn metric_totals(&self) -> Result<Vec<(EndpointKey, Counters)>, StoreError> {
        Ok(self.metrics_lock().totals())
    }

    async fn retain_metric_totals(&self, live: &[EndpointKey]) -> Result<(), StoreError> {
        self.metrics_lock().retain_totals(live);
        Ok(())
    }

    async fn prune_metrics(&self, before_ms: u64) -> Result<(), StoreError> {
        self.metrics_lock().prune(before_ms);
        Ok(())
    }

    async fn save_config(
        &self,
        body: &serde_json::Value,
        _instance: &str,
    ) -> Result<i64, StoreError> {
        let mut inner = self.lock();
        inner.configs.push(body.clone());
        Ok(inner.configs.len() as i64)
    }

    async fn latest_config(&self) -> Result<Option<(i64, serde_json::Value)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .configs
            .last()
            .map(|c| (inner.configs.len() as i64, c.clone())))
    }

    async fn latest_config_version(&self) -> Result<Option<i64>, StoreError> {
        let inner = self.lock();
        Ok((!inner.configs.is_empty()).then_some(inner.configs.len() as i64))
    }
}
