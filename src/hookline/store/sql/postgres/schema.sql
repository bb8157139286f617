-- hookline PostgreSQL schema: what migrations/0001..NNNN produce, applied in order.
-- Keep in step with the migrations (tests/contract/test_schema_files.py compares them).
-- migrate() keeps the applied versions in hookline_migrations, which it creates itself.

CREATE TABLE orgs (
    id          text COLLATE "C" PRIMARY KEY,
    name        text COLLATE "C" NOT NULL UNIQUE,
    created_at  double precision NOT NULL
);

CREATE TABLE tokens (
    id            text COLLATE "C" PRIMARY KEY,
    org_id        text COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          text NOT NULL,
    token_hash    text COLLATE "C" NOT NULL UNIQUE,  -- sha256 hex; the token is never stored
    created_at    double precision NOT NULL,
    last_used_at  double precision                   -- NULL: never used
);

CREATE TABLE applications (
    id             text COLLATE "C" PRIMARY KEY,
    org_id         text COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    uid            text COLLATE "C",
    name           text NOT NULL,
    throttle_rate  integer,
    metadata       text NOT NULL DEFAULT '{}',
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL,
    UNIQUE (org_id, uid)
);
CREATE INDEX applications_org ON applications (org_id, id);

CREATE TABLE event_types (
    org_id        text COLLATE "C" NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          text COLLATE "C" NOT NULL,
    description   text NOT NULL,
    archived      boolean NOT NULL DEFAULT false,
    deprecated    boolean NOT NULL DEFAULT false,
    feature_flag  text,
    schemas       text,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE endpoints (
    id             text COLLATE "C" PRIMARY KEY,
    app_id         text COLLATE "C" NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    uid            text COLLATE "C",
    url            text NOT NULL,
    description    text NOT NULL DEFAULT '',
    disabled       boolean NOT NULL DEFAULT false,
    event_types    text,  -- JSON array or NULL (all types)
    channels       text,  -- JSON array or NULL (no channel filter)
    rate_limit     integer,
    throttle_rate  integer,
    metadata       text NOT NULL DEFAULT '{}',
    headers        text NOT NULL DEFAULT '{}',
    keys           text NOT NULL,  -- JSON array of {secret, expires_at}; the first signs
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL,
    UNIQUE (app_id, uid)
);
CREATE INDEX endpoints_app ON endpoints (app_id, id);

CREATE TABLE messages (
    id          text COLLATE "C" PRIMARY KEY,
    app_id      text COLLATE "C" NOT NULL REFERENCES applications(id) ON DELETE CASCADE,
    event_type  text COLLATE "C" NOT NULL,
    event_id    text COLLATE "C",
    channels    text,              -- JSON array or NULL
    payload     bytea NOT NULL,    -- the exact JSON bytes delivered
    created_at  double precision NOT NULL,
    tags        text,              -- JSON array or NULL
    deliver_at  double precision,  -- Svix's deliverAt; only the first due_at derives from it
    expires_at  double precision,  -- when the payload and response bodies are deleted
    trace_context text             -- W3C traceparent of the ingest span, when tracing is on
);
CREATE INDEX messages_app ON messages (app_id, id);
CREATE UNIQUE INDEX messages_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
-- Payloads still kept, in expiry order: the cleaner's work list (an expired payload is empty).
CREATE INDEX messages_expiry ON messages (expires_at) WHERE length(payload) > 0;

-- One row per (message, endpoint): the delivery task and its current status.
-- due_at is when the row may next be claimed: next attempt time while pending (1), lease
-- expiry while sending (3), NULL once finished. One partial index serves fresh and orphaned work.
CREATE TABLE deliveries (
    msg_id       text COLLATE "C" NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    endpoint_id  text COLLATE "C" NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    app_id       text COLLATE "C" NOT NULL,
    status       smallint NOT NULL,            -- models.MessageStatus
    attempts     integer NOT NULL DEFAULT 0,
    due_at       double precision,
    lease        bigint NOT NULL DEFAULT 0,    -- fencing token, bumped on every claim
    trigger      smallint NOT NULL DEFAULT 0,  -- models.Trigger of the next attempt
    created_at   double precision NOT NULL,    -- the message's (stats and recover windows)
    updated_at   double precision NOT NULL,
    PRIMARY KEY (msg_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status IN (1, 3);
-- Without status (SQLite's migration 0002): every claim and completion changes the status.
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);
-- An endpoint's waiting work in due order: claims find other endpoints' work through it when
-- the oldest due tasks belong to endpoints that may not send now.
CREATE INDEX deliveries_waiting ON deliveries (endpoint_id, due_at) WHERE status IN (1, 3);

CREATE TABLE attempts (
    id                    text COLLATE "C" PRIMARY KEY,
    msg_id                text COLLATE "C" NOT NULL,
    endpoint_id           text COLLATE "C" NOT NULL,
    app_id                text COLLATE "C" NOT NULL,  -- no foreign key: attempts are history
    url                   text NOT NULL,
    status                smallint NOT NULL,
    response_status_code  integer NOT NULL,
    response              text NOT NULL,
    duration_ms           integer NOT NULL,
    trigger               smallint NOT NULL,
    created_at            double precision NOT NULL
);
CREATE INDEX attempts_msg ON attempts (msg_id, id);
CREATE INDEX attempts_endpoint ON attempts (endpoint_id, id);

-- Per-endpoint delivery state (circuit, failure run, rate-limit bucket), shared by every
-- process on the database; a row exists only while an endpoint is failing or rate limited.
-- Claims and completions lock these rows (FOR UPDATE) before reading them.
CREATE TABLE endpoint_health (
    endpoint_id    text COLLATE "C" PRIMARY KEY REFERENCES endpoints(id) ON DELETE CASCADE,
    failures       integer NOT NULL DEFAULT 0,            -- consecutive failed attempts
    failing_since  double precision,                      -- start of the run of failures
    circuit_open   boolean NOT NULL DEFAULT false,
    paused_until   double precision,                      -- open circuit: nothing before this
    cooldown       double precision NOT NULL DEFAULT 0,   -- seconds; the wait that set it
    probing        boolean NOT NULL DEFAULT false,        -- a probe is in flight
    tokens         double precision,                      -- rate-limit bucket; NULL = full
    tokens_at      double precision
);

CREATE TABLE idempotency (
    key          text COLLATE "C" PRIMARY KEY,  -- token id + ':' + the client's key
    fingerprint  text NOT NULL,                 -- hash of method, path and body
    state        smallint NOT NULL,             -- 0 pending, 1 done
    lock_until   double precision,
    status       integer,
    body         bytea,
    expires_at   double precision NOT NULL,
    owner        text                           -- the pending lock holder's token
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);

-- The readiness check's write probe (Store.probe_write): one row, rewritten at most every few
-- seconds by a process asked /health/ready while nothing else writes.
CREATE TABLE health_probe (
    id          smallint PRIMARY KEY CHECK (id = 1),
    written_at  double precision NOT NULL
);
