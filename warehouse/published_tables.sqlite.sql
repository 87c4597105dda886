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
