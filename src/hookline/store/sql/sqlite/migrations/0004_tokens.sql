-- hookline SQLite schema, version 4.
-- When a token was last used, for `hookline token list`. API processes write it at most once a
-- minute per token (cache.LAST_USED_SECONDS), never per request; NULL = never used.
ALTER TABLE tokens ADD COLUMN last_used_at REAL;
