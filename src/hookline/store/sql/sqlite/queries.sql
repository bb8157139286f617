-- Named queries of the SQLite store. Keep column lists in step with the row readers in
-- store/sqlite_rows.py (APP_COLUMNS, ENDPOINT_COLUMNS, ...).

-- name: org_by_name
SELECT id, name, created_at FROM orgs WHERE name = ?

-- name: org_insert
INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)

-- name: token_insert
INSERT INTO tokens (id, org_id, name, token_hash, created_at) VALUES (?, ?, ?, ?, ?)

-- name: token_by_hash
SELECT id, org_id, name, created_at FROM tokens WHERE token_hash = ?

-- name: token_count
SELECT count(*) FROM tokens

-- name: token_list
SELECT t.id, t.name, t.org_id, o.name, t.created_at, t.last_used_at
FROM tokens t JOIN orgs o ON o.id = t.org_id
ORDER BY t.created_at, t.id

-- name: token_delete
DELETE FROM tokens WHERE id = ?

-- name: token_touch
UPDATE tokens SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE id = ?

-- name: app_insert
INSERT INTO applications (id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at)
VALUES (:id, :org_id, :uid, :name, :throttle_rate, :metadata, :created_at, :updated_at)

-- name: app_update
UPDATE applications SET uid = :uid, name = :name, throttle_rate = :throttle_rate,
    metadata = :metadata, updated_at = :updated_at
WHERE id = :id AND org_id = :org_id

-- name: app_get
SELECT id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at
FROM applications WHERE org_id = ? AND (id = ? OR uid = ?)
ORDER BY id = ? DESC LIMIT 1

-- name: app_by_id
SELECT id, org_id, uid, name, throttle_rate, metadata, created_at, updated_at
FROM applications WHERE id = ?

-- name: attempts_delete_app
DELETE FROM attempts
WHERE app_id = :app_id
    AND EXISTS (SELECT 1 FROM applications WHERE id = :app_id AND org_id = :org_id)

-- name: app_delete
DELETE FROM applications WHERE org_id = ? AND id = ?

-- name: event_type_insert
INSERT INTO event_types (org_id, name, description, archived, deprecated, feature_flag, schemas,
    created_at, updated_at)
VALUES (:org_id, :name, :description, :archived, :deprecated, :feature_flag, :schemas,
    :created_at, :updated_at)

-- name: event_type_update
UPDATE event_types SET description = :description, archived = :archived,
    deprecated = :deprecated, feature_flag = :feature_flag, schemas = :schemas,
    updated_at = :updated_at
WHERE org_id = :org_id AND name = :name

-- name: event_type_get
SELECT org_id, name, description, archived, deprecated, feature_flag, schemas, created_at,
    updated_at
FROM event_types WHERE org_id = ? AND name = ?

-- name: endpoint_insert
INSERT INTO endpoints (id, app_id, uid, url, description, disabled, event_types, channels,
    rate_limit, throttle_rate, metadata, headers, keys, created_at, updated_at)
VALUES (:id, :app_id, :uid, :url, :description, :disabled, :event_types, :channels,
    :rate_limit, :throttle_rate, :metadata, :headers, :keys, :created_at, :updated_at)

-- name: endpoint_update
UPDATE endpoints SET uid = :uid, url = :url, description = :description, disabled = :disabled,
    event_types = :event_types, channels = :channels, rate_limit = :rate_limit,
    throttle_rate = :throttle_rate, metadata = :metadata, headers = :headers, keys = :keys,
    updated_at = :updated_at
WHERE id = :id AND app_id = :app_id

-- name: endpoint_get
SELECT id, app_id, uid, url, description, disabled, event_types, channels, rate_limit,
    throttle_rate, metadata, headers, keys, created_at, updated_at
FROM endpoints WHERE app_id = ? AND (id = ? OR uid = ?)
ORDER BY id = ? DESC LIMIT 1

-- name: endpoint_routes
SELECT id, disabled, event_types, channels FROM endpoints WHERE app_id = ?

-- name: endpoint_delete
DELETE FROM endpoints WHERE app_id = ? AND id = ?

-- name: endpoint_disable
UPDATE endpoints SET disabled = 1, updated_at = ? WHERE id = ? AND disabled = 0

-- name: endpoint_stats
SELECT status, count(*) FROM deliveries
WHERE endpoint_id = ? AND app_id = ? AND created_at >= ? AND created_at < ?
GROUP BY status

-- name: message_insert
INSERT INTO messages (id, app_id, event_type, event_id, channels, payload, created_at, tags,
    deliver_at, expires_at, trace_context)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)

-- name: message_event_id_exists
SELECT 1 FROM messages WHERE app_id = ? AND event_id = ?

-- name: message_get
SELECT id, app_id, event_type, event_id, channels, payload, created_at, tags, deliver_at,
    expires_at, trace_context
FROM messages WHERE app_id = ? AND (id = ? OR event_id = ?)
ORDER BY id = ? DESC LIMIT 1

-- name: delivery_insert
INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, lease, trigger,
    created_at, updated_at)
VALUES (?, ?, ?, 1, 0, ?, 0, 0, ?, ?)

-- Claim the oldest due tasks: fresh ones (pending and due) and orphaned ones (sending with an
-- expired lease). claim_lease then marks each one sending; bumping `lease` fences off a late
-- completion from the previous holder.
-- name: claim_select
SELECT msg_id, endpoint_id, attempts, lease, trigger, due_at FROM deliveries
WHERE status IN (1, 3) AND due_at <= :now
ORDER BY due_at LIMIT :limit

-- Endpoints that may send nothing now: circuit open and cooling down, or rate-limit bucket
-- below one token (keep in step with circuit.admits and ratelimit.allowance). The second
-- column says which (1: the circuit), for the deferral counts.
-- name: claim_blocked_endpoints
SELECT h.endpoint_id, h.circuit_open = 1 AND h.paused_until > :now
FROM endpoint_health h JOIN endpoints e ON e.id = h.endpoint_id
WHERE (h.circuit_open = 1 AND h.paused_until > :now)
    OR (h.tokens IS NOT NULL AND coalesce(e.rate_limit, e.throttle_rate) > 0
        AND h.tokens + max(0, :now - h.tokens_at) * coalesce(e.rate_limit, e.throttle_rate)
            < 0.9999)

-- How many of these endpoints' tasks fell due in (since, now] and are still waiting: run after
-- claim_lease, so what the claim handed out is no longer due. One range per endpoint on
-- deliveries_waiting, as long as the tasks that fell due since the claimer's last claim.
-- name: claim_deferred_count
SELECT endpoint_id, count(*) FROM deliveries
WHERE endpoint_id IN (
        SELECT id FROM endpoints
        WHERE id IN (SELECT value FROM json_each(:endpoints)) AND disabled = 0
    )
    AND status IN (1, 3) AND due_at > :since AND due_at <= :now
GROUP BY endpoint_id

-- The endpoints with waiting work and when their oldest task is due: a skip scan over
-- deliveries_waiting, one index seek per endpoint however many tasks each one has queued.
-- name: claim_waiting_endpoints
WITH RECURSIVE waiting(endpoint_id) AS (
    SELECT (SELECT min(endpoint_id) FROM deliveries WHERE status IN (1, 3))
    UNION ALL
    SELECT (SELECT min(endpoint_id) FROM deliveries
            WHERE status IN (1, 3) AND endpoint_id > waiting.endpoint_id)
    FROM waiting WHERE waiting.endpoint_id IS NOT NULL
)
SELECT endpoint_id,
    (SELECT min(due_at) FROM deliveries d
     WHERE d.endpoint_id = waiting.endpoint_id AND d.status IN (1, 3)) AS first_due
FROM waiting WHERE endpoint_id IS NOT NULL

-- name: claim_select_endpoint
SELECT msg_id, endpoint_id, attempts, lease, trigger, due_at FROM deliveries
WHERE endpoint_id = :endpoint_id AND status IN (1, 3) AND due_at <= :now
ORDER BY due_at LIMIT :limit

-- name: delivery_release
UPDATE deliveries SET status = 1, due_at = :due_at, lease = lease + 1, updated_at = :now
WHERE msg_id = :msg_id AND endpoint_id = :endpoint_id AND lease = :lease AND status = 3

-- name: due_count
SELECT count(*) FROM (
    SELECT 1 FROM deliveries WHERE status IN (1, 3) AND due_at <= :now LIMIT :cap
)

-- name: health_upsert
INSERT INTO endpoint_health (endpoint_id, failures, failing_since, circuit_open, paused_until,
    cooldown, probing, tokens, tokens_at)
VALUES (:endpoint_id, :failures, :failing_since, :circuit_open, :paused_until, :cooldown,
    :probing, :tokens, :tokens_at)
ON CONFLICT (endpoint_id) DO UPDATE SET failures = :failures, failing_since = :failing_since,
    circuit_open = :circuit_open, paused_until = :paused_until, cooldown = :cooldown,
    probing = :probing, tokens = :tokens, tokens_at = :tokens_at

-- The gauges' endpoint counts (Store.endpoint_summary): endpoint_health holds only failing or
-- rate-limited endpoints (CROSS JOIN: SQLite then reads it first, whatever its statistics say);
-- the disabled ones are counted over endpoints, which has no index on disabled (the table is
-- small next to deliveries, and this runs every few seconds).
-- name: endpoint_summary
SELECT
    (SELECT count(*) FROM endpoint_health h CROSS JOIN endpoints e ON e.id = h.endpoint_id
     WHERE h.circuit_open = 1 AND e.disabled = 0),
    (SELECT count(*) FROM endpoints WHERE disabled = 1)

-- name: health_get
SELECT endpoint_id, failures, failing_since, circuit_open, paused_until, cooldown, probing,
    tokens, tokens_at
FROM endpoint_health WHERE endpoint_id = ?

-- name: health_reset
DELETE FROM endpoint_health WHERE endpoint_id = ?

-- name: endpoint_disabled_get
SELECT disabled FROM endpoints WHERE id = ? AND app_id = ?

-- name: claim_lease
UPDATE deliveries SET status = 3, due_at = ?, lease = lease + 1, updated_at = ?
WHERE msg_id = ? AND endpoint_id = ?

-- name: delivery_fail_disabled_unleased
UPDATE deliveries SET status = 2, due_at = NULL, lease = lease + 1, updated_at = ?
WHERE msg_id = ? AND endpoint_id = ? AND lease = ?

-- name: delivery_complete
UPDATE deliveries SET status = :status, attempts = attempts + 1, due_at = :due_at, trigger = 0,
    updated_at = :now
WHERE msg_id = :msg_id AND endpoint_id = :endpoint_id AND lease = :lease AND status = 3

-- name: attempt_insert
INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, response_status_code,
    response, duration_ms, trigger, created_at)
VALUES (:id, :msg_id, :endpoint_id, :app_id, :url, :status, :response_status_code, :response,
    :duration_ms, :trigger, :created_at)

-- name: next_due
SELECT min(due_at) FROM deliveries WHERE status IN (1, 3)

-- What a resend needs of the message: its creation time, and whether its payload is still kept.
-- name: message_resendable
SELECT created_at, length(payload) > 0 FROM messages WHERE app_id = ? AND id = ?

-- Readiness (Store.stalled_since): the earliest due time among endpoints whose waiting work
-- nothing explains. Left out: an endpoint with an open circuit or a rate limit (its backlog
-- waits by design), and one with a delivery in flight under a live lease (it is being served,
-- at its concurrency). The same skip scan as claim_waiting_endpoints, one seek per endpoint
-- with waiting work; the in-flight test reads only the rows leased until :leased_until.
-- name: stalled_since
WITH RECURSIVE waiting(endpoint_id) AS (
    SELECT (SELECT min(endpoint_id) FROM deliveries WHERE status IN (1, 3))
    UNION ALL
    SELECT (SELECT min(endpoint_id) FROM deliveries
            WHERE status IN (1, 3) AND endpoint_id > waiting.endpoint_id)
    FROM waiting WHERE waiting.endpoint_id IS NOT NULL
)
SELECT min(first_due) FROM (
    SELECT (SELECT min(d.due_at) FROM deliveries d
            WHERE d.endpoint_id = w.endpoint_id AND d.status IN (1, 3)) AS first_due
    FROM waiting w
    JOIN endpoints e ON e.id = w.endpoint_id
    LEFT JOIN endpoint_health h ON h.endpoint_id = w.endpoint_id
    WHERE coalesce(e.rate_limit, e.throttle_rate, 0) <= 0
        AND coalesce(h.circuit_open, 0) = 0
        AND NOT EXISTS (
            SELECT 1 FROM deliveries s
            WHERE s.endpoint_id = w.endpoint_id AND s.status IN (1, 3)
                AND s.due_at > :now AND s.due_at <= :leased_until AND s.status = 3)
)
WHERE first_due <= :now

-- The write probe's row (readiness); keep in step with postgres/queries.sql.
-- name: health_probe
INSERT INTO health_probe (id, written_at) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at

-- name: endpoint_exists
SELECT 1 FROM endpoints WHERE app_id = ? AND id = ?

-- name: delivery_requeue
INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, due_at, lease, trigger,
    created_at, updated_at)
VALUES (:msg_id, :endpoint_id, :app_id, 1, 0, :now, 1, 1, :created_at, :now)
ON CONFLICT (msg_id, endpoint_id) DO UPDATE SET status = 1, attempts = 0, due_at = :now,
    lease = lease + 1, trigger = 1, updated_at = :now

-- name: delivery_recover
UPDATE deliveries SET status = 1, attempts = 0, due_at = :now, lease = lease + 1, trigger = 1,
    updated_at = :now
WHERE endpoint_id = :endpoint_id AND app_id = :app_id AND status = 2
    AND created_at >= :since AND created_at < :until
    AND EXISTS (SELECT 1 FROM messages m WHERE m.id = deliveries.msg_id AND length(m.payload) > 0)

-- name: attempt_get
SELECT id, msg_id, endpoint_id, app_id, url, status, response_status_code, response,
    duration_ms, trigger, created_at
FROM attempts WHERE app_id = ? AND msg_id = ? AND id = ?

-- name: idempotency_get
SELECT fingerprint, state, lock_until, status, body, expires_at FROM idempotency WHERE key = ?

-- Taking a key (new or expired) hands it to a fresh owner token: the previous owner's
-- idempotency_finish_owned no longer matches.
-- name: idempotency_lock
INSERT INTO idempotency (key, fingerprint, state, lock_until, expires_at, owner)
VALUES (:key, :fingerprint, 0, :lock_until, :expires_at, :owner)
ON CONFLICT (key) DO UPDATE SET fingerprint = :fingerprint, state = 0, lock_until = :lock_until,
    status = NULL, body = NULL, expires_at = :expires_at, owner = :owner

-- An answer written without a lock (no owner to check).
-- name: idempotency_finish
INSERT INTO idempotency (key, fingerprint, state, status, body, expires_at)
VALUES (:key, '', 1, :status, :body, :expires_at)
ON CONFLICT (key) DO UPDATE SET state = 1, lock_until = NULL, status = :status, body = :body,
    expires_at = :expires_at, owner = NULL

-- The owner's answer: no row changes (the caller refuses the write) unless :owner still holds
-- the pending key. Keep in step with MemoryStore._check_owner.
-- name: idempotency_finish_owned
UPDATE idempotency SET state = 1, lock_until = NULL, owner = NULL, status = :status, body = :body,
    expires_at = :expires_at
WHERE key = :key AND state = 0 AND owner = :owner

-- name: idempotency_release
DELETE FROM idempotency WHERE key = ? AND state = 0

-- name: idempotency_release_owned
DELETE FROM idempotency WHERE key = ? AND state = 0 AND owner = ?

-- Finished answers past their 24 h, and locks of requests that died (expires_at = lock_until).
-- name: idempotency_purge
DELETE FROM idempotency WHERE expires_at <= ?

-- Retention (store/sqlite_retention.py): each statement touches at most :limit messages, and
-- ids come in as one JSON array. "Busy" (keep in step with MemoryStore._busy): a delivery
-- pending or being sent; a payload is never taken from under one.

-- Messages written before retention was enforced get their expiry from the setting.
-- name: retention_fill
UPDATE messages SET expires_at = created_at + :seconds
WHERE rowid IN (
    SELECT rowid FROM messages WHERE expires_at IS NULL AND length(payload) > 0 LIMIT :limit
)

-- The messages_expiry index in expires_at order (its WHERE is repeated so that it is used).
-- name: retention_due
SELECT id, expires_at FROM messages
WHERE length(payload) > 0 AND expires_at <= :now AND expires_at > :after
ORDER BY expires_at LIMIT :limit

-- name: retention_expire
UPDATE messages SET payload = x''
WHERE id IN (SELECT value FROM json_each(:ids)) AND length(payload) > 0
    AND NOT EXISTS (
        SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 3)
    )
RETURNING id

-- name: retention_expunge_attempts
UPDATE attempts SET response = :response WHERE msg_id IN (SELECT value FROM json_each(:ids))

-- Old messages in id order (ids sort by creation time), from the primary key.
-- name: prune_candidates
SELECT id FROM messages
WHERE id > :after AND id < :bound AND created_at < :before
ORDER BY id LIMIT :limit

-- Deliveries go by ON DELETE CASCADE. With :strict unset (--include-pending) only a delivery
-- being sent under a running lease keeps its message.
-- name: prune_delete
DELETE FROM messages
WHERE id IN (SELECT value FROM json_each(:ids))
    AND NOT EXISTS (
        SELECT 1 FROM deliveries d WHERE d.msg_id = messages.id AND d.status IN (1, 3)
            AND (:strict OR (d.status = 3 AND d.due_at > :now))
    )
RETURNING id

-- Attempts carry no foreign key (history outlives endpoints): removed with their message here.
-- name: prune_attempts
DELETE FROM attempts WHERE msg_id IN (SELECT value FROM json_each(:ids))

-- name: prune_count
SELECT count(*) FROM messages WHERE id < :bound AND created_at < :before
