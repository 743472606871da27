//! The PostgreSQL [`SharedStore`]: many instances on one database. Every statement binds its
//! parameters; the schema lives in `migrations/` and is applied on first contact.

use super::{
    Counters, EndpointKey, Histogram, LEASE_VALID_MS, Lease, MetricsRow, SharedStore, StoreError,
    WINDOW_MS, grant, sum_per_window,
};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    migrated: AtomicBool,
}

impl PostgresStore {
    /// A store for `url`. Connects lazily: a database that is down at start-up does not stop
    /// the gateway (it runs on its local view until the database answers).
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("aigw")
            .options([("statement_timeout", "2000")])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(Duration::from_millis(1_000))
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            migrated: AtomicBool::new(false),
        })
    }

    /// Apply the schema migrations (idempotent; also what `gateway migrate` runs).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        self.migrated.store(true, Ordering::Release);
        Ok(())
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait::async_trait]
impl SharedStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.migrated.load(Ordering::Acquire) {
            return self.migrate().await;
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn open_circuit(
        &self,
        key: &EndpointKey,
        until_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gw_circuits (app_id, endpoint_id, open_until_ms, opened_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app_id, endpoint_id) DO UPDATE
             SET open_until_ms = GREATEST(gw_circuits.open_until_ms, EXCLUDED.open_until_ms),
                 opened_by = CASE WHEN EXCLUDED.open_until_ms > gw_circuits.open_until_ms
                                  THEN EXCLUDED.opened_by ELSE gw_circuits.opened_by END",
        )
        .bind(&*key.app)
        .bind(&*key.endpoint)
        .bind(ms(until_ms))
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn open_circuits(&self, now_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_id, endpoint_id, open_until_ms FROM gw_circuits WHERE open_until_ms > $1",
        )
        .bind(ms(now_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let app: String = r.try_get(0)?;
                let endpoint: String = r.try_get(1)?;
                Ok((EndpointKey::new(&app, &endpoint), unms(r.try_get(2)?)))
            })
            .collect()
    }

    /// One transaction, serialised per endpoint by an advisory lock:
    /// 1. lock the endpoint; 2. sum the permits still counted (leases whose validity plus the
    /// window has not passed) and find when the earliest stops counting; 3. grant what fits;
    /// 4. record the lease; 5. drop leases that no longer count.
    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        now_ms: u64,
    ) -> Result<Lease, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 7))")
            .bind(&*key.app)
            .bind(&*key.endpoint)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT COALESCE(SUM(granted), 0)::BIGINT, MIN(expires_at_ms) FILTER (WHERE granted > 0)
             FROM gw_rate_leases WHERE app_id = $1 AND endpoint_id = $2 AND expires_at_ms + $3 > $4",
        )
        .bind(&*key.app)
        .bind(&*key.endpoint)
        .bind(ms(WINDOW_MS))
        .bind(ms(now_ms))
        .fetch_one(&mut *tx)
        .await?;
        let used: i64 = row.try_get(0)?;
        let earliest: Option<i64> = row.try_get(1)?;
        let frees_at = earliest.map(|e| unms(e) + WINDOW_MS);
        let (granted, retry_after_ms) = grant(limit, unms(used), want, now_ms, frees_at);
        let mut id = 0;
        if granted > 0 {
            id = sqlx::query_scalar(
                "INSERT INTO gw_rate_leases (app_id, endpoint_id, leased_at_ms, expires_at_ms, granted)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(&*key.app)
            .bind(&*key.endpoint)
            .bind(ms(now_ms))
            .bind(ms(now_ms + LEASE_VALID_MS))
            .bind(granted as i32)
            .fetch_one(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM gw_rate_leases WHERE app_id = $1 AND endpoint_id = $2 AND expires_at_ms + $3 <= $4")
            .bind(&*key.app)
            .bind(&*key.endpoint)
            .bind(ms(WINDOW_MS))
            .bind(ms(now_ms))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Lease {
            id,
            granted,
            retry_after_ms,
        })
    }

    async fn give_back(&self, id: i64, unused: u32) -> Result<(), StoreError> {
        sqlx::query("UPDATE gw_rate_leases SET granted = GREATEST(granted - $2, 0) WHERE id = $1")
            .bind(id)
            .bind(unused as i32)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_metrics(&self, instance: &str, rows: &[MetricsRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for row in rows {
            let c = &row.counters;
            sqlx::query(
                "INSERT INTO gw_metrics (instance, app_id, endpoint_id, window_start_ms, calls, failed, throttled,
                     filtered, prompt_tokens, completion_tokens, total_tokens, latency_ms_sum, latency_count,
                     latency_buckets, ttft_ms_sum, ttft_count, ttft_buckets)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT (app_id, endpoint_id, window_start_ms, instance) DO UPDATE SET
                     calls = gw_metrics.calls + EXCLUDED.calls,
                     failed = gw_metrics.failed + EXCLUDED.failed,
                     throttled = gw_metrics.throttled + EXCLUDED.throttled,
                     filtered = gw_metrics.filtered + EXCLUDED.filtered,
                     prompt_tokens = gw_metrics.prompt_tokens + EXCLUDED.prompt_tokens,
                     completion_tokens = gw_metrics.completion_tokens + EXCLUDED.completion_tokens,
                     total_tokens = gw_metrics.total_tokens + EXCLUDED.total_tokens,
                     latency_ms_sum = gw_metrics.latency_ms_sum + EXCLUDED.latency_ms_sum,
                     latency_count = gw_metrics.latency_count + EXCLUDED.latency_count,
                     latency_buckets = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0)
                         FROM unnest(gw_metrics.latency_buckets, EXCLUDED.latency_buckets) AS t(a, b)),
                     ttft_ms_sum = gw_metrics.ttft_ms_sum + EXCLUDED.ttft_ms_sum,
                     ttft_count = gw_metrics.ttft_count + EXCLUDED.ttft_count,
                     ttft_buckets = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0)
                         FROM unnest(gw_metrics.ttft_buckets, EXCLUDED.ttft_buckets) AS t(a, b))",
            )
            .bind(instance)
            .bind(&*row.key.app)
            .bind(&*row.key.endpoint)
            .bind(ms(row.window_start_ms))
            .bind(ms(c.calls))
            .bind(ms(c.failed))
            .bind(ms(c.throttled))
            .bind(ms(c.filtered))
            .bind(ms(c.prompt_tokens))
            .bind(ms(c.completion_tokens))
            .bind(ms(c.total_tokens))
            .bind(ms(c.latency_ms_sum))
            .bind(ms(c.latency_count))
            .bind(c.latency.to_vec())
            .bind(ms(c.ttft_ms_sum))
            .bind(ms(c.ttft_count))
            .bind(c.ttft.to_vec())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_id, endpoint_id, window_start_ms, calls, failed, throttled, filtered,
                    prompt_tokens, completion_tokens, total_tokens, latency_ms_sum, latency_count,
                    latency_buckets, ttft_ms_sum, ttft_count, ttft_buckets
             FROM gw_metrics WHERE window_start_ms >= $1",
        )
        .bind(ms(since_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut per_instance = Vec::with_capacity(rows.len());
        for r in &rows {
            let app: String = r.try_get(0)?;
            let endpoint: String = r.try_get(1)?;
            let n = |i: usize| r.try_get::<i64, _>(i).map(unms);
            let counters = Counters {
                calls: n(3)?,
                failed: n(4)?,
                throttled: n(5)?,
                filtered: n(6)?,
                prompt_tokens: n(7)?,
                completion_tokens: n(8)?,
                total_tokens: n(9)?,
                latency_ms_sum: n(10)?,
                latency_count: n(11)?,
                latency: Histogram::from_slice(&r.try_get::<Vec<i64>, _>(12)?),
                ttft_ms_sum: n(13)?,
                ttft_count: n(14)?,
                ttft: Histogram::from_slice(&r.try_get::<Vec<i64>, _>(15)?),
            };
            per_instance.push((EndpointKey::new(&app, &endpoint), n(2)?, counters));
        }
        Ok(sum_per_window(per_instance))
    }

    async fn prune_metrics(&self, before_ms: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM gw_metrics WHERE window_start_ms < $1")
            .bind(ms(before_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_config(
        &self,
        body: &serde_json::Value,
        instance: &str,
    ) -> Result<i64, StoreError> {
        let version = sqlx::query_scalar(
            "INSERT INTO gw_config (body, created_by) VALUES ($1, $2) RETURNING version",
        )
        .bind(sqlx::types::Json(body))
        .bind(instance)
        .fetch_one(&self.pool)
        .await?;
        Ok(version)
    }

    async fn latest_config(&self) -> Result<Option<(i64, serde_json::Value)>, StoreError> {
        let row = sqlx::query("SELECT version, body FROM gw_config ORDER BY version DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(r) => {
                let body: sqlx::types::Json<serde_json::Value> = r.try_get(1)?;
                Ok(Some((r.try_get(0)?, body.0)))
            }
        }
    }

    async fn latest_config_version(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(version) FROM gw_config")
            .fetch_one(&self.pool)
            .await?)
    }
}
