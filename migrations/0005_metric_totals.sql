-- Metrics that are counted once and never go down.
--
-- gw_metric_totals: per instance and endpoint, the same counters as gw_metrics' windows but
-- since the endpoint entered the configuration; a flush adds to them in the same transaction as
-- its window rows. Rows only grow, and go only when the endpoint leaves the configuration, so
-- the Prometheus counters built from them (summed over instances) never fall when a window is
-- pruned. Rows whose endpoint_id is '*' count the gateway's own answers to an application.
--
-- gw_metric_batches: the flushes recorded, one id per instance and flush, inserted first in the
-- flush's transaction: a flush retried after its commit (its answer lost to a timeout) finds its
-- id and adds nothing.
--
-- New counters on both: answers whose client went away, tokens the gateway estimated for
-- streams that ended without a usage chunk, and the gateway's own answers (429, 502, 504, 4xx).

ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS cancelled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS estimated_prompt_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS estimated_completion_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS gateway_429 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS gateway_502 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS gateway_504 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_metrics ADD COLUMN IF NOT EXISTS gateway_4xx BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS gw_metric_totals (
    instance                    TEXT     NOT NULL,
    app_id                      TEXT     NOT NULL,
    endpoint_id                 TEXT     NOT NULL,
    calls                       BIGINT   NOT NULL DEFAULT 0,
    failed                      BIGINT   NOT NULL DEFAULT 0,
    throttled                   BIGINT   NOT NULL DEFAULT 0,
    filtered                    BIGINT   NOT NULL DEFAULT 0,
    cancelled                   BIGINT   NOT NULL DEFAULT 0,
    prompt_tokens               BIGINT   NOT NULL DEFAULT 0,
    completion_tokens           BIGINT   NOT NULL DEFAULT 0,
    total_tokens                BIGINT   NOT NULL DEFAULT 0,
    estimated_prompt_tokens     BIGINT   NOT NULL DEFAULT 0,
    estimated_completion_tokens BIGINT   NOT NULL DEFAULT 0,
    latency_ms_sum              BIGINT   NOT NULL DEFAULT 0,
    latency_count               BIGINT   NOT NULL DEFAULT 0,
    latency_buckets             BIGINT[] NOT NULL DEFAULT '{}',
    ttft_ms_sum                 BIGINT   NOT NULL DEFAULT 0,
    ttft_count                  BIGINT   NOT NULL DEFAULT 0,
    ttft_buckets                BIGINT[] NOT NULL DEFAULT '{}',
    gateway_429                 BIGINT   NOT NULL DEFAULT 0,
    gateway_502                 BIGINT   NOT NULL DEFAULT 0,
    gateway_504                 BIGINT   NOT NULL DEFAULT 0,
    gateway_4xx                 BIGINT   NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, endpoint_id, instance)
);

CREATE TABLE IF NOT EXISTS gw_metric_batches (
    instance    TEXT   NOT NULL,
    batch_id    BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    PRIMARY KEY (instance, batch_id)
);
CREATE INDEX IF NOT EXISTS gw_metric_batches_recorded ON gw_metric_batches (recorded_ms);
