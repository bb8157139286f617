-- Retention and tracing, as in SQLite's 0007. Adding nullable columns without a default is a
-- catalog change only: no table rewrite, so this runs at once on a large messages table.
ALTER TABLE messages ADD COLUMN expires_at double precision;
ALTER TABLE messages ADD COLUMN trace_context text;
