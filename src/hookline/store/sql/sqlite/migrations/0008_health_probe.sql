-- hookline SQLite schema, version 8.
-- The readiness check's write probe: one row, rewritten at most every few seconds by each
-- process that is asked /health/ready while nothing else writes (Store.probe_write).
CREATE TABLE health_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    written_at  REAL NOT NULL
);
