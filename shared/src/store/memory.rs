//! The in-memory [`SharedStore`]: the embedded default. Gateways in one process that share one
//! `MemoryStore` behave exactly like instances sharing a database.

use super::{
    Counters, EndpointKey, LEASE_VALID_MS, Lease, MetricsRow, SharedStore, StoreError, WINDOW_MS,
    grant, sum_per_window,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    circuits: HashMap<EndpointKey, u64>,
    leases: HashMap<EndpointKey, Vec<LeaseRow>>,
    next_lease: i64,
    metrics: BTreeMap<(EndpointKey, u64, String), Counters>,
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
        _instance: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
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

    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        now_ms: u64,
    ) -> Result<Lease, StoreError> {
        let mut inner = self.lock();
        inner.next_lease += 1;
        let id = inner.next_lease;
        let rows = inner.leases.entry(key.clone()).or_default();
        rows.retain(|l| l.expires_at_ms + WINDOW_MS > now_ms);
        let used: u64 = rows.iter().map(|l| u64::from(l.granted)).sum();
        let frees_at = rows
            .iter()
            .filter(|l| l.granted > 0)
            .map(|l| l.expires_at_ms + WINDOW_MS)
            .min();
        let (granted, retry_after_ms) = grant(limit, used, want, now_ms, frees_at);
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

    async fn add_metrics(&self, instance: &str, rows: &[MetricsRow]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for row in rows {
            inner
                .metrics
                .entry((row.key.clone(), row.window_start_ms, instance.to_owned()))
                .or_default()
                .add(&row.counters);
        }
        Ok(())
    }

    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError> {
        let inner = self.lock();
        Ok(sum_per_window(
            inner
                .metrics
                .iter()
                .filter(|((_, window, _), _)| *window >= since_ms)
                .map(|((key, window, _), counters)| (key.clone(), *window, *counters)),
        ))
    }

    async fn prune_metrics(&self, before_ms: u64) -> Result<(), StoreError> {
        self.lock()
            .metrics
            .retain(|(_, window, _), _| *window >= before_ms);
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
