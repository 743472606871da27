//! One suite, both stores: the in-memory store and PostgreSQL must behave the same.

use aigw_core::store::{
    Counters, EndpointKey, LEASE_VALID_MS, MemoryStore, MetricsRow, PostgresStore, SharedStore,
    WINDOW_MS,
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
    leases_never_grant_more_than_the_limit,
    concurrent_leases_never_overshoot,
    given_back_permits_can_be_leased_again,
    leases_stop_counting_after_the_window,
    metrics_are_summed_over_instances_and_pruned,
);

const T0: u64 = 1_800_000_000_000;

fn key(ep: &str) -> EndpointKey {
    EndpointKey::new("app", ep)
}

async fn circuits_keep_the_latest_moment_and_expire(store: Arc<dyn SharedStore>) {
    store.ping().await.unwrap();
    store
        .open_circuit(&key("a"), T0 + 5_000, "i1")
        .await
        .unwrap();
    store
        .open_circuit(&key("a"), T0 + 3_000, "i2")
        .await
        .unwrap();
    store
        .open_circuit(&key("b"), T0 + 1_000, "i2")
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

async fn leases_never_grant_more_than_the_limit(store: Arc<dyn SharedStore>) {
    let first = store.lease(&key("a"), 10, 4, T0).await.unwrap();
    let second = store.lease(&key("a"), 10, 4, T0 + 10).await.unwrap();
    let third = store.lease(&key("a"), 10, 4, T0 + 20).await.unwrap();
    assert_eq!((first.granted, second.granted, third.granted), (4, 4, 2));
    let none = store.lease(&key("a"), 10, 4, T0 + 30).await.unwrap();
    assert_eq!(none.granted, 0);
    // The first lease stops counting a window after it expires.
    assert_eq!(none.retry_after_ms, LEASE_VALID_MS + WINDOW_MS - 30);
    // Another endpoint has its own budget.
    assert_eq!(
        store
            .lease(&key("b"), 10, 4, T0 + 30)
            .await
            .unwrap()
            .granted,
        4
    );
}

async fn concurrent_leases_never_overshoot(store: Arc<dyn SharedStore>) {
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .lease(&key("hot"), 25, 1, T0 + i)
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
    let lease = store.lease(&key("a"), 5, 5, T0).await.unwrap();
    assert_eq!(lease.granted, 5);
    assert_eq!(
        store.lease(&key("a"), 5, 1, T0 + 1).await.unwrap().granted,
        0
    );
    store.give_back(lease.id, 3).await.unwrap();
    assert_eq!(
        store.lease(&key("a"), 5, 5, T0 + 2).await.unwrap().granted,
        3
    );
}

async fn leases_stop_counting_after_the_window(store: Arc<dyn SharedStore>) {
    assert_eq!(store.lease(&key("a"), 2, 2, T0).await.unwrap().granted, 2);
    let later = T0 + LEASE_VALID_MS + WINDOW_MS;
    assert_eq!(
        store
            .lease(&key("a"), 2, 2, later - 1)
            .await
            .unwrap()
            .granted,
        0
    );
    assert_eq!(
        store.lease(&key("a"), 2, 2, later).await.unwrap().granted,
        2
    );
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
