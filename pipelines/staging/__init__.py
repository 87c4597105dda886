"""Staging: from a department's delivery to a typed snapshot and its quarantine.

Everything generic lives here once, driven by ``schemas/<source>.yaml``; a source's module
``pipelines/sources/<source>.py``, where it has one, adds only what is particular to it. The
layers, each importing only layers listed before it:

- ``schema``: what a source's delivery holds (``Column``, ``Schema``, ``load_schema``).
- ``delivery``: which delivery folder, that it lies inside the landing directory, its bytes
  read in blocks of whole lines without following links, and decoded to UTF-8 (the schema's
  encoding first).
- ``readers``: CSV, JSON Lines and the exchange database read a slice at a time as strings
  keyed by the schema's English column names; a header drifting from the schema rejects the whole delivery, so the
  last good snapshot stays in use.
- ``quarantine``: reason codes in contract order, ``Failure``, duplicates (``EarlierCopies``),
  the quarantine frame.
- ``casting``: IDs, dates, codes and numbers typed per the schema, each with its failures.
- ``stage``: ``Staged`` and ``stage_with_schema``, the split into accepted and quarantined
  rows (``rows_in = accepted + quarantined + duplicate``) by which every source is staged.
- ``snapshot``: ``stage_source``, the one place that does I/O: reads a delivery, runs the
  source's stage function and writes the snapshot atomically, stamped with ``staging_version``.

Only ``snapshot`` imports ``pipelines.registry`` (which finds the stage function); the registry
and ``pipelines/sources/`` import only the layers below it, so no import runs in a circle.
"""
