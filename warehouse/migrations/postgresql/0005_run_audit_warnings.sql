-- What a run published despite: a JSON list of warnings, e.g. {source, warning: "stale_delivery",
-- delivery, age_days, max_delivery_age_days, message} when a source's newest delivery was older
-- than its schema's max_delivery_age_days.
ALTER TABLE zerocert.run_audit ADD COLUMN warnings jsonb;
