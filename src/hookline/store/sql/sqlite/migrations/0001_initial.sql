-- hookline SQLite schema, version 1.
-- Times are REAL epoch seconds (UTC). JSON columns hold msgspec-encoded values.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  REAL NOT NULL
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,  -- sha256 hex of the token; the token itself is never stored
    created_at  REAL NOT NULL
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
    event_types    TEXT,   -- JSON array or NULL (all types)
    channels       TEXT,   -- JSON array or NULL (no channel filter)
    rate_limit     INTEGER,
    throttle_rate  INTEGER,
    metadata       TEXT NOT NULL DEFAULT '{}',
    headers        TEXT NOT NULL DEFAULT '{}',
    keys           TEXT NOT NULL,  -- JSON array of {secret, expires_at}; the first signs new keys
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_app ON endpoints (app_id, id);

CREATE TABLE messages (
    id          TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    event_type  TEXT NOT NULL,
    event_id    TEXT,
    channels    TEXT,  -- JSON array or NULL
    payload     BLOB NOT NULL,  -- the exact JSON bytes delivered
    created_at  REAL NOT NULL
);
CREATE INDEX messages_app ON messages (app_id, id);
CREATE UNIQUE INDEX messages_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;

-- One row per (message, endpoint): the delivery task and its current status.
-- due_at is when the row may next be claimed: next attempt time while pending, lease expiry
-- while sending. One partial index over it serves both fresh and orphaned work.
CREATE TABLE deliveries (
    msg_id       TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    endpoint_id  TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    app_id       TEXT NOT NULL,
    status       INTEGER NOT NULL,  -- models.MessageStatus
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       REAL,
    lease        INTEGER NOT NULL DEFAULT 0,  -- fencing token, bumped on every claim
    trigger      INTEGER NOT NULL DEFAULT 0,  -- models.Trigger of the next attempt
    created_at   REAL NOT NULL,  -- the message's creation time (stats and recover windows)
    updated_at   REAL NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status IN (1, 3);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, status, created_at);

CREATE TABLE attempts (
    id                    TEXT PRIMARY KEY,
    msg_id                TEXT NOT NULL,
    endpoint_id           TEXT NOT NULL,
    app_id                TEXT NOT NULL,  -- no foreign key: attempts are history
    url                   TEXT NOT NULL,
    status                INTEGER NOT NULL,
    response_status_code  INTEGER NOT NULL,
    response              TEXT NOT NULL,
    duration_ms           INTEGER NOT NULL,
    trigger               INTEGER NOT NULL,
    created_at            REAL NOT NULL
);
CREATE INDEX attempts_msg ON attempts (msg_id, id);
CREATE INDEX attempts_endpoint ON attempts (endpoint_id, id);

CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,  -- token id + ':' + the client's key
    fingerprint  TEXT NOT NULL,     -- hash of method, path and body
    state        INTEGER NOT NULL,  -- 0 pending, 1 done
    lock_until   REAL,
    status       INTEGER,
    body         BLOB,
    expires_at   REAL NOT NULL
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
