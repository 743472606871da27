-- Operators close circuits (POST {prefix}/circuits/{appId}/{endpointId}/close): the moment of the
-- last closure is kept per endpoint, so every instance can apply it, and an opening seen before
-- that moment (published late by an instance that was behind) cannot reopen the circuit.
ALTER TABLE gw_circuits ADD COLUMN IF NOT EXISTS closed_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE gw_circuits ADD COLUMN IF NOT EXISTS closed_by TEXT;
CREATE INDEX IF NOT EXISTS gw_circuits_closed_at ON gw_circuits (closed_at_ms);
