-- Retention and tracing. expires_at: REAL epoch seconds after which the payload and the
-- response bodies of the message's attempts are deleted (creation plus payloadRetentionPeriod
-- days, or payload_retention_days); NULL for rows written before this migration, which the
-- cleaner treats by their created_at. trace_context: the W3C traceparent of the ingest span,
-- NULL when tracing is off.
ALTER TABLE messages ADD COLUMN expires_at REAL;
ALTER TABLE messages ADD COLUMN trace_context TEXT;
