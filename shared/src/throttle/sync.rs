//! Keeping instances in step through the shared store: publishing this instance's 429s,
//! pulling everyone else's, and tracking whether the store is reachable.
//!
//! 1. A 429 opens the local circuit at once and is queued for publication (never awaited on
//!    the request path). The queue holds one opening per endpoint, the latest deadline, so it
//!    stays bounded by the number of endpoints through any outage.
//! 2. Every `sync_interval` (250 ms by default) the sync task publishes what is queued and pulls
//!    every open circuit, applying each to the local state: a 429 seen by one instance keeps the
//!    others off that endpoint within one interval plus a query.
//! 3. Operators' closures travel the same way: a closure is published (queued when the store
//!    is down) and every instance pulls the closures made since it last looked, closing its own
//!    circuit unless a 429 it saw after the closure opened it again. The store ignores openings
//!    seen before an endpoint's last closure, so a late publication cannot undo one.
//! 4. A circuit never opens for longer than the maximum wait (`API_GATEWAY_MAX_RETRY_AFTER_SECS`),
//!    whoever published it.
//! 5. If the store fails, the instance keeps working on its local view (circuits it saw itself,
//!    local RPM windows), logs the outage once, and pings the store each interval. When the
//!    store answers again it logs the recovery and republishes every circuit it still has open,
//!    so nothing learned during the outage is lost.

use crate::store::{EndpointKey, SharedStore, StoreError};
use crate::throttle::{ThrottleRegistry, now_ms};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The shared store as the request path and background tasks see it.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn SharedStore>,
    /// This instance's name in the store.
    pub instance: Arc<str>,
    /// The longest a circuit may stay open from now, in milliseconds.
    pub max_wait_ms: u64,
    up: AtomicBool,
    /// Openings to publish, one per endpoint (the latest deadline; when it was seen): at most
    /// as many entries as endpoints, however long the store is down and however many 429s come.
    pending: Mutex<HashMap<EndpointKey, Opening>>,
    /// Closures to publish: (endpoint, closed at).
    closures: Mutex<Vec<(EndpointKey, u64)>>,
    /// Closures made up to this moment have been applied here.
    closures_seen_ms: AtomicU64,
    /// The newest closure applied here, per endpoint.
    closures_applied: Mutex<HashMap<EndpointKey, u64>>,
    returns: Mutex<Vec<(i64, u32)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn SharedStore>, instance: &str, max_wait: Duration) -> Self {
        Self {
            store,
            instance: instance.into(),
            max_wait_ms: u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
            up: AtomicBool::new(true),
            pending: Mutex::default(),
            closures: Mutex::default(),
            // Closures made before this instance started were applied to the circuits it pulls.
            closures_seen_ms: AtomicU64::new(now_ms()),
            closures_applied: Mutex::default(),
            returns: Mutex::default(),
        }
    }

    /// Whether the store answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Queue a circuit opening (a 429 seen at `seen_ms`) for publication, coalesced with any
    /// opening of the same endpoint still queued.
    pub fn publish_circuit(&self, key: EndpointKey, until_ms: u64, seen_ms: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending
            .entry(key)
            .or_default()
            .merge(Opening { until_ms, seen_ms });
    }

    /// How many openings wait for publication (one per endpoint at most).
    pub fn queued_openings(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Publish an operator's closure of `key`'s circuit made at `closed_at_ms` now (bounded);
    /// if the store does not take it, it is queued for the sync task. Returns whether it was
    /// published.
    pub async fn close_circuit(&self, key: EndpointKey, closed_at_ms: u64) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, opening| !(*k == key && opening.seen_ms <= closed_at_ms));
        // Queued first, taken back once published: a caller that goes away mid-publish leaves
        // the closure to the sync task instead of losing it.
        self.closures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.clone(), closed_at_ms));
        let publish = self.store.close_circuit(&key, closed_at_ms, &self.instance);
        match tokio::time::timeout(Duration::from_secs(2), publish).await {
            Ok(Ok(())) => {
                self.closures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(k, at)| !(*k == key && *at == closed_at_ms));
                true
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => StoreError::Timeout,
                };
                self.report_failure(&error);
                false
            }
        }
    }

    /// Queue unused permits to give back.
    pub fn give_back(&self, lease: i64, unused: u32) {
        self.returns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((lease, unused));
    }

    /// Record a failed store operation; the first failure after a success is logged.
    pub fn report_failure(&self, error: &StoreError) {
        if self.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(store = self.store.kind(), %error, "shared store unavailable: running on this instance's local view");
        }
    }

    /// Record a successful store operation; returns true when this ends an outage.
    fn report_success(&self) -> bool {
        let recovered = !self.up.swap(true, Ordering::AcqRel);
        if recovered {
            tracing::info!(
                store = self.store.kind(),
                "shared store reachable again: reconciling"
            );
        }
        recovered
    }

    /// One round of step 2 (and 3): publish, pull, apply. Returns whether the store answered.
    pub async fn sync_once(&self, registry: &ThrottleRegistry) -> bool {
        let bound = Duration::from_secs(2);
        if !self.is_up() {
            if let Err(e) = answered_with(tokio::time::timeout(bound, self.store.ping()).await) {
                tracing::debug!(%e, "shared store still unavailable");
                return false;
            }
            if self.report_success() {
                for (key, until, seen) in registry.open_circuits(now_ms()) {
                    self.publish_circuit(key, until, seen);
                }
            }
        }
        let closures =
            std::mem::take(&mut *self.closures.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, (key, at)) in closures.iter().enumerate() {
            let publish = self.store.close_circuit(key, *at, &self.instance);
            if let Err(e) = answered_with(tokio::time::timeout(bound, publish).await) {
                self.closures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&closures[i..]);
                self.report_failure(&e);
                return false;
            }
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut unpublished = pending.into_iter();
        while let Some((key, opening)) = unpublished.next() {
            let publish =
                self.store
                    .open_circuit(&key, opening.until_ms, opening.seen_ms, &self.instance);
            if let Err(e) = answered_with(tokio::time::timeout(bound, publish).await) {
                let mut queue = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                for (key, opening) in std::iter::once((key, opening)).chain(unpublished) {
                    queue.entry(key).or_default().merge(opening);
                }
                self.report_failure(&e);
                return false;
            }
        }
        let returns = std::mem::take(&mut *self.returns.lock().unwrap_or_else(|p| p.into_inner()));
        for (lease, unused) in returns {
            // A return that fails only makes the budget stricter until the lease stops counting.
            let _ = tokio::time::timeout(bound, self.store.give_back(lease, unused)).await;
        }
        let now = now_ms();
        let open =
            match answered_with(tokio::time::timeout(bound, self.store.open_circuits(now)).await) {
                Ok(open) => open,
                Err(e) => {
                    self.report_failure(&e);
                    return false;
                }
            };
        let cap = now.saturating_add(self.max_wait_ms);
        for (key, until) in open {
            if let Some(endpoint) = registry.get(&key) {
                endpoint.circuit.open_until(until.min(cap));
            }
        }
        // Closures are stamped by each closer's clock before their write lands, so a closure
        // stamped a little earlier than one already seen can still arrive: look back a margin.
        // Applying a closure twice changes nothing.
        let since = self
            .closures_seen_ms
            .load(Ordering::Acquire)
            .saturating_sub(CLOSURE_OVERLAP_MS);
        let closed = match answered_with(
            tokio::time::timeout(bound, self.store.closed_circuits(since)).await,
        ) {
            Ok(closed) => closed,
            Err(e) => {
                self.report_failure(&e);
                return false;
            }
        };
        let mut applied = self
            .closures_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (key, at) in closed {
            // Each closure once: the look-back returns it again for a while, and by then a
            // fresh 429 may have reopened the circuit.
            let last = applied.entry(key.clone()).or_default();
            if at <= *last {
                continue;
            }
            *last = at;
            if let Some(endpoint) = registry.get(&key) {
                endpoint.circuit.close_if_opened_by(at);
            }
            self.closures_seen_ms.fetch_max(at, Ordering::AcqRel);
        }
        drop(applied);
        self.report_success();
        true
    }
}

/// How far back each pull of closures looks past the newest one already applied.
const CLOSURE_OVERLAP_MS: u64 = 30_000;

/// A circuit opening waiting for publication.
#[derive(Debug, Default, Clone, Copy)]
struct Opening {
    until_ms: u64,
    /// When the (latest) 429 was seen.
    seen_ms: u64,
}

impl Opening {
    /// Keep the later deadline (and when it was seen).
    fn merge(&mut self, other: Opening) {
        if other.until_ms >= self.until_ms {
            *self = other;
        }
    }
}

/// A bounded store call's value, with a time-out as [`StoreError::Timeout`].
fn answered_with<T>(
    r: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    r.unwrap_or(Err(StoreError::Timeout))
}

/// The sync task: [`Shared::sync_once`] every `interval` until `stop` turns true.
pub async fn run(
    shared: Arc<Shared>,
    registry: Arc<ThrottleRegistry>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                shared.sync_once(&registry).await;
            }
            () = stopped(&mut stop) => break,
        }
    }
    // Last chance to tell the others about circuits this instance opened.
    shared.sync_once(&registry).await;
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}
