"""What the DAG tasks share: configuration from Airflow, and user errors that fail fast.

Imported only inside tasks, so DAG files stay cheap to parse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from pipelines.config import Settings, resolve_settings
from pipelines.errors import UsageError, ZerocertError
from pipelines.masking import mask_every_log_record, mask_ids_in

if TYPE_CHECKING:
    from pipelines.run import Attempt

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


def _without_credentials(text: str) -> str:
    """An error's text with the password of any URL in it hidden."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def _unreadable(what: str, exc: Exception) -> UsageError:
    return UsageError(
        f"{what} cannot be read ({type(exc).__name__}: {_without_credentials(str(exc)).strip() or 'no detail'}); "
        "the run stops rather than fall back to another setting: fix it, or remove it to use the "
        "ZEROCERT_* environment or the default"
    )


def airflow_setting(key: str) -> str | None:
    """The Airflow variable ``key``, or for the two databases the Airflow connection named in
    ``CONNECTIONS``; None only when neither is defined.

    One that is defined but cannot be read (a secrets backend refusing, the API server failing,
    a malformed connection) is a ``UsageError``: falling back to the environment or the demo
    default would publish somewhere the engineer did not mean.
    """
    from airflow.sdk import Connection, Variable
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        value = Variable.get(key, default=None)
    except Exception as exc:
        raise _unreadable(f"Airflow variable {key}", exc) from None
    if value is not None or key not in CONNECTIONS:
        return value
    conn_id = CONNECTIONS[key]
    try:
        connection = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as exc:
        raise _unreadable(f"Airflow connection {conn_id}", exc) from None
    try:
        return sqlalchemy_url(connection.get_uri())
    except Exception as exc:
        raise _unreadable(f"Airflow connection {conn_id}", exc) from None


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
        lookup=airflow_setting,
        today=today,
    )
    return settings.with_attempt(AIRFLOW_ATTEMPT + str(getattr(dag_run, "run_id", None) or moment.isoformat()))


def attempt_for_task(context: dict, run: Mapping[str, object]) -> Attempt:
    """The warehouse run's attempt in a later task: what ``configure`` passed through XCom (the
    as-of date, the attempt's folder and start) with the settings this task resolves itself."""
    from pipelines.run import Attempt

    return Attempt.from_dict(run, settings_for_task(context))


def warehouse_asset_extra(published: Mapping[str, object], table: str, as_of: str) -> dict:
    """What the asset event of one published table carries for the systems that sync from it:
    the run, its as-of date, the table's rows and the run's warnings (a stale delivery)."""
    counts = published.get("row_counts") or {}
    return {
        "run_id": published["run_id"],
        "as_of": as_of,
        "table": table,
        "rows": int(counts.get(table, 0)),
        "warnings": [w["message"] for w in published.get("warnings") or []],
    }


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

    Returns the attempt every later task is given (``pipelines.run.Attempt.as_dict``, through
    XCom: no URL, no password); its staging reuses what the source DAGs staged.
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
