-- Run history: one row per publish attempt, never replaced by a publish (unlike the published
-- tables, which hold only the latest successful run and are swapped in whole each run).
CREATE TABLE zerocert.run_audit (
    run_id       text        NOT NULL,
    as_of        date        NOT NULL,
    policy_id    text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    status       text        NOT NULL CHECK (status IN ('started', 'published', 'failed')),
    code_version text,
    reason       text,        -- why a run failed (IDs masked)
    row_counts   jsonb,       -- rows published per table
    PRIMARY KEY (run_id, started_at)
);
CREATE INDEX run_audit_status_finished_at_idx ON zerocert.run_audit (status, finished_at);
