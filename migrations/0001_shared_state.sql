-- Shared state that lets many gateway instances behave as one: circuit state, RPM permit
-- leases and metrics windows. Nothing here needs an extension: the features that need pgvector
-- have their own migrations (migrations/vector/), so a server without it loses only them.

-- An endpoint kept off by a 429 until open_until_ms (Unix milliseconds).
CREATE TABLE IF NOT EXISTS gw_circuits (
    app_id        TEXT   NOT NULL,
    endpoint_id   TEXT   NOT NULL,
    open_until_ms BIGINT NOT NULL,
    opened_by     TEXT   NOT NULL,
    PRIMARY KEY (app_id, endpoint_id)
);

-- Blocks of RPM permits leased by instances (see shared/src/throttle/permits.rs for the algorithm).
CREATE TABLE IF NOT EXISTS gw_rate_leases (
    id            BIGSERIAL PRIMARY KEY,
    app_id        TEXT    NOT NULL,
    endpoint_id   TEXT    NOT NULL,
    leased_at_ms  BIGINT  NOT NULL,
    expires_at_ms BIGINT  NOT NULL,
    granted       INTEGER NOT NULL CHECK (granted >= 0)
);
CREATE INDEX IF NOT EXISTS gw_rate_leases_endpoint
    ON gw_rate_leases (app_id, endpoint_id, expires_at_ms);

-- Per-instance metric counters, one row per collection window; readers sum over instances.
CREATE TABLE IF NOT EXISTS gw_metrics (
    instance          TEXT   NOT NULL,
    app_id            TEXT   NOT NULL,
    endpoint_id       TEXT   NOT NULL,
    window_start_ms   BIGINT NOT NULL,
    calls             BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    throttled         BIGINT NOT NULL DEFAULT 0,
    filtered          BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    latency_ms_sum    BIGINT NOT NULL DEFAULT 0,
    latency_count     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, endpoint_id, window_start_ms, instance)
);
