"""The engine: per-citizen tables and each child's eligibility, from the staged frames.

Its modules build on one another in one direction only:

- ``records``  what the engine reads of each delivered source (sources.md's columns and codes);
- ``frames``   small frame helpers shared by the steps (JSON spelling, membership, dates);
- ``rules``    policy.md's rules: each predicate once, with the reason codes of its failing parts;
- ``citizens`` the per-citizen warehouse tables (citizen, guardianship, holdings, employment);
- ``decide``   categories, priority dates, ineligibility reasons, guardian eligibility, prefill;
- ``buckets``  the driver that runs the steps bucket by bucket with Parquet between them.
"""
