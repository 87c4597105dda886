-- Published zerocert tables (sqlite); generated from pipelines/warehouse_schema.py.
-- Every publish recreates these and swaps them in atomically; do not edit by hand.

CREATE TABLE citizen (
    citizen_id TEXT NOT NULL,
    name TEXT,
    sex TEXT,
    birth_date DATE,
    household_no TEXT,
    hukou_status TEXT,
    hukou_region_code TEXT,
    hukou_address TEXT,
    hukou_address_code TEXT,
    hukou_address_status TEXT,
    settled_date DATE,
    urban_hukou BOOLEAN,
    sources TEXT CHECK (sources IS NULL OR json_valid(sources)),
    name_conflict BOOLEAN,
    run_id TEXT NOT NULL,
    PRIMARY KEY (citizen_id)
);

CREATE TABLE guardianship (
    child_id TEXT NOT NULL,
    guardian_id TEXT NOT NULL,
    relation TEXT,
    basis TEXT NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX guardianship_child_id_idx ON guardianship (child_id);
CREATE INDEX guardianship_guardian_id_idx ON guardianship (guardian_id);

CREATE TABLE property_holding (
    citizen_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_key TEXT NOT NULL,
    use TEXT,
    status TEXT,
    record_date DATE,
    share REAL,
    address TEXT,
    address_code TEXT,
    address_status TEXT,
    qualifying BOOLEAN,
    record_ref TEXT,
    run_id TEXT NOT NULL
);
CREATE INDEX property_holding_citizen_id_idx ON property_holding (citizen_id);

CREATE TABLE rental_holding (
    citizen_id TEXT NOT NULL,
    record_no TEXT NOT NULL,
    address TEXT,
    address_code TEXT,
    address_status TEXT,
    start_date DATE,
    end_date DATE,
    registered_date DATE,
    status TEXT,
    qualifying BOOLEAN,
    record_ref TEXT,
    run_id TEXT NOT NULL
);
CREATE INDEX rental_holding_citizen_id_idx ON rental_holding (citizen_id);

CREATE TABLE employment (
    citizen_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    record_key TEXT,
    org_code TEXT,
    since DATE,
    local_months INTEGER,
    status TEXT,
    scheme TEXT,
    qualifying BOOLEAN,
    record_ref TEXT,
    run_id TEXT NOT NULL
);
CREATE INDEX employment_citizen_id_idx ON employment (citizen_id);

CREATE TABLE eligibility (
    child_id TEXT NOT NULL,
    level TEXT NOT NULL,
    school_code TEXT NOT NULL,
    category TEXT NOT NULL,
    priority_date DATE,
    basis_guardian_id TEXT,
    evidence TEXT CHECK (evidence IS NULL OR json_valid(evidence)),
    policy_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (child_id, level, school_code)
);
CREATE INDEX eligibility_school_code_category_idx ON eligibility (school_code, category);

CREATE TABLE ineligibility (
    child_id TEXT NOT NULL,
    level TEXT NOT NULL,
    reasons TEXT NOT NULL CHECK (reasons IS NULL OR json_valid(reasons)),
    policy_id TEXT NOT NULL,
    run_id TEXT NOT NULL
);
CREATE INDEX ineligibility_child_id_idx ON ineligibility (child_id);

CREATE TABLE guardian_eligibility (
    guardian_id TEXT NOT NULL,
    level TEXT NOT NULL,
    school_code TEXT NOT NULL,
    basis TEXT NOT NULL,
    priority_date DATE,
    evidence TEXT CHECK (evidence IS NULL OR json_valid(evidence)),
    policy_id TEXT,
    run_id TEXT NOT NULL
);
CREATE INDEX guardian_eligibility_guardian_id_idx ON guardian_eligibility (guardian_id);

CREATE TABLE prefill (
    guardian_id TEXT NOT NULL,
    document TEXT NOT NULL CHECK (document IS NULL OR json_valid(document)),
    policy_id TEXT,
    run_id TEXT NOT NULL,
    PRIMARY KEY (guardian_id)
);

CREATE TABLE source_snapshot (
    source TEXT NOT NULL,
    delivery DATE,
    checksum TEXT,
    rows_in INTEGER NOT NULL,
    rows_accepted INTEGER NOT NULL,
    rows_quarantined INTEGER NOT NULL,
    rows_duplicate INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    CHECK (rows_in = rows_accepted + rows_quarantined + rows_duplicate)
);

CREATE TABLE quarantine (
    source TEXT NOT NULL,
    record_ref TEXT NOT NULL,
    reason_code TEXT NOT NULL,
    detail TEXT,
    raw TEXT,
    run_id TEXT NOT NULL
);
CREATE INDEX quarantine_source_reason_code_idx ON quarantine (source, reason_code);

CREATE TABLE address_match (
    source TEXT NOT NULL,
    address TEXT NOT NULL,
    address_code TEXT,
    status TEXT NOT NULL,
    candidates TEXT CHECK (candidates IS NULL OR json_valid(candidates)),
    score REAL,
    run_id TEXT NOT NULL
);
CREATE INDEX address_match_address_code_idx ON address_match (address_code);

CREATE TABLE school (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    school_name TEXT,
    district_code TEXT NOT NULL,
    capacity INTEGER,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code)
);
CREATE INDEX school_district_code_idx ON school (district_code);

CREATE TABLE district_scope (
    citizen_id TEXT NOT NULL,
    district_code TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (citizen_id, district_code)
);

CREATE TABLE analyst_citizen (
    citizen_key TEXT NOT NULL,
    sex TEXT,
    birth_year INTEGER,
    hukou_status TEXT,
    hukou_region_code TEXT,
    urban_hukou BOOLEAN,
    run_id TEXT NOT NULL,
    PRIMARY KEY (citizen_key)
);

CREATE TABLE analyst_eligibility (
    child_key TEXT NOT NULL,
    level TEXT NOT NULL,
    school_code TEXT NOT NULL,
    category TEXT NOT NULL,
    priority_period TEXT,
    run_id TEXT NOT NULL,
    PRIMARY KEY (child_key, level, school_code)
);

CREATE TABLE demand_by_school (
    school_code TEXT NOT NULL,
    level TEXT NOT NULL,
    category TEXT NOT NULL,
    children INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (school_code, level, category)
);

CREATE TABLE address_catchment (
    address_code TEXT NOT NULL,
    level TEXT NOT NULL,
    school_code TEXT NOT NULL,
    enrollment_year INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (address_code, level, school_code, enrollment_year)
);
CREATE INDEX address_catchment_school_code_level_idx ON address_catchment (school_code, level);

CREATE TABLE school_demand (
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
CREATE INDEX school_demand_district_code_level_idx ON school_demand (district_code, level);

CREATE TABLE district_summary (
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
CREATE INDEX district_summary_district_code_level_idx ON district_summary (district_code, level);

CREATE TABLE source_quality (
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
CREATE INDEX source_quality_source_idx ON source_quality (source);

CREATE TABLE catchment_forecast (
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
CREATE INDEX catchment_forecast_district_code_level_idx ON catchment_forecast (district_code, level);

CREATE TABLE analyst_school_demand (
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
CREATE INDEX analyst_school_demand_district_code_level_idx ON analyst_school_demand (district_code, level);

CREATE TABLE analyst_district_summary (
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
CREATE INDEX analyst_district_summary_district_code_level_idx ON analyst_district_summary (district_code, level);

CREATE TABLE analyst_source_quality (
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
CREATE INDEX analyst_source_quality_source_idx ON analyst_source_quality (source);

CREATE TABLE analyst_catchment_forecast (
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
CREATE INDEX analyst_catchment_forecast_district_code_level_idx ON analyst_catchment_forecast (district_code, level);
