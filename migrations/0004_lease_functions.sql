-- RPM permit leases in one round trip each, on the database's clock (see the throttle::permits
-- module's doc for the algorithm and why it never overshoots).
--
-- aigw_lease: under a per-endpoint advisory lock (held to the end of the statement's
-- transaction), read the database's clock, drop the leases that no longer count, sum what
-- still counts against the minute (limit) and the 10 s window (limit / 6, at least 1), grant
-- min(want, what is left in both), and record the lease. Leases are counted from the moment
-- they are granted until their validity (1 s) plus the window has passed. The rule is the
-- gateway's `store::grant`, spelt in SQL; the store suite holds both to the same answers.
-- p_at_ms replaces the clock with a given moment (tests); the gateway passes NULL.
CREATE OR REPLACE FUNCTION aigw_lease(
    p_app TEXT,
    p_endpoint TEXT,
    p_per_minute BIGINT,
    p_per_10s BIGINT,
    p_want BIGINT,
    p_at_ms BIGINT DEFAULT NULL
) RETURNS TABLE (lease_id BIGINT, lease_granted INTEGER, lease_retry_after_ms BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    valid_ms CONSTANT BIGINT := 1000;
    minute_ms CONSTANT BIGINT := 60000;
    short_ms CONSTANT BIGINT := 10000;
    v_now BIGINT;
    v_minute BIGINT;
    v_minute_frees BIGINT;
    v_short BIGINT;
    v_short_frees BIGINT;
    v_minute_left BIGINT;
    v_short_left BIGINT;
    v_granted BIGINT;
    v_retry BIGINT := 0;
    v_id BIGINT := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_app || '/' || p_endpoint, 7));
    -- After the lock: the moment of the grant, not of the wait for it.
    v_now := COALESCE(p_at_ms, floor(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);

    DELETE FROM gw_rate_leases l
     WHERE l.app_id = p_app AND l.endpoint_id = p_endpoint AND l.expires_at_ms + minute_ms <= v_now;

    SELECT COALESCE(SUM(l.granted), 0),
           MIN(l.expires_at_ms + minute_ms) FILTER (WHERE l.granted > 0),
           COALESCE(SUM(l.granted) FILTER (WHERE l.expires_at_ms + short_ms > v_now), 0),
           MIN(l.expires_at_ms + short_ms) FILTER (WHERE l.granted > 0 AND l.expires_at_ms + short_ms > v_now)
      INTO v_minute, v_minute_frees, v_short, v_short_frees
      FROM gw_rate_leases l
     WHERE l.app_id = p_app AND l.endpoint_id = p_endpoint AND l.expires_at_ms + minute_ms > v_now;

    v_minute_left := GREATEST(p_per_minute - v_minute, 0);
    v_short_left := GREATEST(p_per_10s - v_short, 0);
    v_granted := LEAST(p_want, v_minute_left, v_short_left);

    IF v_granted > 0 THEN
        INSERT INTO gw_rate_leases (app_id, endpoint_id, leased_at_ms, expires_at_ms, granted)
        VALUES (p_app, p_endpoint, v_now, v_now + valid_ms, v_granted)
        RETURNING id INTO v_id;
    ELSE
        v_granted := 0;
        IF v_minute_left = 0 THEN
            v_retry := GREATEST(v_retry, COALESCE(v_minute_frees - v_now, 1));
        END IF;
        IF v_short_left = 0 THEN
            v_retry := GREATEST(v_retry, COALESCE(v_short_frees - v_now, 1));
        END IF;
        v_retry := GREATEST(v_retry, 1);
    END IF;

    RETURN QUERY SELECT v_id, v_granted::INTEGER, v_retry;
END;
$$;

-- aigw_give_back: return a lease's unused permits (they were never used, so they stop counting).
CREATE OR REPLACE FUNCTION aigw_give_back(p_id BIGINT, p_unused BIGINT) RETURNS VOID
LANGUAGE sql AS $$
    UPDATE gw_rate_leases SET granted = GREATEST(granted - p_unused, 0)::INTEGER WHERE id = p_id;
$$;
