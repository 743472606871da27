-- Latency and time-to-first-token histograms per metrics window, so that percentiles can be
-- computed over all instances (bucket bounds are fixed in the metrics module), and the
-- configuration history used for live reconfiguration across instances.
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS latency_buckets BIGINT[] NOT NULL DEFAULT '{}';
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS ttft_ms_sum BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS ttft_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS ttft_buckets BIGINT[] NOT NULL DEFAULT '{}';

CREATE TABLE IF NOT EXISTS gw_config (
    version    BIGSERIAL PRIMARY KEY,
    body       JSONB       NOT NULL,
    created_by TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
