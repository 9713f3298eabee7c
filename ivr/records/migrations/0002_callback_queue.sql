-- Call-backs the switch places itself (issue 18). The callbacks table becomes the one
-- durable call-back store: one open call-back per (phone, target); a second request
-- updates it and keeps the first call's time as its place in line. Every attempt is
-- kept in callback_attempts. Portable SQL (SQLite and PostgreSQL).

ALTER TABLE callbacks ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE callbacks ADD COLUMN held_by TEXT;
ALTER TABLE callbacks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE callbacks ADD COLUMN next_attempt DOUBLE PRECISION;
ALTER TABLE callbacks ADD COLUMN outcome TEXT;
ALTER TABLE callbacks ADD COLUMN requests INTEGER NOT NULL DEFAULT 1;
ALTER TABLE callbacks ADD COLUMN last_request DOUBLE PRECISION;
ALTER TABLE callbacks ADD COLUMN updated_at DOUBLE PRECISION;

UPDATE callbacks SET held_by = for_agent, next_attempt = at, updated_at = at, last_request = at;

-- Requests kept before this version may repeat a (phone, target): the earliest stays.
UPDATE callbacks SET status = 'merged'
 WHERE status = 'open' AND EXISTS (
   SELECT 1 FROM callbacks c2
    WHERE c2.phone = callbacks.phone AND c2.target = callbacks.target AND c2.status = 'open'
      AND (c2.at < callbacks.at OR (c2.at = callbacks.at AND c2.callback_id < callbacks.callback_id)));

CREATE UNIQUE INDEX callbacks_one_open ON callbacks (phone, target) WHERE status IN ('open', 'dialling');
CREATE INDEX callbacks_due ON callbacks (status, next_attempt);

CREATE TABLE callback_attempts (
    attempt_id  TEXT PRIMARY KEY,
    callback_id TEXT NOT NULL REFERENCES callbacks (callback_id),
    started_at  DOUBLE PRECISION NOT NULL,
    ended_at    DOUBLE PRECISION,
    agent       TEXT,
    outcome     TEXT,
    burned      INTEGER
);
CREATE INDEX callback_attempts_cb ON callback_attempts (callback_id, started_at);
