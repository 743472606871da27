//! Per-endpoint throttle state: the 429 circuit, the RPM limit, and the counters routing
//! strategies read (requests in flight, last use).
//!
//! The state of an endpoint outlives configuration reloads: [`ThrottleRegistry`] hands out one
//! [`EndpointThrottle`] per (application, endpoint id) and gives the same one back when a new
//! configuration still names that endpoint. Lookups happen only when a configuration snapshot is
//! built; requests reach their endpoint's state through the snapshot without any lock.

mod circuit;
mod permits;
mod retry_after;
mod rpm;
pub mod sync;

pub use circuit::Circuit;
pub use permits::{Admit, LEASE_TIMEOUT, PermitPool};
pub use retry_after::parse_wait;
pub use rpm::RpmLimiter;
pub use sync::Shared;

use crate::store::EndpointKey;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Live state of one endpoint of one application.
#[derive(Debug)]
pub struct EndpointThrottle {
    pub key: EndpointKey,
    pub circuit: Circuit,
    /// The local limiter (a GCRA with Azure's 10 s burst): it counts this instance's own
    /// admissions, and admits alone (the whole limit, per instance) when the shared store is
    /// unreachable or slower than a lease attempt's bound.
    rpm: Option<RpmLimiter>,
    /// This instance's leased share of the global limit.
    permits: PermitPool,
    in_flight: AtomicU32,
    last_used_ms: AtomicU64,
}

impl EndpointThrottle {
    fn new(key: EndpointKey, rpm: Option<u32>) -> Self {
        Self {
            key,
            circuit: Circuit::default(),
            rpm: rpm.map(RpmLimiter::new),
            permits: PermitPool::default(),
            in_flight: AtomicU32::new(0),
            last_used_ms: AtomicU64::new(0),
        }
    }

    /// Admit one request under the RPM limit, global across instances through `shared` (always
    /// admitted without a limit): a permit of this instance's leased block
    /// ([`PermitPool`]: at most the limit per minute and a sixth of it per 10 s, all instances
    /// together), counted by the local limiter too; or, when the store cannot be asked in time,
    /// the local limiter's own decision. `Err` carries the milliseconds until a permit frees up.
    pub async fn admit(&self, shared: &Shared, now_ms: u64) -> Result<(), u64> {
        let Some(local) = &self.rpm else {
            return Ok(());
        };
        match self
            .permits
            .acquire(&self.key, local.limit(), shared, now_ms)
            .await
        {
            Admit::Yes => {
                local.record(now_ms);
                Ok(())
            }
            Admit::No(wait) => Err(wait),
            Admit::Unavailable => local.try_acquire(now_ms),
        }
    }

    /// The RPM limiter, when the endpoint has a limit.
    pub fn rpm(&self) -> Option<&RpmLimiter> {
        self.rpm.as_ref()
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// Mark the start of an attempt; the guard marks its end when dropped.
    pub fn begin(self: &Arc<Self>, now_ms: u64) -> InFlight {
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One attempt in flight on an endpoint (for LeastActiveConnections).
#[derive(Debug)]
pub struct InFlight(Arc<EndpointThrottle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The in-memory store of endpoint state, keyed by (application id, endpoint id).
#[derive(Debug, Default)]
pub struct ThrottleRegistry {
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointThrottle>>>,
}

impl ThrottleRegistry {
    /// The state of this endpoint, created on first use and kept across reloads. A changed RPM
    /// limit is applied to the existing state; adding or removing a limit starts a fresh limiter.
    pub fn resolve(
        &self,
        app: &Arc<str>,
        endpoint: &Arc<str>,
        rpm: Option<u32>,
    ) -> Arc<EndpointThrottle> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let key = EndpointKey {
            app: app.clone(),
            endpoint: endpoint.clone(),
        };
        if let Some(existing) = map.get(&key) {
            match (existing.rpm(), rpm) {
                (Some(limiter), Some(limit)) => {
                    limiter.set_limit(limit);
                    return existing.clone();
                }
                (None, None) => return existing.clone(),
                _ => {}
            }
        }
        let fresh = Arc::new(EndpointThrottle::new(key.clone(), rpm));
        if let Some(old) = map.get(&key) {
            fresh.circuit.open_until(old.circuit.until_ms());
        }
        map.insert(key, fresh.clone());
        fresh
    }

    /// Forget endpoints the current configuration no longer names.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|key, _| keep(&key.app, &key.endpoint));
    }

    /// The state of one endpoint, if the current configuration names it.
    pub fn get(&self, key: &EndpointKey) -> Option<Arc<EndpointThrottle>> {
        let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    }

    /// Every circuit open at `now_ms`: the moment it closes and when it was opened.
    pub fn open_circuits(&self, now_ms: u64) -> Vec<(EndpointKey, u64, u64)> {
        let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|t| t.circuit.wait_ms(now_ms).is_some())
            .map(|t| {
                (
                    t.key.clone(),
                    t.circuit.until_ms(),
                    t.circuit.opened_at_ms(),
                )
            })
            .collect()
    }
}

/// Wall-clock time in Unix milliseconds: the one clock throttle state is kept in, so that it can
/// be shared with other instances.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_resolution_and_limit_changes() {
        let reg = ThrottleRegistry::default();
        let (app, ep): (Arc<str>, Arc<str>) = ("app".into(), "ep0".into());
        let a = reg.resolve(&app, &ep, Some(10));
        a.circuit.open_until(u64::MAX / 2);
        let b = reg.resolve(&app, &ep, Some(20));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.rpm().unwrap().limit(), 20);
        let c = reg.resolve(&app, &ep, None);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(
            c.circuit.until_ms(),
            u64::MAX / 2,
            "an open circuit survives"
        );
    }

    #[test]
    fn in_flight_guard_counts() {
        let t = Arc::new(EndpointThrottle::new(EndpointKey::new("a", "e"), None));
        let g1 = t.begin(5);
        let g2 = t.begin(6);
        assert_eq!(t.in_flight(), 2);
        assert_eq!(t.last_used_ms(), 6);
        drop((g1, g2));
        assert_eq!(t.in_flight(), 0);
    }
}
