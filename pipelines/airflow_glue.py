"""What the DAG tasks share: configuration from Airflow, and user errors that fail fast.

Imported only inside tasks, so DAG files stay cheap to parse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator

from pipelines.config import Settings, resolve_settings
from pipelines.errors import ZerocertError
from pipelines.masking import mask_every_log_record, mask_ids_in

AIRFLOW_ATTEMPT = "airflow-"  # a DAG run's attempt folder: runs/<as_of>/airflow-<run id>
CONNECTIONS = {"zerocert_warehouse_url": "zerocert_warehouse", "zerocert_exchange_url": "zerocert_exchange"}


def sqlalchemy_url(airflow_uri: str) -> str:
    """Airflow's connection URI as the SQLAlchemy URL the pipeline uses.

    ``postgres://`` gets the psycopg driver; a SQLite URI's path comes back percent-encoded
    (``sqlite:///%2Ftmp%2Fw.sqlite``) and is decoded to the file's path.
    """
    if airflow_uri.startswith("sqlite:"):
        from urllib.parse import unquote

        return unquote(airflow_uri)
    for prefix in ("postgres://", "postgresql://"):
        if airflow_uri.startswith(prefix):
            return "postgresql+psycopg://" + airflow_uri[len(prefix) :]
    return airflow_uri


def _variable(key: str) -> str | None:
    """An Airflow variable, or for the two databases the Airflow connection of that name."""
    from airflow.sdk import Connection, Variable

    try:
        value = Variable.get(key, default=None)
    except Exception:
        value = None
    if value is None and key in CONNECTIONS:
        try:
            value = sqlalchemy_url(Connection.get(CONNECTIONS[key]).get_uri())
        except Exception:
            value = None
    return value


def settings_for_task(context: dict) -> Settings:
    """Settings from the run's `as_of` param, Airflow variables and ``ZEROCERT_*``.

    Without an as-of date anywhere, the date of the run (its logical date, or when it was
    triggered for asset-driven runs) is used.
    """
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    moment = context.get("logical_date") or dag_run.run_after
    today = dt.date(moment.year, moment.month, moment.day)
    settings = resolve_settings(
        {
            "as_of": params.get("as_of") or None,
            "accept_change": params.get("accept_change") or None,
            "accept_reason": params.get("accept_reason") or None,
        },
        lookup=_variable,
        today=today,
    )
    return settings.with_attempt(AIRFLOW_ATTEMPT + str(getattr(dag_run, "run_id", None) or moment.isoformat()))


@contextlib.contextmanager
def user_errors_fail_fast() -> Iterator[None]:
    """A user's mistake (bad delivery, failed validation) is not retried and shows one masked line."""
    from airflow.sdk.exceptions import AirflowFailException

    mask_every_log_record()
    os.umask(0o077)  # staged rows, quarantine and reports are readable by their owner only
    try:
        yield
    except ZerocertError as exc:
        raise AirflowFailException(mask_ids_in(str(exc))) from None
    except Exception as exc:  # a bug or an outage: retried, its trace kept but masked
        import logging
        import traceback

        logging.getLogger("zerocert").error("%s", mask_ids_in(traceback.format_exc()))
        raise RuntimeError(f"{type(exc).__name__}: {mask_ids_in(str(exc))}") from None


def start_warehouse_run(settings: Settings) -> dict:
    """Check the configuration and clear older DAG attempts' folders (one warehouse run at a time).

    Returns the attempt every later task is given (``pipelines.run.Attempt``, through XCom); its
    staging reuses what the source DAGs staged.
    """
    from pipelines.run import Attempt, check_configuration

    check_configuration(settings)
    settings.layout.prune_attempts(AIRFLOW_ATTEMPT)
    return Attempt(settings, dt.datetime.now(dt.UTC), reuse_staged=True).as_dict()


def record_task_failure(context: dict) -> None:
    """Mark the run failed in run_audit with the task and its (masked) error."""
    from pipelines.run import record_failure

    try:
        settings = settings_for_task(context)
    except ZerocertError:
        return
    task = getattr(context.get("task_instance") or context.get("ti"), "task_id", "?")
    error = mask_ids_in(str(context.get("exception") or "failed"))
    record_failure(settings, dt.datetime.now(dt.UTC), f"task {task}: {error}")
