-- The readiness check's write probe, as in SQLite's 0008: one row, rewritten at most every few
-- seconds by each process asked /health/ready while nothing else writes (Store.probe_write).
CREATE TABLE health_probe (
    id          smallint PRIMARY KEY CHECK (id = 1),
    written_at  double precision NOT NULL
);
