-- hookline SQLite schema, version 2.
-- The per-endpoint index no longer carries `status`: every claim and every completion changes a
-- delivery's status, and with status in the key each change moved the row within this index
-- as well. Stats and recover read an endpoint's rows in a time window and filter on status.
DROP INDEX deliveries_endpoint;
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at);
