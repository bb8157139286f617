-- Payload retention, as SQLite's 0009: the cleaner finds payloads due for deletion through this
-- index; an expired payload is empty, so the index holds only the payloads still kept. Built in
-- the migration's transaction (CREATE INDEX CONCURRENTLY cannot run in one), so writes to
-- messages wait while it is built: a minute or so per ten million messages.
CREATE INDEX messages_expiry ON messages (expires_at) WHERE length(payload) > 0;
