-- Named queries of the PostgreSQL store. Keep column lists in step with the row readers in
-- store/sqlite_rows.py (APP_COLUMNS, ENDPOINT_COLUMNS, ...) and the argument builders in
-- store/postgres_rows.py; keep the claim and idempotency queries in step with sql/sqlite.

-- name: migrations_table
CREATE TABLE IF NOT EXISTS hookline_migrations (
    version     integer PRIMARY KEY,
    applied_at  double precision NOT NULL
)

-- name: migrations_lock
SELECT pg_advisory_xact_lock(7262616001)

-- name: migrations_current
SELECT coalesce(max(version), 0) FROM hookline_migrations

-- name: migration_done
INSERT INTO hookline_migrations (version, applied_at)
VALUES ($1, extract(epoch FROM clock_timestamp())::float8)

-- name: clock
SELECT extract(epoch FROM clock_timestamp())::float8

-- name: notify
SELECT pg_notify('hookline_work', $1)

-- name: org_by_name
SELECT id, name, created_at FROM orgs WHERE name = $1

-- name: org_insert
INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)
ON CONFLICT (name) DO NOTHING

-- name: token_insert
INSERT INTO tokens (id, org_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)

-- name: token_by_hash
SELECT id, org_id, name, created_at FROM tokens WHERE token_hash = $1

-- name: token_count
SELECT count(*) FROM tokens

-- name: token_list
SELECT t.id, t.name, t.org_id, o.name, t.created_at, t.last_used_at
FROM tokens t JOIN orgs o ON o.id = t.org_id
ORDER BY t.created_at, t.id

-- name: token_delete
DELETE FROM tokens WHERE id = $1

-- name: token_touch
UPDATE tokens SET last_used_at = greatest(coalesce(last_used_at, 0), $2) WHERE id = $1

-- name: app_insert
INSERT INTO applications (id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)

-- name: app_update
UPDATE applications SET uid = $3, name = $4, throttle_rate = $5, metadata = $6, updated_at = $7
WHERE id = $1 AND org_id = $2

-- name: app_get
SELECT id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at
FROM applications WHERE org_id = $1 AND (id = $2 OR uid = $2)
ORDER BY (id = $2) DESC LIMIT 1

-- name: app_by_id
SELECT id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at
FROM applications WHERE id = $1

-- name: attempts_delete_app
DELETE FROM attempts
WHERE app_id = $1 AND EXISTS (SELECT 1 FROM applications WHERE id = $1 AND org_id = $2)

-- name: app_delete
DELETE FROM applications WHERE org_id = $2 AND id = $1

-- name: event_type_insert
INSERT INTO event_types (org_id, name, description, archived, deprecated, feature_flag, schemas,
    created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- name: event_type_update
UPDATE event_types SET description = $3, archived = $4, deprecated = $5, feature_flag = $6,
    schemas = $7, updated_at = $8
WHERE org_id = $1 AND name = $2

-- name: event_type_get
SELECT org_id, name, description, archived, deprecated, feature_flag, schemas, created_at,
    updated_at
FROM event_types WHERE org_id = $1 AND name = $2

-- name: endpoint_insert
INSERT INTO endpoints (id, app_id, uid, url, description, disabled, event_types, channels,
    rate_limit, throttle_rate, metadata, headers, keys, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)

-- name: endpoint_update
UPDATE endpoints SET uid = $3, url = $4, description = $5, disabled = $6, event_types = $7,
    channels = $8, rate_limit = $9, throttle_rate = $10, metadata = $11, headers = $12,
    keys = $13, updated_at = $14
WHERE id = $1 AND app_id = $2

-- name: endpoint_get
SELECT id, app_id, uid, url, description, disabled, event_types, channels, rate_limit,
    throttle_rate, metadata, headers, keys, created_at, updated_at
FROM endpoints WHERE app_id = $1 AND (id = $2 OR uid = $2)
ORDER BY (id = $2) DESC LIMIT 1

-- The routing columns of an app's endpoints, with the app itself locked against deletion
-- (FOR KEY SHARE, what the foreign key check would take) until the message commits. No row:
-- the app is gone; one row with a NULL id: it has no endpoints.
-- name: app_routes
SELECT e.id, e.disabled, e.event_types, e.channels
FROM applications a LEFT JOIN endpoints e ON e.app_id = a.id
WHERE a.id = $1
FOR KEY SHARE OF a

-- name: endpoint_delete
DELETE FROM endpoints WHERE app_id = $1 AND id = $2

-- name: endpoint_disable
UPDATE endpoints SET disabled = true, updated_at = $1 WHERE id = $2 AND NOT disabled

-- name: endpoint_disabled_get
SELECT disabled FROM endpoints WHERE id = $1 AND app_id = $2 FOR UPDATE

-- name: endpoint_states
SELECT id, disabled FROM endpoints WHERE id = ANY($1::text[])

-- name: endpoint_stats
SELECT status, count(*) FROM deliveries
WHERE endpoint_id = $1 AND app_id = $2 AND created_at >= $3 AND created_at < $4
GROUP BY status

-- The message and its delivery tasks in one statement. Nothing is written when the message
-- conflicts (its id, or an eventId the app already has): then inserted is 0.
-- name: message_insert
WITH m AS (
    INSERT INTO messages (id, app_id, event_type, event_id, channels, payload, created_at, tags,
        deliver_at, expires_at, trace_context)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $13)
    ON CONFLICT DO NOTHING
    RETURNING id
), d AS (
    INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, lease,
        trigger, created_at, updated_at)
    SELECT m.id, t.endpoint_id, $2, 1, 0, $10, 0, 0, $7, $7
    FROM m CROSS JOIN unnest($11::text[]) AS t(endpoint_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM m) AS inserted, (SELECT count(*) FROM d) AS tasks

-- name: message_get
SELECT id, app_id, event_type, event_id, channels, payload, created_at, tags, deliver_at,
    expires_at, trace_context
FROM messages WHERE app_id = $1 AND (id = $2 OR event_id = $2)
ORDER BY (id = $2) DESC LIMIT 1

-- Claim the oldest due tasks: fresh ones (pending and due) and orphaned ones (sending with an
-- expired lease). Rows another claimer holds are skipped, not waited for; claim_lease then
-- marks each one sending, and bumping `lease` fences off the previous holder's completion.
-- name: claim_select
SELECT msg_id, endpoint_id, attempts, lease, trigger, due_at FROM deliveries
WHERE status IN (1, 3) AND due_at <= $1
ORDER BY due_at, msg_id, endpoint_id LIMIT $2
FOR UPDATE SKIP LOCKED

-- Endpoints that may send nothing now: circuit open and cooling down, or rate-limit bucket
-- below one token (keep in step with circuit.admits and ratelimit.allowance). Read without
-- locks: it only picks the claim's path; the locked rows decide what is handed out.
-- The second column says which (true: the circuit), for the deferral counts.
-- name: claim_blocked_endpoints
SELECT h.endpoint_id, h.circuit_open AND h.paused_until > $1
FROM endpoint_health h JOIN endpoints e ON e.id = h.endpoint_id
WHERE (h.circuit_open AND h.paused_until > $1)
    OR (h.tokens IS NOT NULL AND coalesce(e.rate_limit, e.throttle_rate) > 0
        AND h.tokens + greatest(0, $1 - h.tokens_at) * coalesce(e.rate_limit, e.throttle_rate)
            < 0.9999)

-- How many of these endpoints' tasks fell due in (since, now] and are still waiting: run after
-- claim_lease, so what the claim handed out is no longer due (keep in step with sqlite's).
-- name: claim_deferred_count
SELECT endpoint_id, count(*) FROM deliveries
WHERE endpoint_id IN (SELECT id FROM endpoints WHERE id = ANY($1::text[]) AND NOT disabled)
    AND status IN (1, 3) AND due_at > $2 AND due_at <= $3
GROUP BY endpoint_id

-- The endpoints with waiting work and when their oldest task is due: a loose index scan over
-- deliveries_waiting, one index seek per endpoint however many tasks each one has queued.
-- name: claim_waiting_endpoints
WITH RECURSIVE waiting(endpoint_id) AS (
    SELECT (SELECT min(endpoint_id) FROM deliveries WHERE status IN (1, 3))
    UNION ALL
    SELECT (SELECT min(d.endpoint_id) FROM deliveries d
            WHERE d.status IN (1, 3) AND d.endpoint_id > w.endpoint_id)
    FROM waiting w WHERE w.endpoint_id IS NOT NULL
)
SELECT w.endpoint_id,
    (SELECT min(d.due_at) FROM deliveries d
     WHERE d.endpoint_id = w.endpoint_id AND d.status IN (1, 3)) AS first_due
FROM waiting w WHERE w.endpoint_id IS NOT NULL

-- name: claim_select_endpoint
SELECT msg_id, endpoint_id, attempts, lease, trigger, due_at FROM deliveries
WHERE endpoint_id = $1 AND status IN (1, 3) AND due_at <= $2
ORDER BY due_at, msg_id LIMIT $3
FOR UPDATE SKIP LOCKED

-- name: claim_lease
UPDATE deliveries d SET status = 3, due_at = $1, lease = d.lease + 1, updated_at = $2
FROM unnest($3::text[], $4::text[]) AS t(msg_id, endpoint_id)
WHERE d.msg_id = t.msg_id AND d.endpoint_id = t.endpoint_id

-- name: delivery_fail_disabled_unleased
UPDATE deliveries d SET status = 2, due_at = NULL, lease = d.lease + 1, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::bigint[]) AS t(msg_id, endpoint_id, lease)
WHERE d.msg_id = t.msg_id AND d.endpoint_id = t.endpoint_id AND d.lease = t.lease

-- name: delivery_release
UPDATE deliveries d SET status = 1, due_at = t.due_at, lease = d.lease + 1, updated_at = $1
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::float8[])
    AS t(msg_id, endpoint_id, lease, due_at)
WHERE d.msg_id = t.msg_id AND d.endpoint_id = t.endpoint_id AND d.lease = t.lease
    AND d.status = 3

-- name: due_count
SELECT count(*) FROM (
    SELECT 1 FROM deliveries WHERE status IN (1, 3) AND due_at <= $1 LIMIT $2
) AS due

-- A row for each rate-limited (or failing) endpoint that still exists, so that the claim or
-- completion can lock it: a bucket that has no row yet would otherwise be spent twice by two
-- claimers. Rows left in the default state are deleted again in the same transaction.
-- name: health_ensure
INSERT INTO endpoint_health (endpoint_id)
SELECT id FROM endpoints WHERE id = ANY($1::text[]) ORDER BY id
ON CONFLICT (endpoint_id) DO NOTHING

-- Locked in id order, so that two transactions locking overlapping sets do not deadlock.
-- name: health_lock
SELECT endpoint_id, failures, failing_since, circuit_open, paused_until, cooldown, probing,
    tokens, tokens_at
FROM endpoint_health WHERE endpoint_id = ANY($1::text[])
ORDER BY endpoint_id
FOR UPDATE

-- name: health_upsert
INSERT INTO endpoint_health (endpoint_id, failures, failing_since, circuit_open, paused_until,
    cooldown, probing, tokens, tokens_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (endpoint_id) DO UPDATE SET failures = EXCLUDED.failures,
    failing_since = EXCLUDED.failing_since, circuit_open = EXCLUDED.circuit_open,
    paused_until = EXCLUDED.paused_until, cooldown = EXCLUDED.cooldown,
    probing = EXCLUDED.probing, tokens = EXCLUDED.tokens, tokens_at = EXCLUDED.tokens_at

-- The gauges' endpoint counts (Store.endpoint_summary): endpoint_health holds only failing or
-- rate-limited endpoints; the disabled ones are counted over endpoints, which has no index on
-- disabled (the table is small next to deliveries, and this runs every few seconds).
-- name: endpoint_summary
SELECT
    (SELECT count(*) FROM endpoint_health h JOIN endpoints e ON e.id = h.endpoint_id
     WHERE h.circuit_open AND NOT e.disabled),
    (SELECT count(*) FROM endpoints WHERE disabled)

-- name: health_get
SELECT endpoint_id, failures, failing_since, circuit_open, paused_until, cooldown, probing,
    tokens, tokens_at
FROM endpoint_health WHERE endpoint_id = $1

-- name: health_reset
DELETE FROM endpoint_health WHERE endpoint_id = ANY($1::text[])

-- name: delivery_complete
UPDATE deliveries SET status = $1, attempts = attempts + 1, due_at = $2, trigger = 0,
    updated_at = $3
WHERE msg_id = $4 AND endpoint_id = $5 AND lease = $6 AND status = 3

-- name: attempt_insert
INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, response_status_code,
    response, duration_ms, trigger, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)

-- name: next_due
SELECT min(due_at) FROM deliveries WHERE status IN (1, 3)

-- What a resend needs of the message: its creation time, and whether its payload is still kept.
-- FOR SHARE until the resend commits: the cleaner and prune lock the messages they change
-- (SKIP LOCKED), so neither can expire or delete this one between the check and the new task.
-- name: message_resendable
SELECT created_at, length(payload) > 0 FROM messages WHERE app_id = $1 AND id = $2 FOR SHARE

-- Readiness (Store.stalled_since); keep in step with sqlite/queries.sql, which says why.
-- name: stalled_since
WITH RECURSIVE waiting(endpoint_id) AS (
    SELECT (SELECT min(endpoint_id) FROM deliveries WHERE status IN (1, 3))
    UNION ALL
    SELECT (SELECT min(d.endpoint_id) FROM deliveries d
            WHERE d.status IN (1, 3) AND d.endpoint_id > w.endpoint_id)
    FROM waiting w WHERE w.endpoint_id IS NOT NULL
)
SELECT min(first_due) FROM (
    SELECT (SELECT min(d.due_at) FROM deliveries d
            WHERE d.endpoint_id = w.endpoint_id AND d.status IN (1, 3)) AS first_due
    FROM waiting w
    JOIN endpoints e ON e.id = w.endpoint_id
    LEFT JOIN endpoint_health h ON h.endpoint_id = w.endpoint_id
    WHERE coalesce(e.rate_limit, e.throttle_rate, 0) <= 0
        AND NOT coalesce(h.circuit_open, false)
        AND NOT EXISTS (
            SELECT 1 FROM deliveries s
            WHERE s.endpoint_id = w.endpoint_id AND s.status IN (1, 3)
                AND s.due_at > $1 AND s.due_at <= $2 AND s.status = 3)
) AS heads
WHERE first_due <= $1

-- name: health_probe
INSERT INTO health_probe (id, written_at) VALUES (1, $1)
ON CONFLICT (id) DO UPDATE SET written_at = EXCLUDED.written_at

-- name: endpoint_exists
SELECT 1 FROM endpoints WHERE app_id = $1 AND id = $2

-- name: delivery_requeue
INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, lease, trigger,
    created_at, updated_at)
VALUES ($1, $2, $3, 1, 0, $4, 1, 1, $5, $4)
ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = 1, attempts = 0, due_at = $4,
    lease = deliveries.lease + 1, trigger = 1, updated_at = $4

-- Only messages whose payload is still kept, share-locked as message_resendable does.
-- name: delivery_recover
WITH live AS (
    SELECT m.id FROM deliveries d JOIN messages m ON m.id = d.msg_id
    WHERE d.endpoint_id = $2 AND d.app_id = $1 AND d.status = 2
        AND d.created_at >= $3 AND d.created_at < $4 AND length(m.payload) > 0
    FOR SHARE OF m
)
UPDATE deliveries SET status = 1, attempts = 0, due_at = $5, lease = lease + 1, trigger = 1,
    updated_at = $5
WHERE endpoint_id = $2 AND app_id = $1 AND status = 2 AND msg_id IN (SELECT id FROM live)

-- name: attempt_get
SELECT id, msg_id, endpoint_id, app_id, url, status, response_status_code, response,
    duration_ms, trigger, created_at
FROM attempts WHERE app_id = $1 AND msg_id = $2 AND id = $3

-- name: idempotency_get
SELECT fingerprint, state, lock_until, status, body, expires_at FROM idempotency WHERE key = $1

-- Take a key that is new, past its replay window or lock, or a lock whose owner's lock ran out
-- (keep in step with postgres_rows.idempotency_seen): one statement, so two requests racing
-- for a new key cannot both own it. No row returned: somebody else holds or answered it (the
-- conflicting row stays locked until the transaction ends, so a re-read sees why).
-- name: idempotency_lock
INSERT INTO idempotency (key, fingerprint, state, lock_until, expires_at, owner)
VALUES ($1, $2, 0, $3, $3, $4)
ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, state = 0,
    lock_until = EXCLUDED.lock_until, status = NULL, body = NULL,
    expires_at = EXCLUDED.expires_at, owner = EXCLUDED.owner
WHERE idempotency.expires_at <= $5
    OR (idempotency.state = 0 AND idempotency.fingerprint = EXCLUDED.fingerprint
        AND (idempotency.lock_until IS NULL OR idempotency.lock_until <= $5))
RETURNING owner

-- An answer written without a lock (no owner to check).
-- name: idempotency_finish
INSERT INTO idempotency (key, fingerprint, state, status, body, expires_at)
VALUES ($1, '', 1, $2, $3, $4)
ON CONFLICT (key) DO UPDATE SET state = 1, lock_until = NULL, status = EXCLUDED.status,
    body = EXCLUDED.body, expires_at = EXCLUDED.expires_at, owner = NULL

-- The owner's answer: no row changes (the caller refuses the write) unless $5 still holds the
-- pending key. Keep in step with MemoryStore._check_owner.
-- name: idempotency_finish_owned
UPDATE idempotency SET state = 1, lock_until = NULL, owner = NULL, status = $2, body = $3,
    expires_at = $4
WHERE key = $1 AND state = 0 AND owner = $5

-- Whether $2 still holds the pending key, locking it until the message commits: the check
-- comes before the message is written, so a refused owner writes nothing at all.
-- name: idempotency_owned
SELECT 1 FROM idempotency WHERE key = $1 AND state = 0 AND owner = $2 FOR UPDATE

-- name: idempotency_release
DELETE FROM idempotency WHERE key = $1 AND state = 0

-- name: idempotency_release_owned
DELETE FROM idempotency WHERE key = $1 AND state = 0 AND owner = $2

-- Finished answers past their 24 h, and locks of requests that died (expires_at = lock_until).
-- name: idempotency_purge
DELETE FROM idempotency WHERE expires_at <= $1

-- Retention (store/postgres_retention.py): each statement touches at most the batch's messages.
-- The candidates are locked first (SKIP LOCKED: a resend holding one, or another cleaner, is
-- passed over); the change that follows is a statement of its own, so its view of the
-- deliveries is taken after the locks are held. "Busy" (keep in step with MemoryStore._busy):
-- a delivery pending or being sent; a payload is never taken from under one.

-- Messages written before retention was enforced get their expiry from the setting.
-- name: retention_fill
UPDATE messages SET expires_at = created_at + $1
WHERE id = ANY(ARRAY(
    SELECT id FROM messages WHERE expires_at IS NULL AND length(payload) > 0
    LIMIT $2 FOR UPDATE SKIP LOCKED
))

-- The messages_expiry index in expires_at order (its WHERE is repeated so that it is used).
-- name: retention_due
SELECT id, expires_at FROM messages
WHERE length(payload) > 0 AND expires_at <= $1 AND expires_at > $2
ORDER BY expires_at LIMIT $3
FOR UPDATE SKIP LOCKED

-- name: retention_expire
UPDATE messages m SET payload = ''::bytea
WHERE m.id = ANY($1::text[]) AND length(m.payload) > 0
    AND NOT EXISTS (
        SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.status IN (1, 3)
    )
RETURNING m.id

-- name: retention_expunge_attempts
UPDATE attempts SET response = $2 WHERE msg_id = ANY($1::text[])

-- Old messages in id order (ids sort by creation time), from the primary key.
-- name: prune_candidates
SELECT id FROM messages
WHERE id > $1 AND id < $2 AND created_at < $3
ORDER BY id LIMIT $4
FOR UPDATE SKIP LOCKED

-- Deliveries go by ON DELETE CASCADE. With $2 false (--include-pending) only a delivery being
-- sent under a running lease keeps its message.
-- name: prune_delete
DELETE FROM messages m
WHERE m.id = ANY($1::text[])
    AND NOT EXISTS (
        SELECT 1 FROM deliveries d WHERE d.msg_id = m.id AND d.status IN (1, 3)
            AND ($2 OR (d.status = 3 AND d.due_at > $3))
    )
RETURNING m.id

-- Attempts carry no foreign key (history outlives endpoints): removed with their message here.
-- name: prune_attempts
DELETE FROM attempts WHERE msg_id = ANY($1::text[])

-- name: prune_count
SELECT count(*) FROM messages WHERE id < $1 AND created_at < $2
