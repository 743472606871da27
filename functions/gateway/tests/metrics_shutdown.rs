//! The `gateway` binary's last metrics flush at shutdown: a stream still running when the grace
//! period ends is cut off, counted (as cancelled, its prompt tokens estimated), and in the
//! database once the process has exited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_tests::process::Process;
use aigw_tests::{Behaviour, app_config, chat_body, simulator, test_database};
use sqlx::Connection;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gateway");

#[tokio::test]
async fn a_stream_cut_off_at_the_end_of_the_grace_period_is_counted_before_the_last_flush() {
    let url = test_database().await;
    let slow = Behaviour {
        chunks: 100,
        chunk_interval_ms: 5_000,
        ..Behaviour::default()
    };
    let sim = simulator("s", slow).await;
    let config = app_config("chat", &[("ptu", &sim.url(), None)]);
    let mut gw = Process::start(
        BIN,
        &config,
        &[
            ("DATABASE_URL", url.as_str()),
            ("API_GATEWAY_SHUTDOWN_GRACE_SECS", "1"),
        ],
    )
    .await;
    let mut stream = reqwest::Client::new()
        .post(gw.url("/lb/chat"))
        .json(&chat_body("a prompt whose tokens are counted", true))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the stream began");

    gw.terminate();
    let status = gw
        .exited_within(Duration::from_secs(20))
        .await
        .expect("the process exits after its grace period");
    assert!(status.success(), "{status}: {}", gw.log());
    drop(stream);

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    for table in ["gw_metrics", "gw_metric_totals"] {
        let (calls, cancelled, failed, prompt): (i64, i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT COALESCE(SUM(calls), 0)::BIGINT, COALESCE(SUM(cancelled), 0)::BIGINT,
                        COALESCE(SUM(failed), 0)::BIGINT,
                        COALESCE(SUM(estimated_prompt_tokens), 0)::BIGINT
                 FROM {table} WHERE endpoint_id = 'ptu'"
            )))
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(
            (calls, cancelled, failed),
            (1, 1, 0),
            "{table}; the log:\n{}",
            gw.log()
        );
        assert!(
            prompt > 0,
            "{table}: its prompt tokens were estimated first"
        );
    }
}
