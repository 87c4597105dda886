-- Published zerocert tables (postgresql); generated from pipelines/warehouse_schema.py.
-- Every publish recreates these and swaps them in atomically; do not edit by hand.

CREATE TABLE zerocert.citizen (
    citizen_id text COLLATE "C" NOT NULL,
    name text,
    sex text,
    birth_date date,
    household_no text,
    hukou_status text,
    hukou_region_code text,
    hukou_address text,
    hukou_address_code text,
    hukou_address_status text,
    settled_date date,
    urban_hukou boolean,
    sources jsonb,
    name_conflict boolean,
    run_id text NOT NULL,
    PRIMARY KEY (citizen_id)
);

CREATE TABLE zerocert.guardianship (
    child_id text COLLATE "C" NOT NULL,
    guardian_id text COLLATE "C" NOT NULL,
    relation text,
    basis text NOT NULL,
    run_id text NOT NULL
);
CREATE INDEX guardianship_child_id_idx ON zerocert.guardianship (child_id);
CREATE INDEX guardianship_guardian_id_idx ON zerocert.guardianship (guardian_id);

CREATE TABLE zerocert.property_holding (
    citizen_id text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    record_key text NOT NULL,
    use text,
    status text,
    record_date date,
    share double precision,
    address text,
    address_code text,
    address_status text,
    qualifying boolean,
    record_ref text,
    run_id text NOT NULL
);
CREATE INDEX property_holding_citizen_id_idx ON zerocert.property_holding (citizen_id);

CREATE TABLE zerocert.rental_holding (
    citizen_id text COLLATE "C" NOT NULL,
    record_no text NOT NULL,
    address text,
    address_code text,
    address_status text,
    start_date date,
    end_date date,
    registered_date date,
    status text,
    qualifying boolean,
    record_ref text,
    run_id text NOT NULL
);
CREATE INDEX rental_holding_citizen_id_idx ON zerocert.rental_holding (citizen_id);

CREATE TABLE zerocert.employment (
    citizen_id text COLLATE "C" NOT NULL,
    kind text NOT NULL,
    record_key text,
    org_code text,
    since date,
    local_months bigint,
    status text,
    scheme text,
    qualifying boolean,
    record_ref text,
    run_id text NOT NULL
);
CREATE INDEX employment_citizen_id_idx ON zerocert.employment (citizen_id);

CREATE TABLE zerocert.eligibility (
    child_id text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    school_code text COLLATE "C" NOT NULL,
    category text COLLATE "C" NOT NULL,
    priority_date date,
    basis_guardian_id text,
    evidence jsonb,
    policy_id text NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (child_id, level, school_code)
);
CREATE INDEX eligibility_school_code_category_idx ON zerocert.eligibility (school_code, category);

CREATE TABLE zerocert.ineligibility (
    child_id text COLLATE "C" NOT NULL,
    level text NOT NULL,
    reasons jsonb NOT NULL,
    policy_id text NOT NULL,
    run_id text NOT NULL
);
CREATE INDEX ineligibility_child_id_idx ON zerocert.ineligibility (child_id);

CREATE TABLE zerocert.guardian_eligibility (
    guardian_id text COLLATE "C" NOT NULL,
    level text NOT NULL,
    school_code text NOT NULL,
    basis text NOT NULL,
    priority_date date,
    evidence jsonb,
    policy_id text,
    run_id text NOT NULL
);
CREATE INDEX guardian_eligibility_guardian_id_idx ON zerocert.guardian_eligibility (guardian_id);

CREATE TABLE zerocert.prefill (
    guardian_id text COLLATE "C" NOT NULL,
    document jsonb NOT NULL,
    policy_id text,
    run_id text NOT NULL,
    PRIMARY KEY (guardian_id)
);

CREATE TABLE zerocert.source_snapshot (
    source text NOT NULL,
    delivery date,
    checksum text,
    rows_in bigint NOT NULL,
    rows_accepted bigint NOT NULL,
    rows_quarantined bigint NOT NULL,
    rows_duplicate bigint NOT NULL,
    run_id text NOT NULL,
    CHECK (rows_in = rows_accepted + rows_quarantined + rows_duplicate)
);

CREATE TABLE zerocert.quarantine (
    source text COLLATE "C" NOT NULL,
    record_ref text NOT NULL,
    reason_code text COLLATE "C" NOT NULL,
    detail text,
    raw text,
    run_id text NOT NULL
);
CREATE INDEX quarantine_source_reason_code_idx ON zerocert.quarantine (source, reason_code);

CREATE TABLE zerocert.address_match (
    source text NOT NULL,
    address text NOT NULL,
    address_code text COLLATE "C",
    status text NOT NULL,
    candidates jsonb,
    score double precision,
    run_id text NOT NULL
);
CREATE INDEX address_match_address_code_idx ON zerocert.address_match (address_code);

CREATE TABLE zerocert.school (
    school_code text COLLATE "C" NOT NULL,
    level text NOT NULL,
    school_name text,
    district_code text COLLATE "C" NOT NULL,
    capacity bigint,
    run_id text NOT NULL,
    PRIMARY KEY (school_code)
);
CREATE INDEX school_district_code_idx ON zerocert.school (district_code);

CREATE TABLE zerocert.district_scope (
    citizen_id text COLLATE "C" NOT NULL,
    district_code text COLLATE "C" NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (citizen_id, district_code)
);

CREATE TABLE zerocert.analyst_citizen (
    citizen_key text COLLATE "C" NOT NULL,
    sex text,
    birth_year bigint,
    hukou_status text,
    hukou_region_code text,
    urban_hukou boolean,
    run_id text NOT NULL,
    PRIMARY KEY (citizen_key)
);

CREATE TABLE zerocert.analyst_eligibility (
    child_key text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    school_code text COLLATE "C" NOT NULL,
    category text NOT NULL,
    priority_period text,
    run_id text NOT NULL,
    PRIMARY KEY (child_key, level, school_code)
);

CREATE TABLE zerocert.demand_by_school (
    school_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    category text COLLATE "C" NOT NULL,
    children bigint NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (school_code, level, category)
);

CREATE TABLE zerocert.address_catchment (
    address_code text COLLATE "C" NOT NULL,
    level text COLLATE "C" NOT NULL,
    school_code text COLLATE "C" NOT NULL,
    enrollment_year bigint NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (address_code, level, school_code, enrollment_year)
);
CREATE INDEX address_catchment_school_code_level_idx ON zerocert.address_catchment (school_code, level);

CREATE TABLE zerocert.school_demand (
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
CREATE INDEX school_demand_district_code_level_idx ON zerocert.school_demand (district_code, level);

CREATE TABLE zerocert.district_summary (
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
CREATE INDEX district_summary_district_code_level_idx ON zerocert.district_summary (district_code, level);

CREATE TABLE zerocert.source_quality (
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
CREATE INDEX source_quality_source_idx ON zerocert.source_quality (source);

CREATE TABLE zerocert.catchment_forecast (
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
CREATE INDEX catchment_forecast_district_code_level_idx ON zerocert.catchment_forecast (district_code, level);

CREATE TABLE zerocert.analyst_school_demand (
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
CREATE INDEX analyst_school_demand_district_code_level_idx ON zerocert.analyst_school_demand (district_code, level);

CREATE TABLE zerocert.analyst_district_summary (
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
CREATE INDEX analyst_district_summary_district_code_level_idx ON zerocert.analyst_district_summary (district_code, level);

CREATE TABLE zerocert.analyst_source_quality (
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
CREATE INDEX analyst_source_quality_source_idx ON zerocert.analyst_source_quality (source);

CREATE TABLE zerocert.analyst_catchment_forecast (
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
CREATE INDEX analyst_catchment_forecast_district_code_level_idx ON zerocert.analyst_catchment_forecast (district_code, level);
