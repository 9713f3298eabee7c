-- Many switches on one database (issue 17): every call, its event log, its messages and
-- its call-backs carry the name of the switch the call came through ([cluster] switch;
-- "default" for a single-switch install, and for the rows kept before this version).
-- The ring legs, alarms, holds and transfers belong to a call and are found through it.
-- One open call-back per (switch, phone, target): each switch places its own.
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE calls ADD COLUMN switch TEXT NOT NULL DEFAULT 'default';
ALTER TABLE call_events ADD COLUMN switch TEXT NOT NULL DEFAULT 'default';
ALTER TABLE messages ADD COLUMN switch TEXT NOT NULL DEFAULT 'default';
ALTER TABLE callbacks ADD COLUMN switch TEXT NOT NULL DEFAULT 'default';

CREATE INDEX calls_switch ON calls (switch, arrived_at);
CREATE INDEX messages_switch ON messages (switch, at);
CREATE INDEX callbacks_switch ON callbacks (switch, at);

DROP INDEX callbacks_one_open;
CREATE UNIQUE INDEX callbacks_one_open ON callbacks (switch, phone, target) WHERE status IN ('open', 'dialling');
