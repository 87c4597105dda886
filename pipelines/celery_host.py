"""The hostname Airflow records for a task instance's worker: ``[core] hostname_callable``.

On a real deployment each Celery worker has its machine's name; ``make demo-celery`` and the
Celery test run two workers on one machine, so each gets a name of its own through
``ZEROCERT_CELERY_WORKER`` and the task instances (REST API, UI) tell which one ran them.
Standard library only: Airflow imports it in every process that names its host.
"""

from __future__ import annotations

import os
import socket

WORKER_NAME = "ZEROCERT_CELERY_WORKER"


def worker_hostname() -> str:
    """The worker's own name when it has one, the machine's fully qualified name otherwise."""
    return os.environ.get(WORKER_NAME) or socket.getfqdn()
