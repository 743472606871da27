//! Requests-per-minute and tokens-per-minute budgets, like Azure's quotas.
//!
//! Azure OpenAI rejects traffic over a deployment's RPM/TPM quota with a 429
//! that says when to come back; the gateway's load balancing has to cope. The
//! simulator uses fixed 60 s windows counted from the moment the behaviour was
//! set. A window's index and its usage share one `AtomicU64`, so admitting a
//! request is a single lock-free compare-and-swap loop, and a new window
//! starts with a fresh count without any reset step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Length of a budget window.
pub(crate) const WINDOW_MS: u64 = 60_000;

/// A point in budget time: which window, and how long until it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub index: u32,
    pub ms_left: u64,
}

impl Slot {
    /// The window `now` falls in, for windows counted from `epoch`.
    pub fn at(epoch: Instant, now: Instant) -> Self {
        let elapsed =
            u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX);
        Self {
            index: u32::try_from(elapsed / WINDOW_MS).unwrap_or(u32::MAX),
            ms_left: WINDOW_MS - elapsed % WINDOW_MS,
        }
    }
}

/// Usage of one budget within the current window.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// High 32 bits: window index; low 32 bits: units used in that window.
    packed: AtomicU64,
}

fn unpack(packed: u64) -> (u32, u32) {
    ((packed >> 32) as u32, packed as u32)
}

fn pack(index: u32, used: u32) -> u64 {
    (u64::from(index) << 32) | u64::from(used)
}

impl Window {
    /// Takes `cost` units out of a `limit`, or refuses. A request bigger than
    /// the whole limit still passes in an empty window, so it is not refused
    /// forever; a limit of zero refuses everything.
    pub fn try_take(&self, slot: Slot, cost: u32, limit: u32) -> bool {
        self.packed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |packed| {
                let (index, used) = unpack(packed);
                let used = if index == slot.index { used } else { 0 };
                let fits = u64::from(used) + u64::from(cost) <= u64::from(limit);
                (fits || (used == 0 && limit > 0))
                    .then(|| pack(slot.index, used.saturating_add(cost)))
            })
            .is_ok()
    }

    /// Units left in the window at `slot`.
    pub fn remaining(&self, slot: Slot, limit: u32) -> u32 {
        let (index, used) = unpack(self.packed.load(Ordering::Acquire));
        if index == slot.index {
            limit.saturating_sub(used)
        } else {
            limit
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn slot(index: u32) -> Slot {
        Slot { index, ms_left: 1 }
    }

    #[test]
    fn slots_count_from_the_epoch() {
        let epoch = Instant::now();
        assert_eq!(
            Slot::at(epoch, epoch),
            Slot {
                index: 0,
                ms_left: WINDOW_MS
            }
        );
        let later = epoch + Duration::from_millis(WINDOW_MS * 2 + 1500);
        assert_eq!(
            Slot::at(epoch, later),
            Slot {
                index: 2,
                ms_left: WINDOW_MS - 1500
            }
        );
        // A clock reading before the epoch is treated as the epoch.
        assert_eq!(Slot::at(later, epoch).index, 0);
    }

    #[test]
    fn refuses_once_the_limit_is_spent_and_refills_next_window() {
        let w = Window::default();
        assert!(w.try_take(slot(0), 1, 2));
        assert!(w.try_take(slot(0), 1, 2));
        assert!(!w.try_take(slot(0), 1, 2));
        assert_eq!(w.remaining(slot(0), 2), 0);
        assert_eq!(w.remaining(slot(1), 2), 2);
        assert!(w.try_take(slot(1), 1, 2));
        assert_eq!(w.remaining(slot(1), 2), 1);
    }

    #[test]
    fn oversized_cost_passes_only_into_an_empty_window() {
        let w = Window::default();
        assert!(w.try_take(slot(0), 500, 100));
        assert!(!w.try_take(slot(0), 1, 100));
        assert!(!Window::default().try_take(slot(0), 1, 0));
    }

    #[test]
    fn concurrent_takers_never_exceed_the_limit() {
        let w = std::sync::Arc::new(Window::default());
        let granted = std::sync::Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (w, granted) = (w.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if w.try_take(slot(0), 1, 1500) {
                            granted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::Relaxed), 1500);
    }
}
