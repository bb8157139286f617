-- hookline SQLite schema, version 6.
-- Svix's MessageIn fields `tags` and `deliverAt`, kept so that a message reads back as it was
-- sent: tags is a JSON array or NULL (the message list filters on it with json_each);
-- deliver_at is REAL epoch seconds or NULL, and only its first delivery tasks' due_at is
-- derived from it (at insert time), so no index is needed on either.
ALTER TABLE messages ADD COLUMN tags TEXT;
ALTER TABLE messages ADD COLUMN deliver_at REAL;
