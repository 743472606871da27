//! One suite, both stores: the in-memory store and PostgreSQL must behave the same.

use aigw_core::store::{
    BURST_WINDOW_MS, Counters, EndpointKey, LEASE_VALID_MS, MemoryStore, MetricsRow, PostgresStore,
    SharedStore, WINDOW_MS,
};
use aigw_tests::test_database;
use std::sync::Arc;

async fn memory() -> Arc<dyn SharedStore> {
    Arc::new(MemoryStore::new())
}

async fn postgres() -> Arc<dyn SharedStore> {
    let store = PostgresStore::connect_lazy(&test_database().await).unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.expect("migrations are idempotent");
    Arc::new(store)
}

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod on_memory {
            $(#[tokio::test] async fn $test() { super::$test(super::memory().await).await })*
        }
        mod on_postgres {
            $(#[tokio::test] async fn $test() { super::$test(super::postgres().await).await })*
        }
    };
}

suite!(
    circuits_keep_the_latest_moment_and_expire,
    closed_circuits_stay_closed_against_older_openings,
    leases_never_grant_more_than_the_ten_second_share,
    leases_never_grant_more_than_the_limit_per_minute,
    concurrent_leases_never_overshoot,
    given_back_permits_can_be_leased_again,
    leases_stop_counting_after_the_window,
    leases_run_on_the_stores_own_clock_by_default,
    metrics_are_summed_over_instances_and_pruned,
);

const T0: u64 = 1_800_000_000_000;

fn key(ep: &str) -> EndpointKey {
    EndpointKey::new("app", ep)
}

async fn circuits_keep_the_latest_moment_and_expire(store: Arc<dyn SharedStore>) {
    store.ping().await.unwrap();
    store
        .open_circuit(&key("a"), T0 + 5_000, T0, "i1")
        .await
        .unwrap();
    store
        .open_circuit(&key("a"), T0 + 3_000, T0, "i2")
        .await
        .unwrap();
    store
        .open_circuit(&key("b"), T0 + 1_000, T0, "i2")
        .await
        .unwrap();
    let mut open = store.open_circuits(T0).await.unwrap();
    open.sort();
    assert_eq!(open, vec![(key("a"), T0 + 5_000), (key("b"), T0 + 1_000)]);
    assert_eq!(
        store.open_circuits(T0 + 2_000).await.unwrap(),
        vec![(key("a"), T0 + 5_000)]
    );
    assert!(store.open_circuits(T0 + 5_000).await.unwrap().is_empty());
}

async fn closed_circuits_stay_closed_against_older_openings(store: Arc<dyn SharedStore>) {
    store.ping().await.unwrap();
    store
        .open_circuit(&key("a"), T0 + 60_000, T0, "i1")
        .await
        .unwrap();
    store.close_circuit(&key("a"), T0 + 10, "op").await.unwrap();
    assert!(store.open_circuits(T0 + 20).await.unwrap().is_empty());
    assert_eq!(
        store.closed_circuits(T0).await.unwrap(),
        vec![(key("a"), T0 + 10)]
    );
    assert!(store.closed_circuits(T0 + 10).await.unwrap().is_empty());
    // A 429 seen before the closure, published late, does not reopen it...
    store
        .open_circuit(&key("a"), T0 + 60_000, T0 + 5, "i2")
        .await
        .unwrap();
    assert!(store.open_circuits(T0 + 20).await.unwrap().is_empty());
    // ...one seen after it does.
    store
        .open_circuit(&key("a"), T0 + 30_000, T0 + 15, "i2")
        .await
        .unwrap();
    assert_eq!(
        store.open_circuits(T0 + 20).await.unwrap(),
        vec![(key("a"), T0 + 30_000)]
    );
    // Closing an endpoint that never opened is recorded too.
    store.close_circuit(&key("b"), T0 + 40, "op").await.unwrap();
    let mut closed = store.closed_circuits(T0 + 20).await.unwrap();
    closed.sort();
    assert_eq!(closed, vec![(key("b"), T0 + 40)]);
}

async fn leases_never_grant_more_than_the_ten_second_share(store: Arc<dyn SharedStore>) {
    // 60 rpm: at most 10 per 10 s.
    let at = |ms| Some(T0 + ms);
    let first = store.lease(&key("a"), 60, 4, at(0)).await.unwrap();
    let second = store.lease(&key("a"), 60, 4, at(10)).await.unwrap();
    let third = store.lease(&key("a"), 60, 4, at(20)).await.unwrap();
    assert_eq!((first.granted, second.granted, third.granted), (4, 4, 2));
    let none = store.lease(&key("a"), 60, 4, at(30)).await.unwrap();
    assert_eq!(none.granted, 0);
    // The first lease stops counting in the 10 s window 10 s after it expires...
    assert_eq!(none.retry_after_ms, LEASE_VALID_MS + BURST_WINDOW_MS - 30);
    let freed = LEASE_VALID_MS + BURST_WINDOW_MS;
    assert_eq!(
        store
            .lease(&key("a"), 60, 4, at(freed - 1))
            .await
            .unwrap()
            .granted,
        0
    );
    // ...and its 4 permits can be leased again.
    assert_eq!(
        store
            .lease(&key("a"), 60, 9, at(freed))
            .await
            .unwrap()
            .granted,
        4
    );
    // Another endpoint has its own budget.
    assert_eq!(
        store.lease(&key("b"), 60, 4, at(30)).await.unwrap().granted,
        4
    );
}

async fn leases_never_grant_more_than_the_limit_per_minute(store: Arc<dyn SharedStore>) {
    // 2 rpm: one per 10 s (at least one), two per minute.
    let at = |ms| Some(T0 + ms);
    assert_eq!(
        store.lease(&key("a"), 2, 2, at(0)).await.unwrap().granted,
        1
    );
    let gap = LEASE_VALID_MS + BURST_WINDOW_MS;
    assert_eq!(
        store.lease(&key("a"), 2, 2, at(gap)).await.unwrap().granted,
        1
    );
    // The 10 s window is free again, the minute is not: wait until the first lease stops
    // counting, a minute after it expired.
    let none = store.lease(&key("a"), 2, 2, at(2 * gap)).await.unwrap();
    assert_eq!(none.granted, 0);
    assert_eq!(none.retry_after_ms, LEASE_VALID_MS + WINDOW_MS - 2 * gap);
}

async fn concurrent_leases_never_overshoot(store: Arc<dyn SharedStore>) {
    // 150 rpm: 25 per 10 s.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .lease(&key("hot"), 150, 1, Some(T0 + i))
                    .await
                    .unwrap()
                    .granted
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert_eq!(granted, 25);
}

async fn given_back_permits_can_be_leased_again(store: Arc<dyn SharedStore>) {
    // 30 rpm: 5 per 10 s.
    let lease = store.lease(&key("a"), 30, 5, Some(T0)).await.unwrap();
    assert_eq!(lease.granted, 5);
    assert_eq!(
        store
            .lease(&key("a"), 30, 1, Some(T0 + 1))
            .await
            .unwrap()
            .granted,
        0
    );
    store.give_back(lease.id, 3).await.unwrap();
    assert_eq!(
        store
            .lease(&key("a"), 30, 5, Some(T0 + 2))
            .await
            .unwrap()
            .granted,
        3
    );
}

async fn leases_stop_counting_after_the_window(store: Arc<dyn SharedStore>) {
    let at = |ms| Some(T0 + ms);
    assert_eq!(
        store.lease(&key("a"), 2, 1, at(0)).await.unwrap().granted,
        1
    );
    let gap = LEASE_VALID_MS + BURST_WINDOW_MS;
    assert_eq!(
        store.lease(&key("a"), 2, 1, at(gap)).await.unwrap().granted,
        1
    );
    let later = LEASE_VALID_MS + WINDOW_MS;
    assert_eq!(
        store
            .lease(&key("a"), 2, 1, at(later - 1))
            .await
            .unwrap()
            .granted,
        0
    );
    assert_eq!(
        store
            .lease(&key("a"), 2, 1, at(later))
            .await
            .unwrap()
            .granted,
        1
    );
}

/// Without a given moment the store counts on its own clock (the database's `now`): one clock
/// for every instance.
async fn leases_run_on_the_stores_own_clock_by_default(store: Arc<dyn SharedStore>) {
    // 6 rpm: one per 10 s.
    let first = store.lease(&key("a"), 6, 1, None).await.unwrap();
    assert_eq!(first.granted, 1);
    let none = store.lease(&key("a"), 6, 1, None).await.unwrap();
    assert_eq!(none.granted, 0);
    assert!(
        (1..=LEASE_VALID_MS + BURST_WINDOW_MS).contains(&none.retry_after_ms),
        "{}",
        none.retry_after_ms
    );
    store.give_back(first.id, 1).await.unwrap();
    assert_eq!(store.lease(&key("a"), 6, 1, None).await.unwrap().granted, 1);
}

async fn metrics_are_summed_over_instances_and_pruned(store: Arc<dyn SharedStore>) {
    let c = |calls, tokens| Counters {
        calls,
        total_tokens: tokens,
        latency_ms_sum: calls * 10,
        latency_count: calls,
        ..Default::default()
    };
    let row = |ep: &str, window, counters| MetricsRow {
        key: key(ep),
        window_start_ms: window,
        counters,
    };
    store
        .add_metrics("i1", &[row("a", T0, c(2, 100)), row("b", T0, c(1, 5))])
        .await
        .unwrap();
    store
        .add_metrics("i2", &[row("a", T0, c(3, 50))])
        .await
        .unwrap();
    store
        .add_metrics(
            "i1",
            &[row("a", T0, c(1, 1)), row("a", T0 + 60_000, c(4, 40))],
        )
        .await
        .unwrap();
    let rows = store.metrics(T0).await.unwrap();
    assert_eq!(
        rows,
        vec![
            row("a", T0, c(6, 151)),
            row("a", T0 + 60_000, c(4, 40)),
            row("b", T0, c(1, 5))
        ]
    );
    assert_eq!(
        store.metrics(T0 + 1).await.unwrap(),
        vec![row("a", T0 + 60_000, c(4, 40))]
    );
    store.prune_metrics(T0 + 60_000).await.unwrap();
    assert_eq!(
        store.metrics(0).await.unwrap(),
        vec![row("a", T0 + 60_000, c(4, 40))]
    );
}
