//! Choosing endpoints: pure functions of the request's application, the endpoints' observed
//! state and the clock. No I/O and no clock reads happen here, so every decision is unit-tested
//! without async; [`crate::forward`] does the calling and the failing over.

#[cfg(test)]
mod tests;

use crate::config::Strategy;

/// What routing needs to know about one endpoint at decision time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointView {
    pub weight: u32,
    pub in_flight: u32,
    pub last_used_ms: u64,
}

/// The order in which a request tries an application's endpoints.
///
/// Every strategy yields each endpoint exactly once, so failover can always reach every backend:
/// - **Priority**: 1. configured order, index 0 first.
/// - **LeastRecentlyUsed**: 1. endpoints sorted by their last use, oldest first; 2. ties keep
///   configured order. Spreads load like round robin, and recovers evenly after a skip.
/// - **LeastActiveConnections**: 1. endpoints sorted by attempts in flight, fewest first;
///   2. ties keep configured order.
/// - **WeightedRandom**: 1. draw one endpoint with probability weight / total weight, using
///   `draw` (a uniformly random number supplied by the caller); 2. then the others in configured
///   order, as failover.
pub fn order(strategy: Strategy, endpoints: &[EndpointView], draw: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..endpoints.len()).collect();
    match strategy {
        Strategy::Priority => {}
        Strategy::LeastRecentlyUsed => order.sort_by_key(|&i| endpoints[i].last_used_ms),
        Strategy::LeastActiveConnections => order.sort_by_key(|&i| endpoints[i].in_flight),
        Strategy::WeightedRandom => {
            let total: u64 = endpoints.iter().map(|e| u64::from(e.weight.max(1))).sum();
            if total > 0 {
                let mut ticket = draw % total;
                let first = endpoints
                    .iter()
                    .position(|e| {
                        let w = u64::from(e.weight.max(1));
                        if ticket < w {
                            true
                        } else {
                            ticket -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                order.remove(first);
                order.insert(0, first);
            }
        }
    }
    order
}

/// The `retry-after` to give a client when no endpoint could take its request: the shortest
/// remaining wait, rounded up to whole seconds, never 0.
pub fn retry_after_secs(shortest_wait_ms: u64) -> u64 {
    shortest_wait_ms.div_ceil(1000).max(1)
}
