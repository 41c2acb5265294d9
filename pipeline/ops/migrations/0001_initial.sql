-- huxue incident history: everything is derived from the Kafka topics (alerts, commands,
-- rejected commands, silences, and device / guard events), so the store can be rebuilt
-- from them at any time. Times are RFC 3339 UTC strings (they sort as text). Portable
-- SQL for SQLite and PostgreSQL.

CREATE TABLE incidents (
    incident_id      TEXT PRIMARY KEY,
    school_id        TEXT NOT NULL,
    rule             TEXT NOT NULL,
    status           TEXT NOT NULL,
    severity         TEXT NOT NULL,
    urgency          TEXT NOT NULL,
    certainty        TEXT NOT NULL,
    zone             TEXT NOT NULL,
    stage            TEXT NOT NULL,
    headline         TEXT NOT NULL,
    state            TEXT NOT NULL,
    opened_at        TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    acked_at         TEXT,
    acked_by         TEXT,
    arrived_at       TEXT,
    arrived_by       TEXT,
    closed_at        TEXT,
    closed_stage     TEXT,
    closed_by        TEXT,
    ack_by           TEXT,
    arrive_target_by TEXT,
    arrive_by        TEXT,
    held             TEXT NOT NULL,
    notify           TEXT NOT NULL,
    evidence         TEXT NOT NULL
);
CREATE INDEX incidents_open ON incidents (state, school_id);
CREATE INDEX incidents_opened ON incidents (opened_at);

-- one row per alert, command and rejection; `entry_id` makes re-applying a record a no-op
CREATE TABLE timeline (
    entry_id    TEXT PRIMARY KEY,
    incident_id TEXT,
    school_id   TEXT NOT NULL,
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT NOT NULL,
    headline    TEXT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX timeline_incident ON timeline (incident_id, at);

CREATE TABLE silences (
    silence_id TEXT PRIMARY KEY,
    school_id  TEXT NOT NULL,
    state      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    starts     TEXT NOT NULL,
    ends       TEXT NOT NULL,
    ended_by   TEXT NOT NULL,
    suppressed INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    school_id  TEXT NOT NULL,
    state      TEXT NOT NULL,
    changed_at TEXT NOT NULL
);

-- latest report per officer and post, by event time
CREATE TABLE rosters (
    post_id    TEXT NOT NULL,
    officer_id TEXT NOT NULL,
    school_id  TEXT NOT NULL,
    on_duty    INTEGER NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (post_id, officer_id)
);

-- where the recorder is in each topic partition, committed with the data it applied
CREATE TABLE positions (
    topic       TEXT NOT NULL,
    partition_no INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition_no)
);
