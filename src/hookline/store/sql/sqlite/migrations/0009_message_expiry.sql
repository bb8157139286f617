-- Payload retention: the cleaner (retention.py) finds the messages whose payload is due for
-- deletion through this index, in expires_at order. Partial: an expired payload is empty
-- (store/base.py EXPIRED_PAYLOAD), so a message leaves the index once its payload is gone and
-- the index holds only the payloads still kept. Rows with a NULL expires_at (written before
-- retention was enforced) sit at its start, where the cleaner gives them one.
CREATE INDEX messages_expiry ON messages (expires_at) WHERE length(payload) > 0;
