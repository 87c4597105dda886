-- Size changes an engineer accepted for one run (zerocert run --accept-change SOURCE --reason
-- TEXT): a JSON list of {source, reason, rows, previous_rows, allowed, max_change_fraction}.
ALTER TABLE zerocert.run_audit ADD COLUMN accepted_changes jsonb;
