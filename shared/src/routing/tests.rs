use super::*;

fn views(n: usize) -> Vec<EndpointView> {
    vec![
        EndpointView {
            weight: 1,
            ..Default::default()
        };
        n
    ]
}

#[test]
fn priority_keeps_configured_order() {
    assert_eq!(order(Strategy::Priority, &views(3), 99), vec![0, 1, 2]);
}

#[test]
fn least_recently_used_tries_the_oldest_first() {
    let mut v = views(3);
    v[0].last_used_ms = 30;
    v[1].last_used_ms = 10;
    v[2].last_used_ms = 20;
    assert_eq!(order(Strategy::LeastRecentlyUsed, &v, 0), vec![1, 2, 0]);
    v[2].last_used_ms = 10;
    assert_eq!(
        order(Strategy::LeastRecentlyUsed, &v, 0),
        vec![1, 2, 0],
        "ties keep order"
    );
}

#[test]
fn least_active_connections_tries_the_idlest_first() {
    let mut v = views(3);
    v[0].in_flight = 4;
    v[1].in_flight = 2;
    v[2].in_flight = 2;
    assert_eq!(
        order(Strategy::LeastActiveConnections, &v, 0),
        vec![1, 2, 0]
    );
}

#[test]
fn weighted_random_draws_by_weight_then_fails_over_in_order() {
    let mut v = views(3);
    v[0].weight = 70;
    v[1].weight = 20;
    v[2].weight = 10;
    assert_eq!(order(Strategy::WeightedRandom, &v, 0), vec![0, 1, 2]);
    assert_eq!(order(Strategy::WeightedRandom, &v, 69), vec![0, 1, 2]);
    assert_eq!(order(Strategy::WeightedRandom, &v, 70), vec![1, 0, 2]);
    assert_eq!(order(Strategy::WeightedRandom, &v, 95), vec![2, 0, 1]);
    assert_eq!(order(Strategy::WeightedRandom, &v, 100 + 95), vec![2, 0, 1]);
    let hits = (0..10_000u64)
        .filter(|d| order(Strategy::WeightedRandom, &v, d.wrapping_mul(2_654_435_761))[0] == 1)
        .count();
    assert!(
        (1_700..2_300).contains(&hits),
        "about 20 % of draws pick index 1, got {hits}"
    );
}

#[test]
fn every_strategy_yields_every_endpoint_once() {
    for s in [
        Strategy::Priority,
        Strategy::LeastRecentlyUsed,
        Strategy::LeastActiveConnections,
        Strategy::WeightedRandom,
    ] {
        let mut o = order(s, &views(5), 3);
        o.sort_unstable();
        assert_eq!(o, vec![0, 1, 2, 3, 4], "{s:?}");
        assert!(order(s, &[], 3).is_empty());
    }
}

#[test]
fn retry_after_rounds_up_and_is_never_zero() {
    assert_eq!(retry_after_secs(0), 1);
    assert_eq!(retry_after_secs(1), 1);
    assert_eq!(retry_after_secs(1000), 1);
    assert_eq!(retry_after_secs(1001), 2);
    assert_eq!(retry_after_secs(9_500), 10);
}
