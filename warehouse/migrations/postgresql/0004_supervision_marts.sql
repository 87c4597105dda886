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

CREATE TABLE IF NOT EXISTS zerocert.address_catchment (
    address_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    school_code text COLLATE "C" NOT NULL,
    enrollment_year bigint NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (address_code, level, school_code, enrollment_year)
);
CREATE INDEX IF NOT EXISTS address_catchment_school_code_level_idx ON zerocert.address_catchment (school_code, level);
CREATE TABLE IF NOT EXISTS zerocert.school_demand (
    school_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    category text COLLATE "C" NOT NULL,
    district_code text COLLATE "C",
    children bigint NOT NULL,
    best_children bigint NOT NULL,
    capacity bigint,
    demand_ratio double precision,
    best_demand_ratio double precision,
    a1_exceeds_capacity boolean,
    run_id text NOT NULL,
    PRIMARY KEY (school_code, level, category)
);
CREATE INDEX IF NOT EXISTS school_demand_district_code_level_idx ON zerocert.school_demand (district_code, level);
CREATE TABLE IF NOT EXISTS zerocert.district_summary (
    district_code text COLLATE "C",
    level text COLLATE "C" NOT NULL,
    school_age_children bigint NOT NULL,
    with_school bigint NOT NULL,
    best_a1 bigint NOT NULL,
    best_a2 bigint NOT NULL,
    best_b bigint NOT NULL,
    best_c bigint NOT NULL,
    no_school bigint NOT NULL,
    no_school_no_guardian_link bigint NOT NULL,
    no_school_no_qualifying_property bigint NOT NULL,
    no_school_property_after_cutoff bigint NOT NULL,
    no_school_property_not_residential bigint NOT NULL,
    no_school_property_not_current bigint NOT NULL,
    no_school_property_outside_all_catchments bigint NOT NULL,
    no_school_property_excludes_rental_and_hukou bigint NOT NULL,
    no_school_no_qualifying_rental bigint NOT NULL,
    no_school_rental_after_cutoff bigint NOT NULL,
    no_school_rental_not_covering_cutoff bigint NOT NULL,
    no_school_rental_outside_all_catchments bigint NOT NULL,
    no_school_no_stable_employment bigint NOT NULL,
    no_school_insufficient_insurance_months bigint NOT NULL,
    no_school_business_too_recent bigint NOT NULL,
    no_school_hukou_not_urban bigint NOT NULL,
    no_school_hukou_address_outside_all_catchments bigint NOT NULL,
    no_school_address_unmatched bigint NOT NULL,
    no_school_child_deceased bigint NOT NULL,
    no_school_other_reason bigint NOT NULL,
    decided_from_data bigint NOT NULL,
    awaiting_address_review bigint NOT NULL,
    decided_from_data_share double precision,
    address_review_backlog bigint NOT NULL,
    run_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS district_summary_district_code_level_idx ON zerocert.district_summary (district_code, level);
CREATE TABLE IF NOT EXISTS zerocert.source_quality (
    source text COLLATE "C" NOT NULL,
    measured_run_id text COLLATE "C" NOT NULL,
    as_of date NOT NULL,
    delivery date,
    delivery_age_days bigint,
    rows_in bigint NOT NULL,
    rows_accepted bigint NOT NULL,
    rows_duplicate bigint NOT NULL,
    rows_quarantined bigint NOT NULL,
    quarantined_malformed_record bigint NOT NULL,
    quarantined_missing_required bigint NOT NULL,
    quarantined_invalid_id_format bigint NOT NULL,
    quarantined_invalid_id_checksum bigint NOT NULL,
    quarantined_invalid_date bigint NOT NULL,
    quarantined_invalid_code bigint NOT NULL,
    quarantined_invalid_number bigint NOT NULL,
    quarantined_invalid_share bigint NOT NULL,
    quarantined_other_reason bigint NOT NULL,
    accepted_share double precision,
    run_id text NOT NULL,
    PRIMARY KEY (measured_run_id, source)
);
CREATE INDEX IF NOT EXISTS source_quality_source_idx ON zerocert.source_quality (source);
CREATE TABLE IF NOT EXISTS zerocert.catchment_forecast (
    school_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    district_code text COLLATE "C",
    entry_year bigint NOT NULL,
    horizon bigint NOT NULL,
    born_from date NOT NULL,
    born_to date NOT NULL,
    children_now double precision NOT NULL,
    migration_factor double precision NOT NULL,
    migration_basis text NOT NULL,
    expected_entrants double precision NOT NULL,
    capacity bigint,
    utilisation double precision,
    method text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (school_code, level, entry_year)
);
CREATE INDEX IF NOT EXISTS catchment_forecast_district_code_level_idx ON zerocert.catchment_forecast (district_code, level);
CREATE TABLE IF NOT EXISTS zerocert.analyst_school_demand (
    school_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    category text COLLATE "C" NOT NULL,
    district_code text COLLATE "C",
    children bigint,
    best_children bigint,
    capacity bigint,
    demand_ratio double precision,
    best_demand_ratio double precision,
    a1_exceeds_capacity boolean,
    suppressed boolean NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (school_code, level, category)
);
CREATE INDEX IF NOT EXISTS analyst_school_demand_district_code_level_idx ON zerocert.analyst_school_demand (district_code, level);
CREATE TABLE IF NOT EXISTS zerocert.analyst_district_summary (
    district_code text COLLATE "C",
    level text COLLATE "C" NOT NULL,
    school_age_children bigint,
    with_school bigint,
    best_a1 bigint,
    best_a2 bigint,
    best_b bigint,
    best_c bigint,
    no_school bigint,
    no_school_no_guardian_link bigint,
    no_school_no_qualifying_property bigint,
    no_school_property_after_cutoff bigint,
    no_school_property_not_residential bigint,
    no_school_property_not_current bigint,
    no_school_property_outside_all_catchments bigint,
    no_school_property_excludes_rental_and_hukou bigint,
    no_school_no_qualifying_rental bigint,
    no_school_rental_after_cutoff bigint,
    no_school_rental_not_covering_cutoff bigint,
    no_school_rental_outside_all_catchments bigint,
    no_school_no_stable_employment bigint,
    no_school_insufficient_insurance_months bigint,
    no_school_business_too_recent bigint,
    no_school_hukou_not_urban bigint,
    no_school_hukou_address_outside_all_catchments bigint,
    no_school_address_unmatched bigint,
    no_school_child_deceased bigint,
    no_school_other_reason bigint,
    decided_from_data bigint,
    awaiting_address_review bigint,
    decided_from_data_share double precision,
    address_review_backlog bigint,
    suppressed boolean NOT NULL,
    run_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS analyst_district_summary_district_code_level_idx ON zerocert.analyst_district_summary (district_code, level);
CREATE TABLE IF NOT EXISTS zerocert.analyst_source_quality (
    source text COLLATE "C" NOT NULL,
    measured_run_id text COLLATE "C" NOT NULL,
    as_of date NOT NULL,
    delivery date,
    delivery_age_days bigint,
    rows_in bigint,
    rows_accepted bigint,
    rows_duplicate bigint,
    rows_quarantined bigint,
    quarantined_malformed_record bigint,
    quarantined_missing_required bigint,
    quarantined_invalid_id_format bigint,
    quarantined_invalid_id_checksum bigint,
    quarantined_invalid_date bigint,
    quarantined_invalid_code bigint,
    quarantined_invalid_number bigint,
    quarantined_invalid_share bigint,
    quarantined_other_reason bigint,
    accepted_share double precision,
    suppressed boolean NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (measured_run_id, source)
);
CREATE INDEX IF NOT EXISTS analyst_source_quality_source_idx ON zerocert.analyst_source_quality (source);
CREATE TABLE IF NOT EXISTS zerocert.analyst_catchment_forecast (
    school_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    district_code text COLLATE "C",
    entry_year bigint NOT NULL,
    horizon bigint,
    born_from date NOT NULL,
    born_to date NOT NULL,
    children_now double precision,
    migration_factor double precision,
    migration_basis text NOT NULL,
    expected_entrants double precision,
    capacity bigint,
    utilisation double precision,
    method text NOT NULL,
    suppressed boolean NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (school_code, level, entry_year)
);
CREATE INDEX IF NOT EXISTS analyst_catchment_forecast_district_code_level_idx ON zerocert.analyst_catchment_forecast (district_code, level);
