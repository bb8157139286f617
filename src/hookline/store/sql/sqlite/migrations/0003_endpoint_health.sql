-- hookline SQLite schema, version 3.
-- Per-endpoint delivery state (circuit, failure run, rate-limit bucket), shared by every
-- process on the database; a row exists only once an endpoint failed or was rate limited.
CREATE TABLE endpoint_health (
    endpoint_id    TEXT PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
    failures       INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts
    failing_since  REAL,                        -- start of the current run of failures
    circuit_open   INTEGER NOT NULL DEFAULT 0,
    paused_until   REAL,                        -- open circuit: nothing is sent before this
    cooldown       REAL NOT NULL DEFAULT 0,     -- seconds; the wait that set paused_until
    probing        INTEGER NOT NULL DEFAULT 0,  -- a probe is in flight
    tokens         REAL,                        -- rate-limit bucket; NULL = full
    tokens_at      REAL
) WITHOUT ROWID;

-- An endpoint's waiting work in due order. claim_due uses it when the oldest due tasks belong
-- to endpoints that may not send now (busy, rate limited, circuit open): the work of other
-- endpoints behind them is found per endpoint instead of by scanning past the blocked rows.
CREATE INDEX deliveries_waiting ON deliveries (endpoint_id, due_at) WHERE status IN (1, 3);
