"""Staging modules for the sources whose rows need parsing beyond their schema.

A module ``<key>.py`` here defines ``stage_<key>(raw, extract_date) -> Staged`` (today only
``housing_contract``: one JSON list of buyers becomes one row per buyer). Every other source
is staged by its schema alone; ``pipelines.registry`` decides which.
"""
