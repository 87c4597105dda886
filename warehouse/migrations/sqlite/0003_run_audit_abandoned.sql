-- An attempt killed before it finished is marked 'abandoned' by the next run that takes the work
-- folder's lock, instead of staying 'started' forever. SQLite cannot alter a CHECK: the table is
-- rebuilt with its rows.
CREATE TABLE run_audit_new (
    run_id       TEXT      NOT NULL,
    as_of        DATE      NOT NULL,
    policy_id    TEXT,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    status       TEXT      NOT NULL CHECK (status IN ('started', 'published', 'failed', 'abandoned')),
    code_version TEXT,
    reason       TEXT,
    row_counts   TEXT CHECK (row_counts IS NULL OR json_valid(row_counts)),
    accepted_changes TEXT CHECK (accepted_changes IS NULL OR json_valid(accepted_changes)),
    PRIMARY KEY (run_id, started_at)
);
INSERT INTO run_audit_new SELECT run_id, as_of, policy_id, started_at, finished_at, status, code_version,
    reason, row_counts, accepted_changes FROM run_audit;
DROP TABLE run_audit;
ALTER TABLE run_audit_new RENAME TO run_audit;
CREATE INDEX run_audit_status_finished_at_idx ON run_audit (status, finished_at);
