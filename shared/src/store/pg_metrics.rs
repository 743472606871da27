//! The [`PostgresStore`]'s metrics: window rows (`gw_metrics`), totals that only grow
//! (`gw_metric_totals`) and the batch ids of the flushes recorded (`gw_metric_batches`). The
//! schema is in `migrations/0005_metric_totals.sql`.

use super::{
    BATCH_IDS_KEPT_MS, Counters, EndpointKey, Histogram, MetricsRow, PostgresStore, StoreError,
    sum_per_endpoint, sum_per_window,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

/// The counter columns, in the order [`bind_counters`] binds them and [`counters`] reads them.
macro_rules! columns {
    () => {
        "calls, failed, throttled, filtered, cancelled, prompt_tokens, completion_tokens, \
         total_tokens, estimated_prompt_tokens, estimated_completion_tokens, latency_ms_sum, \
         latency_count, latency_buckets, ttft_ms_sum, ttft_count, ttft_buckets, gateway_429, \
         gateway_502, gateway_504, gateway_4xx"
    };
}

/// The counters' parameters, after instance, app and endpoint.
macro_rules! values {
    () => {
        "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23"
    };
}

/// Add the new row's counters to the stored row `t`'s (histograms bucket by bucket).
macro_rules! add_excluded {
    () => {
        "calls = t.calls + EXCLUDED.calls, failed = t.failed + EXCLUDED.failed, \
         throttled = t.throttled + EXCLUDED.throttled, filtered = t.filtered + EXCLUDED.filtered, \
         cancelled = t.cancelled + EXCLUDED.cancelled, \
         prompt_tokens = t.prompt_tokens + EXCLUDED.prompt_tokens, \
         completion_tokens = t.completion_tokens + EXCLUDED.completion_tokens, \
         total_tokens = t.total_tokens + EXCLUDED.total_tokens, \
         estimated_prompt_tokens = t.estimated_prompt_tokens + EXCLUDED.estimated_prompt_tokens, \
         estimated_completion_tokens = t.estimated_completion_tokens + EXCLUDED.estimated_completion_tokens, \
         latency_ms_sum = t.latency_ms_sum + EXCLUDED.latency_ms_sum, \
         latency_count = t.latency_count + EXCLUDED.latency_count, \
         latency_buckets = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) \
             FROM unnest(t.latency_buckets, EXCLUDED.latency_buckets) AS u(a, b)), \
         ttft_ms_sum = t.ttft_ms_sum + EXCLUDED.ttft_ms_sum, \
         ttft_count = t.ttft_count + EXCLUDED.ttft_count, \
         ttft_buckets = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) \
             FROM unnest(t.ttft_buckets, EXCLUDED.ttft_buckets) AS u(a, b)), \
         gateway_429 = t.gateway_429 + EXCLUDED.gateway_429, \
         gateway_502 = t.gateway_502 + EXCLUDED.gateway_502, \
         gateway_504 = t.gateway_504 + EXCLUDED.gateway_504, \
         gateway_4xx = t.gateway_4xx + EXCLUDED.gateway_4xx"
    };
}

const ADD_WINDOW: &str = concat!(
    "INSERT INTO gw_metrics AS t (instance, app_id, endpoint_id, ",
    columns!(),
    ", window_start_ms) VALUES ($1, $2, $3, ",
    values!(),
    ", $24) ON CONFLICT (app_id, endpoint_id, window_start_ms, instance) DO UPDATE SET ",
    add_excluded!()
);

const ADD_TOTAL: &str = concat!(
    "INSERT INTO gw_metric_totals AS t (instance, app_id, endpoint_id, ",
    columns!(),
    ") VALUES ($1, $2, $3, ",
    values!(),
    ") ON CONFLICT (app_id, endpoint_id, instance) DO UPDATE SET ",
    add_excluded!()
);

const WINDOWS: &str = concat!(
    "SELECT app_id, endpoint_id, ",
    columns!(),
    ", window_start_ms FROM gw_metrics WHERE window_start_ms >= $1"
);

const TOTALS: &str = concat!(
    "SELECT app_id, endpoint_id, ",
    columns!(),
    " FROM gw_metric_totals"
);

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn un(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Bind `$1`–`$23`: instance, app, endpoint and the counters.
fn bind_counters<'q>(query: Query<'q>, instance: &'q str, row: &'q MetricsRow) -> Query<'q> {
    let c = &row.counters;
    query
        .bind(instance)
        .bind(&*row.key.app)
        .bind(&*row.key.endpoint)
        .bind(n(c.calls))
        .bind(n(c.failed))
        .bind(n(c.throttled))
        .bind(n(c.filtered))
        .bind(n(c.cancelled))
        .bind(n(c.prompt_tokens))
        .bind(n(c.completion_tokens))
        .bind(n(c.total_tokens))
        .bind(n(c.estimated_prompt_tokens))
        .bind(n(c.estimated_completion_tokens))
        .bind(n(c.latency_ms_sum))
        .bind(n(c.latency_count))
        .bind(c.latency.to_vec())
        .bind(n(c.ttft_ms_sum))
        .bind(n(c.ttft_count))
        .bind(c.ttft.to_vec())
        .bind(n(c.gateway_429))
        .bind(n(c.gateway_502))
        .bind(n(c.gateway_504))
        .bind(n(c.gateway_4xx))
}

/// A row's endpoint (columns 0 and 1) and counters (the next 20).
fn counters(r: &PgRow) -> Result<(EndpointKey, Counters), StoreError> {
    let app: String = r.try_get(0)?;
    let endpoint: String = r.try_get(1)?;
    let g = |i: usize| r.try_get::<i64, _>(i).map(un);
    let h = |i: usize| {
        r.try_get::<Vec<i64>, _>(i)
            .map(|v| Histogram::from_slice(&v))
    };
    let counters = Counters {
        calls: g(2)?,
        failed: g(3)?,
        throttled: g(4)?,
        filtered: g(5)?,
        cancelled: g(6)?,
        prompt_tokens: g(7)?,
        completion_tokens: g(8)?,
        total_tokens: g(9)?,
        estimated_prompt_tokens: g(10)?,
        estimated_completion_tokens: g(11)?,
        latency_ms_sum: g(12)?,
        latency_count: g(13)?,
        latency: h(14)?,
        ttft_ms_sum: g(15)?,
        ttft_count: g(16)?,
        ttft: h(17)?,
        gateway_429: g(18)?,
        gateway_502: g(19)?,
        gateway_504: g(20)?,
        gateway_4xx: g(21)?,
    };
    Ok((EndpointKey::new(&app, &endpoint), counters))
}

impl PostgresStore {
    /// One transaction: 1. the batch id, unless this instance recorded it already (then
    /// nothing more); 2. each row added to its window; 3. and to its endpoint's totals.
    pub(super) async fn record_metrics_rows(
        &self,
        instance: &str,
        batch: Option<u64>,
        rows: &[MetricsRow],
    ) -> Result<bool, StoreError> {
        if rows.is_empty() && batch.is_none() {
            return Ok(true);
        }
        let mut tx = self.pool().begin().await?;
        if let Some(id) = batch {
            let recorded = sqlx::query(
                "INSERT INTO gw_metric_batches (instance, batch_id, recorded_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (instance, batch_id) DO NOTHING",
            )
            .bind(instance)
            .bind(n(id))
            .bind(n(crate::throttle::now_ms()))
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        for row in rows {
            bind_counters(sqlx::query(ADD_WINDOW), instance, row)
                .bind(n(row.window_start_ms))
                .execute(&mut *tx)
                .await?;
            bind_counters(sqlx::query(ADD_TOTAL), instance, row)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn metric_windows(
        &self,
        since_ms: u64,
    ) -> Result<Vec<MetricsRow>, StoreError> {
        let rows = sqlx::query(WINDOWS)
            .bind(n(since_ms))
            .fetch_all(self.pool())
            .await?;
        let mut per_instance = Vec::with_capacity(rows.len());
        for r in &rows {
            let (key, counters) = counters(r)?;
            per_instance.push((key, un(r.try_get(22)?), counters));
        }
        Ok(sum_per_window(per_instance))
    }

    pub(super) async fn metric_totals_summed(
        &self,
    ) -> Result<Vec<(EndpointKey, Counters)>, StoreError> {
        let rows = sqlx::query(TOTALS).fetch_all(self.pool()).await?;
        let per_instance = rows.iter().map(counters).collect::<Result<Vec<_>, _>>()?;
        Ok(sum_per_endpoint(per_instance))
    }

    pub(super) async fn retain_totals(&self, live: &[EndpointKey]) -> Result<(), StoreError> {
        let apps: Vec<&str> = live.iter().map(|k| &*k.app).collect();
        let endpoints: Vec<&str> = live.iter().map(|k| &*k.endpoint).collect();
        sqlx::query(
            "DELETE FROM gw_metric_totals t WHERE NOT EXISTS (
                 SELECT 1 FROM unnest($1::text[], $2::text[]) AS l(app_id, endpoint_id)
                 WHERE l.app_id = t.app_id AND l.endpoint_id = t.endpoint_id)",
        )
        .bind(apps)
        .bind(endpoints)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub(super) async fn prune_metric_rows(&self, before_ms: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM gw_metrics WHERE window_start_ms < $1")
            .bind(n(before_ms))
            .execute(self.pool())
            .await?;
        sqlx::query("DELETE FROM gw_metric_batches WHERE recorded_ms < $1")
            .bind(n(before_ms.saturating_sub(BATCH_IDS_KEPT_MS)))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
