-- hookline SQLite schema: what migrations/0001..0009 build from zero.
-- Generated from a migrated database; do not edit. Change the schema with a new
-- numbered file in migrations/, then regenerate this one:
--     .venv/bin/python -m tests.support.schema_files sqlite
-- tests/contract/test_schema_files.py checks that the two agree. The migrations'
-- comments say what the columns mean (SQLite keeps no comments of a migration).

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    REAL NOT NULL,
    last_used_at  REAL
);

CREATE TABLE applications (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    uid            TEXT,
    name           TEXT NOT NULL,
    throttle_rate  INTEGER,
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    UNIQUE (org_id, uid)
);

CREATE INDEX applications_org ON applications (org_id, id);

CREATE TABLE event_types (
    org_id        TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    archived      INTEGER NOT NULL DEFAULT 0,
    deprecated    INTEGER NOT NULL DEFAULT 0,
    feature_flag  TEXT,
    schemas       TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE endpoints (
    id             TEXT PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    uid            TEXT,
    url            TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    disabled       INTEGER NOT NULL DEFAULT 0,
    event_types    TEXT,
    channels       TEXT,
    rate_limit     INTEGER,
    throttle_rate  INTEGER,
    metadata       TEXT NOT NULL DEFAULT '{}',
    headers        TEXT NOT NULL DEFAULT '{}',
    keys           TEXT NOT NULL,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    UNIQUE (app_id, uid)
);

CREATE INDEX endpoints_app ON endpoints (app_id, id);

CREATE TABLE messages (
    id             TEXT PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    event_type     TEXT NOT NULL,
    event_id       TEXT,
    channels       TEXT,
    payload        BLOB NOT NULL,
    created_at     REAL NOT NULL,
    tags           TEXT,
    deliver_at     REAL,
    expires_at     REAL,
    trace_context  TEXT
);

CREATE INDEX messages_app ON messages (app_id, id);
CREATE UNIQUE INDEX messages_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX messages_expiry ON messages (expires_at) WHERE length(payload) > 0;

CREATE TABLE deliveries (
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    endpoint_id  TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    app_id       TEXT NOT NULL,
    status       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       REAL,
    lease        INTEGER NOT NULL DEFAULT 0,
    trigger      INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
) WITHOUT ROWID;

CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status IN (1, 3);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);
CREATE INDEX deliveries_waiting ON deliveries (endpoint_id, due_at) WHERE status IN (1, 3);

CREATE TABLE attempts (
    id                    TEXT PRIMARY KEY,
    msg_id                TEXT NOT NULL,
    endpoint_id           TEXT NOT NULL,
    app_id                TEXT NOT NULL,
    url                   TEXT NOT NULL,
    status                INTEGER NOT NULL,
    response_status_code  INTEGER NOT NULL,
    response              TEXT NOT NULL,
    duration_ms           INTEGER NOT NULL,
    trigger               INTEGER NOT NULL,
    created_at            REAL NOT NULL
);

CREATE INDEX attempts_endpoint ON attempts (endpoint_id, id);
CREATE INDEX attempts_msg ON attempts (msg_id, id);

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    fingerprint  TEXT NOT NULL,
    state        INTEGER NOT NULL,
    lock_until   REAL,
    status       INTEGER,
    body         BLOB,
    expires_at   REAL NOT NULL,
    owner        TEXT
);

CREATE INDEX idempotency_expiry ON idempotency (expires_at);

CREATE TABLE endpoint_health (
    endpoint_id    TEXT PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
    failures       INTEGER NOT NULL DEFAULT 0,
    failing_since  REAL,
    circuit_open   INTEGER NOT NULL DEFAULT 0,
    paused_until   REAL,
    cooldown       REAL NOT NULL DEFAULT 0,
    probing        INTEGER NOT NULL DEFAULT 0,
    tokens         REAL,
    tokens_at      REAL
) WITHOUT ROWID;

CREATE TABLE health_probe (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    written_at  REAL NOT NULL
);

PRAGMA user_version = 9;
