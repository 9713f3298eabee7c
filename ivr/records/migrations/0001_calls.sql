-- Call records: one row per call (keyed by the caller channel's Linkedid), the raw event
-- log, and one table per thing a call can have several of. Portable SQL (SQLite and
-- PostgreSQL): text ids made by the controller, times as seconds since the epoch,
-- booleans as 0/1 integers.

CREATE TABLE calls (
    call_id        TEXT PRIMARY KEY,
    arrived_at     DOUBLE PRECISION NOT NULL,
    caller         TEXT,
    channel        TEXT,
    greeting       TEXT,
    holiday        TEXT,
    silent_stage   TEXT,
    state          TEXT NOT NULL,
    state_since    DOUBLE PRECISION NOT NULL,
    agent          TEXT,
    rings          INTEGER,
    answered_at    DOUBLE PRECISION,
    within_three   INTEGER,
    hold_count     INTEGER NOT NULL DEFAULT 0,
    hold_seconds   DOUBLE PRECISION NOT NULL DEFAULT 0,
    transfer_state TEXT,
    hung_up_first  TEXT,
    hangup_cause   TEXT,
    ended_at       DOUBLE PRECISION,
    duration       DOUBLE PRECISION,
    updated_at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX calls_arrived ON calls (arrived_at);
CREATE INDEX calls_agent ON calls (agent);
CREATE INDEX calls_open ON calls (ended_at);

CREATE TABLE call_events (
    event_id TEXT PRIMARY KEY,
    call_id  TEXT NOT NULL REFERENCES calls (call_id),
    kind     TEXT NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    data     TEXT NOT NULL
);
CREATE INDEX call_events_call ON call_events (call_id, at);

CREATE TABLE ring_legs (
    leg_id       TEXT PRIMARY KEY,
    call_id      TEXT NOT NULL REFERENCES calls (call_id),
    agent        TEXT NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL,
    ended_at     DOUBLE PRECISION,
    rings        INTEGER,
    outcome      TEXT,
    within_three INTEGER,
    late         INTEGER
);
CREATE INDEX ring_legs_call ON ring_legs (call_id);
CREATE INDEX ring_legs_agent ON ring_legs (agent, started_at);

CREATE TABLE alarms (
    alarm_id TEXT PRIMARY KEY,
    call_id  TEXT NOT NULL REFERENCES calls (call_id),
    agent    TEXT,
    level    TEXT NOT NULL,
    rings    INTEGER,
    at       DOUBLE PRECISION NOT NULL
);
CREATE INDEX alarms_at ON alarms (at);

CREATE TABLE holds (
    hold_id    TEXT PRIMARY KEY,
    call_id    TEXT NOT NULL REFERENCES calls (call_id),
    started_at DOUBLE PRECISION NOT NULL,
    ended_at   DOUBLE PRECISION,
    duration   DOUBLE PRECISION,
    reminders  INTEGER NOT NULL DEFAULT 0,
    choices_offered INTEGER NOT NULL DEFAULT 0,
    choice     TEXT,
    outcome    TEXT
);
CREATE INDEX holds_call ON holds (call_id);
CREATE INDEX holds_started ON holds (started_at);

CREATE TABLE transfers (
    transfer_id TEXT PRIMARY KEY,
    call_id     TEXT NOT NULL REFERENCES calls (call_id),
    target      TEXT,
    state       TEXT NOT NULL,
    reason      TEXT,
    started_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX transfers_call ON transfers (call_id);
CREATE INDEX transfers_started ON transfers (started_at);

CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    call_id    TEXT NOT NULL REFERENCES calls (call_id),
    at         DOUBLE PRECISION NOT NULL,
    name       TEXT,
    company    TEXT,
    phone      TEXT,
    best_time  TEXT,
    for_agent  TEXT,
    recording  TEXT,
    note       TEXT
);
CREATE INDEX messages_at ON messages (at);

CREATE TABLE callbacks (
    callback_id TEXT PRIMARY KEY,
    call_id     TEXT NOT NULL REFERENCES calls (call_id),
    at          DOUBLE PRECISION NOT NULL,
    phone       TEXT,
    best_time   TEXT,
    for_agent   TEXT,
    status      TEXT NOT NULL DEFAULT 'open'
);
CREATE INDEX callbacks_at ON callbacks (at);
