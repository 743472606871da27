//! Totals that only grow: a flush written twice counts once, Prometheus counters survive window
//! pruning (and are the fleet's on an instance without traffic), and an endpoint leaving the
//! configuration takes its totals along.

use super::*;
use aigw_core::Settings;
use aigw_core::store::{Counters, EndpointKey, MemoryStore, MetricsRow, SharedStore};
use std::sync::Arc;

fn row(ep: &str, window: u64, calls: u64) -> MetricsRow {
    MetricsRow {
        key: EndpointKey::new("chat", ep),
        window_start_ms: window,
        counters: Counters {
            calls,
            total_tokens: calls * 10,
            ..Counters::default()
        },
    }
}

async fn a_batch_counts_once(store: Arc<dyn SharedStore>) {
    let rows = [row("a", 60_000, 2), row("b", 60_000, 1)];
    assert!(store.record_metrics("i1", Some(7), &rows).await.unwrap());
    assert!(
        !store.record_metrics("i1", Some(7), &rows).await.unwrap(),
        "the same batch again adds nothing"
    );
    assert!(
        store
            .record_metrics("i2", Some(7), &rows[..1])
            .await
            .unwrap(),
        "batch ids are per instance"
    );
    let windows = store.metrics(0).await.unwrap();
    assert_eq!(windows, vec![row("a", 60_000, 4), row("b", 60_000, 1)]);
    let totals = store.metric_totals().await.unwrap();
    assert_eq!(
        totals,
        vec![
            (EndpointKey::new("chat", "a"), row("a", 0, 4).counters),
            (EndpointKey::new("chat", "b"), row("b", 0, 1).counters),
        ]
    );
    // Totals outlive the windows, and go with the endpoint.
    store.prune_metrics(120_000).await.unwrap();
    assert_eq!(store.metrics(0).await.unwrap(), vec![]);
    assert_eq!(store.metric_totals().await.unwrap().len(), 2);
    store
        .retain_metric_totals(&[EndpointKey::new("chat", "b")])
        .await
        .unwrap();
    assert_eq!(
        store.metric_totals().await.unwrap(),
        vec![(EndpointKey::new("chat", "b"), row("b", 0, 1).counters)]
    );
}

#[tokio::test]
async fn a_batch_written_twice_counts_once_in_memory() {
    a_batch_counts_once(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_batch_written_twice_counts_once_in_postgres() {
    a_batch_counts_once(postgres_store(&test_database().await).await).await;
}

#[tokio::test]
async fn prometheus_counters_never_go_down_when_windows_are_pruned() {
    let url = test_database().await;
    let a = simulator("a", Behaviour::default()).await;
    let config = app_config("chat", &[("ptu", &a.url(), None)]);
    let short = Settings {
        metrics_interval: Duration::from_millis(500),
        metrics_history: 1,
        metrics_flush: Duration::from_millis(100),
        ..Settings::default()
    };
    let traffic = TestGateway::instance(&config, &url, "i1", short.clone()).await;
    let admin = TestGateway::instance(&config, &url, "admin", short).await;
    for _ in 0..3 {
        post_chat(&traffic, "chat", "hi", false).await;
    }
    let success = series(
        "aigw_requests_total",
        r#"app="chat",endpoint="ptu",outcome="success""#,
    );
    let tokens = series(
        "aigw_tokens_total",
        r#"app="chat",endpoint="ptu",kind="total",source="usage""#,
    );
    let before = prometheus(&traffic).await;
    assert_eq!(before[&success], 3.0);
    assert!(before[&tokens] > 0.0);
    // The windows holding those calls are pruned...
    let store = postgres_store(&url).await;
    let pruned = eventually(Duration::from_secs(10), || async {
        store.metrics(0).await.unwrap().is_empty()
    })
    .await;
    assert!(pruned, "{:?}", store.metrics(0).await.unwrap());
    assert_eq!(
        endpoint(&metrics(&traffic).await, "ptu")["totalApiCalls"],
        0
    );
    // ...and the counters stay, on the instance that carried the traffic and on one that
    // carried none.
    for gw in [&traffic, &admin] {
        let after = prometheus(gw).await;
        assert_eq!(after[&success], 3.0);
        assert_eq!(after[&tokens], before[&tokens]);
        assert_eq!(
            after[&series(
                "aigw_request_duration_ms_count",
                r#"app="chat",endpoint="ptu""#
            )],
            3.0
        );
    }
}

#[tokio::test]
async fn an_endpoint_leaving_the_configuration_takes_its_totals_along() {
    let url = test_database().await;
    let a = simulator("a", Behaviour::default()).await;
    let both = app_config("chat", &[("ptu", &a.url(), None), ("payg", &a.url(), None)]);
    let quick = Settings {
        metrics_flush: Duration::from_millis(100),
        ..Settings::default()
    };
    let gw = TestGateway::instance(&both, &url, "i1", quick).await;
    for _ in 0..4 {
        post_chat(&gw, "chat", "hi", false).await;
    }
    assert!(gw.gateway.flush_metrics().await);
    let store = postgres_store(&url).await;
    let keys = |totals: Vec<(EndpointKey, Counters)>| -> Vec<String> {
        totals.into_iter().map(|(k, _)| k.to_string()).collect()
    };
    assert_eq!(keys(store.metric_totals().await.unwrap()), vec!["chat/ptu"]);
    let env: [(&str, &str); 0] = [];
    let only_payg = app_config("chat", &[("payg", &a.url(), None)]);
    gw.gateway
        .reload(aigw_core::config::validate(only_payg, &env).unwrap())
        .unwrap();
    let gone = eventually(Duration::from_secs(10), || async {
        store.metric_totals().await.unwrap().is_empty()
    })
    .await;
    assert!(gone, "{:?}", keys(store.metric_totals().await.unwrap()));
    post_chat(&gw, "chat", "hi", false).await;
    let p = prometheus(&gw).await;
    assert_eq!(
        p[&series(
            "aigw_requests_total",
            r#"app="chat",endpoint="payg",outcome="success""#
        )],
        1.0
    );
    assert!(!p.keys().any(|k| k.contains("endpoint=\"ptu\"")));
}
