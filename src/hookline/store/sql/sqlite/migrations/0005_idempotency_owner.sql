-- hookline SQLite schema, version 5.
-- The token of the request holding a pending idempotency key. Taking over an expired lock
-- writes a new token, and an owner's answer (and the message committed with it) is written only
-- while its token still holds the key, so a stalled owner cannot commit a second message.
-- NULL on finished rows and on locks taken before this version (their owners check nothing).
ALTER TABLE idempotency ADD COLUMN owner TEXT;
