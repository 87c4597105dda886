-- An attempt killed before it finished is marked 'abandoned' by the next run that takes the work
-- folder's lock, instead of staying 'started' forever.
ALTER TABLE zerocert.run_audit DROP CONSTRAINT run_audit_status_check;
ALTER TABLE zerocert.run_audit ADD CONSTRAINT run_audit_status_check
    CHECK (status IN ('started', 'published', 'failed', 'abandoned'));
