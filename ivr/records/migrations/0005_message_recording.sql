-- Messages left by held callers (issue 15): the call records are their one store (the
-- hold feature kept a JSON file beside each recording before). The recording stays a
-- file (column recording); these are what the JSON file held that the table lacked.
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE messages ADD COLUMN recorded INTEGER;
ALTER TABLE messages ADD COLUMN held_seconds DOUBLE PRECISION;
