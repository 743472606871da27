//! The PostgreSQL [`SharedStore`]: many instances on one database. Every statement binds its
//! parameters; the schema lives in `migrations/` and is applied on first contact.

use super::{Counters, EndpointKey, Lease, MetricsRow, SharedStore, StoreError, ten_second_budget};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The schema of the shared state, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The bookkeeping table of the pgvector migrations.
pub const VECTOR_MIGRATIONS_TABLE: &str = "_aigw_vector_migrations";

/// The schema of the features that need pgvector (`migrations/vector/`), with its own
/// bookkeeping table, so that a server without the extension blocks only them.
pub static VECTOR_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("../migrations/vector");
    migrator.dangerous_set_table_name(VECTOR_MIGRATIONS_TABLE);
    migrator
});

/// One schema's migrations not yet applied to a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// `shared state` or `pgvector features`.
    pub schema: &'static str,
    pub version: i64,
    pub description: String,
}

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
        // No ping before each use: a lease is one statement, and a broken connection only fails
        // that one call, which degrades to the local view like any store failure.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
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

    /// Apply the migrations of the features that need pgvector. A server that does not allow
    /// the extension gets [`StoreError::VectorUnavailable`], whose message says what to change;
    /// the caller turns those features off.
    pub async fn migrate_vector(&self) -> Result<(), StoreError> {
        match VECTOR_MIGRATOR.run(&self.pool).await {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e))
            | Err(sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => {
                Err(StoreError::VectorUnavailable(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The migrations of both schemas not yet applied (for `gateway migrate --check`).
    pub async fn pending_migrations(&self) -> Result<Vec<Pending>, StoreError> {
        let mut pending = Vec::new();
        for (schema, migrator) in [
            ("shared state", &MIGRATOR),
            ("pgvector features", &*VECTOR_MIGRATOR),
        ] {
            let table = migrator.table_name.as_ref();
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(table)
                .fetch_one(&self.pool)
                .await?;
            let applied: Vec<i64> = if exists {
                // The table name is one of two constants, never input.
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT version FROM {table} WHERE success"
                )))
                .fetch_all(&self.pool)
                .await?
            } else {
                Vec::new()
            };
            pending.extend(
                migrator
                    .iter()
                    .filter(|m| m.migration_type.is_up_migration())
                    .filter(|m| !applied.contains(&m.version))
                    .map(|m| Pending {
                        schema,
                        version: m.version,
                        description: m.description.to_string(),
                    }),
            );
        }
        Ok(pending)
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

/// Rows of (app_id, endpoint_id, a moment in ms).
fn keyed_moments(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(EndpointKey, u64)>, StoreError> {
    rows.iter()
        .map(|r| {
            let app: String = r.try_get(0)?;
            let endpoint: String = r.try_get(1)?;
            Ok((EndpointKey::new(&app, &endpoint), unms(r.try_get(2)?)))
        })
        .collect()
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
        opened_at_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gw_circuits (app_id, endpoint_id, open_until_ms, opened_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (app_id, endpoint_id) DO UPDATE
             SET open_until_ms = GREATEST(gw_circuits.open_until_ms, EXCLUDED.open_until_ms),
                 opened_by = CASE WHEN EXCLUDED.open_until_ms > gw_circuits.open_until_ms
                                  THEN EXCLUDED.opened_by ELSE gw_circuits.opened_by END
             WHERE gw_circuits.closed_at_ms = 0 OR gw_circuits.closed_at_ms < $5",
        )
        .bind(&*key.app)
        .bind(&*key.endpoint)
        .bind(ms(until_ms))
        .bind(instance)
        .bind(ms(opened_at_ms))
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
        keyed_moments(&rows)
    }

    async fn close_circuit(
        &self,
        key: &EndpointKey,
        closed_at_ms: u64,
        instance: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gw_circuits (app_id, endpoint_id, open_until_ms, opened_by, closed_at_ms, closed_by)
             VALUES ($1, $2, 0, $3, $4, $3)
             ON CONFLICT (app_id, endpoint_id) DO UPDATE
             SET open_until_ms = 0,
                 closed_at_ms = GREATEST(gw_circuits.closed_at_ms, EXCLUDED.closed_at_ms),
                 closed_by = EXCLUDED.closed_by",
        )
        .bind(&*key.app)
        .bind(&*key.endpoint)
        .bind(instance)
        .bind(ms(closed_at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn closed_circuits(&self, since_ms: u64) -> Result<Vec<(EndpointKey, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_id, endpoint_id, closed_at_ms FROM gw_circuits WHERE closed_at_ms > $1",
        )
        .bind(ms(since_ms))
        .fetch_all(&self.pool)
        .await?;
        keyed_moments(&rows)
    }

    /// One statement, one round trip: the function `aigw_lease` (migrations/0004) locks the
    /// endpoint, reads the database's clock, counts both windows, grants by the same rule as
    /// `store::grant`, records the lease and drops those that no longer count.
    async fn lease(
        &self,
        key: &EndpointKey,
        limit: u32,
        want: u32,
        at_ms: Option<u64>,
    ) -> Result<Lease, StoreError> {
        let row = sqlx::query("SELECT * FROM aigw_lease($1, $2, $3, $4, $5, $6)")
            .bind(&*key.app)
            .bind(&*key.endpoint)
            .bind(i64::from(limit))
            .bind(i64::from(ten_second_budget(limit)))
            .bind(i64::from(want))
            .bind(at_ms.map(ms))
            .fetch_one(&self.pool)
            .await?;
        let granted: i32 = row.try_get(1)?;
        Ok(Lease {
            id: row.try_get(0)?,
            granted: u32::try_from(granted).unwrap_or(0),
            retry_after_ms: unms(row.try_get(2)?),
        })
    }

    async fn give_back(&self, id: i64, unused: u32) -> Result<(), StoreError> {
        sqlx::query("SELECT aigw_give_back($1, $2)")
            .bind(id)
            .bind(i64::from(unused))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_metrics(
        &self,
        instance: &str,
        batch: Option<u64>,
        rows: &[MetricsRow],
    ) -> Result<bool, StoreError> {
        self.record_metrics_rows(instance, batch, rows).await
    }

    async fn metrics(&self, since_ms: u64) -> Result<Vec<MetricsRow>, StoreError> {
        self.metric_windows(since_ms).await
    }

    async fn metric_totals(&self) -> Result<Vec<(EndpointKey, Counters)>, StoreError> {
        self.metric_totals_summed().await
    }

    async fn retain_metric_totals(&self, live: &[EndpointKey]) -> Result<(), StoreError> {
        self.retain_totals(live).await
    }

    async fn prune_metrics(&self, before_ms: u64) -> Result<(), StoreError> {
        self.prune_metric_rows(before_ms).await
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
