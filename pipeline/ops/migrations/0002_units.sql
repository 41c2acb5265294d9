-- Mobile units (issue 13). Incidents keep what their card shows of the units: the nearest
-- available units of the latest alert (NearestUnit JSON list), the units dispatched so far
-- (JSON list of ids), when the first was dispatched, and the registry unit that arrived.
-- Portable SQL for SQLite and PostgreSQL (one column per ALTER: SQLite adds one at a time).
ALTER TABLE incidents ADD COLUMN nearest_units TEXT;
ALTER TABLE incidents ADD COLUMN dispatched TEXT;
ALTER TABLE incidents ADD COLUMN dispatched_at TEXT;
ALTER TABLE incidents ADD COLUMN arrived_unit TEXT;

-- The units' reports from the units topic (compacted there: this is their history), for the
-- report's coverage shares. One row per canonical event: aspect is position, status or
-- online; `at` its credible time (RFC 3339 UTC); payload the canonical event JSON. Positions
-- are kept at most one per unit per 30 s (store.POSITION_EVERY_SECONDS).
CREATE TABLE unit_reports (
    unit_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    aspect   TEXT NOT NULL,
    at       TEXT NOT NULL,
    payload  TEXT NOT NULL,
    PRIMARY KEY (unit_id, event_id)
);
CREATE INDEX unit_reports_at ON unit_reports (at);
CREATE INDEX unit_reports_unit ON unit_reports (unit_id, aspect, at);
