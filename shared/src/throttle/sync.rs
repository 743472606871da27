//! Keeping instances in step through the shared store: publishing this instance's 429s,
//! pulling everyone else's, and tracking whether the store is reachable.
//!
//! 1. A 429 opens the local circuit at once and is queued for publication (never awaited on
//!    the request path).
//! 2. Every `sync_interval` (250 ms by default) the sync task publishes what is queued and pulls
//!    every open circuit, applying each to the local state: a 429 seen by one instance keeps the
//!    others off that endpoint within one interval plus a query.
//! 3. If the store fails, the instance keeps working on its local view (circuits it saw itself,
//!    local RPM windows), logs the outage once, and pings the store each interval. When the
//!    store answers again it logs the recovery and republishes every circuit it still has open,
//!    so nothing learned during the outage is lost.

use crate::store::{EndpointKey, SharedStore, StoreError};
use crate::throttle::{ThrottleRegistry, now_ms};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The shared store as the request path and background tasks see it.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn SharedStore>,
    /// This instance's name in the store.
    pub instance: Arc<str>,
    up: AtomicBool,
    pending: Mutex<Vec<(EndpointKey, u64)>>,
    returns: Mutex<Vec<(i64, u32)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn SharedStore>, instance: &str) -> Self {
        Self {
            store,
            instance: instance.into(),
            up: AtomicBool::new(true),
            pending: Mutex::default(),
            returns: Mutex::default(),
        }
    }

    /// Whether the store answered last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Queue a circuit opening for publication.
    pub fn publish_circuit(&self, key: EndpointKey, until_ms: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, until_ms));
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
        let answered = |r: Result<Result<(), StoreError>, tokio::time::error::Elapsed>| match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Timeout),
        };
        if !self.is_up() {
            if let Err(e) = answered(tokio::time::timeout(bound, self.store.ping()).await) {
                tracing::debug!(%e, "shared store still unavailable");
                return false;
            }
            if self.report_success() {
                for (key, until) in registry.open_circuits(now_ms()) {
                    self.publish_circuit(key, until);
                }
            }
        }
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        for (i, (key, until)) in pending.iter().enumerate() {
            let publish = self.store.open_circuit(key, *until, &self.instance);
            if let Err(e) = answered(tokio::time::timeout(bound, publish).await) {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&pending[i..]);
                self.report_failure(&e);
                return false;
            }
        }
        let returns = std::mem::take(&mut *self.returns.lock().unwrap_or_else(|p| p.into_inner()));
        for (lease, unused) in returns {
            // A return that fails only makes the budget stricter until the lease stops counting.
            let _ = tokio::time::timeout(bound, self.store.give_back(lease, unused)).await;
        }
        match tokio::time::timeout(bound, self.store.open_circuits(now_ms())).await {
            Ok(Ok(open)) => {
                for (key, until) in open {
                    if let Some(endpoint) = registry.get(&key) {
                        endpoint.circuit.open_until(until);
                    }
                }
                self.report_success();
                true
            }
            Ok(Err(e)) => {
                self.report_failure(&e);
                false
            }
            Err(_) => {
                self.report_failure(&StoreError::Timeout);
                false
            }
        }
    }
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
