-- Run history: one row per publish attempt, never replaced by a publish (unlike the published
-- tables, which hold only the latest successful run and are swapped in whole each run).
-- Timestamps are ISO-8601 text in UTC.
CREATE TABLE run_audit (
    run_id       TEXT      NOT NULL,
    as_of        DATE      NOT NULL,
    policy_id    TEXT,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    status       TEXT      NOT NULL CHECK (status IN ('started', 'published', 'failed')),
    code_version TEXT,
    reason       TEXT,
    row_counts   TEXT CHECK (row_counts IS NULL OR json_valid(row_counts)),
    PRIMARY KEY (run_id, started_at)
);
CREATE INDEX run_audit_status_finished_at_idx ON run_audit (status, finished_at);
