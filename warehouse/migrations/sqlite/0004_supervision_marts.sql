-- 0002 supervision marts (issue 15): the education bureau's city-wide tables.
--   address_catchment   where each standard address lies (address_code, level, school_code, year)
--   school_demand       distinct children per school, level and category; best-option demand
--   district_summary    per district and level: children, best categories, no school by reason
--   source_quality      per source and published run: the department's data-quality scorecard
--   catchment_forecast  expected entrants per catchment, level and entry year (+0..+5)
--   analyst_<mart>      the same with every figure under 5 NULL and a `suppressed` flag
-- Meanings, the forecast method and the suppression rule: docs/marts.md.
-- Like every published table these are recreated by each publish from
-- pipelines/warehouse_schema.py; this migration creates them (empty) when the warehouse is
-- upgraded, so readers and grants have them before the first run of this version, and records
-- schema version 2. demand_by_school (version 1) stays as it was.

CREATE TABLE IF NOT EXISTS address_catchment (
    address_code TEXT NOT NULL,
    level TEXT NOT NULL,
    school_code TEXT NOT NULL,
    enrollment_year INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (address_code, level, school_code, enrollment_year)
);
CREATE INDEX IF NOT EXISTS address_catchment_school_code_level_idx ON address_catchment (school_code, level);
CREATE TABLE IF NOT EXISTS school_demand (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    category TEXT NOT NULL,
    district_code TEXT,
    children INTEGER NOT NULL,
    best_children INTEGER NOT NULL,
    capacity INTEGER,
    demand_ratio REAL,
    best_demand_ratio REAL,
    a1_exceeds_capacity BOOLEAN,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code, level, category)
);
CREATE INDEX IF NOT EXISTS school_demand_district_code_level_idx ON school_demand (district_code, level);
CREATE TABLE IF NOT EXISTS district_summary (
    district_code TEXT,
    level TEXT NOT NULL,
    school_age_children INTEGER NOT NULL,
    with_school INTEGER NOT NULL,
    best_a1 INTEGER NOT NULL,
    best_a2 INTEGER NOT NULL,
    best_b INTEGER NOT NULL,
    best_c INTEGER NOT NULL,
    no_school INTEGER NOT NULL,
    no_school_no_guardian_link INTEGER NOT NULL,
    no_school_no_qualifying_property INTEGER NOT NULL,
    no_school_property_after_cutoff INTEGER NOT NULL,
    no_school_property_not_residential INTEGER NOT NULL,
    no_school_property_not_current INTEGER NOT NULL,
    no_school_property_outside_all_catchments INTEGER NOT NULL,
    no_school_property_excludes_rental_and_hukou INTEGER NOT NULL,
    no_school_no_qualifying_rental INTEGER NOT NULL,
    no_school_rental_after_cutoff INTEGER NOT NULL,
    no_school_rental_not_covering_cutoff INTEGER NOT NULL,
    no_school_rental_outside_all_catchments INTEGER NOT NULL,
    no_school_no_stable_employment INTEGER NOT NULL,
    no_school_insufficient_insurance_months INTEGER NOT NULL,
    no_school_business_too_recent INTEGER NOT NULL,
    no_school_hukou_not_urban INTEGER NOT NULL,
    no_school_hukou_address_outside_all_catchments INTEGER NOT NULL,
    no_school_address_unmatched INTEGER NOT NULL,
    no_school_child_deceased INTEGER NOT NULL,
    no_school_other_reason INTEGER NOT NULL,
    decided_from_data INTEGER NOT NULL,
    awaiting_address_review INTEGER NOT NULL,
    decided_from_data_share REAL,
    address_review_backlog INTEGER NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS district_summary_district_code_level_idx ON district_summary (district_code, level);
CREATE TABLE IF NOT EXISTS source_quality (
    source TEXT NOT NULL,
    measured_run_id TEXT NOT NULL,
    as_of DATE NOT NULL,
    delivery DATE,
    delivery_age_days INTEGER,
    rows_in INTEGER NOT NULL,
    rows_accepted INTEGER NOT NULL,
    rows_duplicate INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL,
    quarantined_malformed_record INTEGER NOT NULL,
    quarantined_missing_required INTEGER NOT NULL,
    quarantined_invalid_id_format INTEGER NOT NULL,
    quarantined_invalid_id_checksum INTEGER NOT NULL,
    quarantined_invalid_date INTEGER NOT NULL,
    quarantined_invalid_code INTEGER NOT NULL,
    quarantined_invalid_number INTEGER NOT NULL,
    quarantined_invalid_share INTEGER NOT NULL,
    quarantined_other_reason INTEGER NOT NULL,
    accepted_share REAL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (measured_run_id, source)
);
CREATE INDEX IF NOT EXISTS source_quality_source_idx ON source_quality (source);
CREATE TABLE IF NOT EXISTS catchment_forecast (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    district_code TEXT,
    entry_year INTEGER NOT NULL,
    horizon INTEGER NOT NULL,
    born_from DATE NOT NULL,
    born_to DATE NOT NULL,
    children_now REAL NOT NULL,
    migration_factor REAL NOT NULL,
    migration_basis TEXT NOT NULL,
    expected_entrants REAL NOT NULL,
    capacity INTEGER,
    utilisation REAL,
    method TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code, level, entry_year)
);
CREATE INDEX IF NOT EXISTS catchment_forecast_district_code_level_idx ON catchment_forecast (district_code, level);
CREATE TABLE IF NOT EXISTS analyst_school_demand (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    category TEXT NOT NULL,
    district_code TEXT,
    children INTEGER,
    best_children INTEGER,
    capacity INTEGER,
    demand_ratio REAL,
    best_demand_ratio REAL,
    a1_exceeds_capacity BOOLEAN,
    suppressed BOOLEAN NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code, level, category)
);
CREATE INDEX IF NOT EXISTS analyst_school_demand_district_code_level_idx ON analyst_school_demand (district_code, level);
CREATE TABLE IF NOT EXISTS analyst_district_summary (
    district_code TEXT,
    level TEXT NOT NULL,
    school_age_children INTEGER,
    with_school INTEGER,
    best_a1 INTEGER,
    best_a2 INTEGER,
    best_b INTEGER,
    best_c INTEGER,
    no_school INTEGER,
    no_school_no_guardian_link INTEGER,
    no_school_no_qualifying_property INTEGER,
    no_school_property_after_cutoff INTEGER,
    no_school_property_not_residential INTEGER,
    no_school_property_not_current INTEGER,
    no_school_property_outside_all_catchments INTEGER,
    no_school_property_excludes_rental_and_hukou INTEGER,
    no_school_no_qualifying_rental INTEGER,
    no_school_rental_after_cutoff INTEGER,
    no_school_rental_not_covering_cutoff INTEGER,
    no_school_rental_outside_all_catchments INTEGER,
    no_school_no_stable_employment INTEGER,
    no_school_insufficient_insurance_months INTEGER,
    no_school_business_too_recent INTEGER,
    no_school_hukou_not_urban INTEGER,
    no_school_hukou_address_outside_all_catchments INTEGER,
    no_school_address_unmatched INTEGER,
    no_school_child_deceased INTEGER,
    no_school_other_reason INTEGER,
    decided_from_data INTEGER,
    awaiting_address_review INTEGER,
    decided_from_data_share REAL,
    address_review_backlog INTEGER,
    suppressed BOOLEAN NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS analyst_district_summary_district_code_level_idx ON analyst_district_summary (district_code, level);
CREATE TABLE IF NOT EXISTS analyst_source_quality (
    source TEXT NOT NULL,
    measured_run_id TEXT NOT NULL,
    as_of DATE NOT NULL,
    delivery DATE,
    delivery_age_days INTEGER,
    rows_in INTEGER,
    rows_accepted INTEGER,
    rows_duplicate INTEGER,
    rows_quarantined INTEGER,
    quarantined_malformed_record INTEGER,
    quarantined_missing_required INTEGER,
    quarantined_invalid_id_format INTEGER,
    quarantined_invalid_id_checksum INTEGER,
    quarantined_invalid_date INTEGER,
    quarantined_invalid_code INTEGER,
    quarantined_invalid_number INTEGER,
    quarantined_invalid_share INTEGER,
    quarantined_other_reason INTEGER,
    accepted_share REAL,
    suppressed BOOLEAN NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (measured_run_id, source)
);
CREATE INDEX IF NOT EXISTS analyst_source_quality_source_idx ON analyst_source_quality (source);
CREATE TABLE IF NOT EXISTS analyst_catchment_forecast (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    district_code TEXT,
    entry_year INTEGER NOT NULL,
    horizon INTEGER,
    born_from DATE NOT NULL,
    born_to DATE NOT NULL,
    children_now REAL,
    migration_factor REAL,
    migration_basis TEXT NOT NULL,
    expected_entrants REAL,
    capacity INTEGER,
    utilisation REAL,
    method TEXT NOT NULL,
    suppressed BOOLEAN NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code, level, entry_year)
);
CREATE INDEX IF NOT EXISTS analyst_catchment_forecast_district_code_level_idx ON analyst_catchment_forecast (district_code, level);
