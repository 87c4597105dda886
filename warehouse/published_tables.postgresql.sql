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
