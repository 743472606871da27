//! The [`super::MemoryStore`]'s metric tables: window rows and totals per instance, and the batch
//! ids already recorded, behaving as the PostgreSQL tables do.

use super::{
    BATCH_IDS_KEPT_MS, Counters, EndpointKey, MetricsRow, sum_per_endpoint, sum_per_window,
};
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Default)]
pub(super) struct MetricTables {
    /// (endpoint, window start, instance) → counters.
    windows: BTreeMap<(EndpointKey, u64, String), Counters>,
    /// (endpoint, instance) → counters since the endpoint entered the configuration.
    totals: BTreeMap<(EndpointKey, String), Counters>,
    /// (instance, batch id) → when it was recorded.
    batches: HashMap<(String, u64), u64>,
}

impl MetricTables {
    pub(super) fn record(
        &mut self,
        instance: &str,
        batch: Option<u64>,
        rows: &[MetricsRow],
        now_ms: u64,
    ) -> bool {
        if let Some(id) = batch {
            let key = (instance.to_owned(), id);
            if self.batches.contains_key(&key) {
                return false;
            }
            self.batches.insert(key, now_ms);
        }
        for row in rows {
            self.windows
                .entry((row.key.clone(), row.window_start_ms, instance.to_owned()))
                .or_default()
                .add(&row.counters);
            self.totals
                .entry((row.key.clone(), instance.to_owned()))
                .or_default()
                .add(&row.counters);
        }
        true
    }

    pub(super) fn windows(&self, since_ms: u64) -> Vec<MetricsRow> {
        sum_per_window(
            self.windows
                .iter()
                .filter(|((_, window, _), _)| *window >= since_ms)
                .map(|((key, window, _), counters)| (key.clone(), *window, *counters)),
        )
    }

    pub(super) fn totals(&self) -> Vec<(EndpointKey, Counters)> {
        sum_per_endpoint(
            self.totals
                .iter()
                .map(|((key, _), counters)| (key.clone(), *counters)),
        )
    }

    pub(super) fn retain_totals(&mut self, live: &[EndpointKey]) {
        let live: HashSet<&EndpointKey> = live.iter().collect();
        self.totals.retain(|(key, _), _| live.contains(key));
    }

    pub(super) fn prune(&mut self, before_ms: u64) {
        self.windows
            .retain(|(_, window, _), _| *window >= before_ms);
        let batches_before = before_ms.saturating_sub(BATCH_IDS_KEPT_MS);
        self.batches.retain(|_, at| *at >= batches_before);
    }
}
