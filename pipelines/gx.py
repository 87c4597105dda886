"""Great Expectations, imported quietly and without its analytics.

Importing it takes seconds, so ``pipelines.validation`` imports it only when it validates, and
the processes that run steps in parallel import it once in the server they are forked from.
"""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
for _name in ("great_expectations", "great_expectations.core", "tqdm"):
    logging.getLogger(_name).setLevel(logging.ERROR)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import great_expectations as gx

__all__ = ["gx"]
