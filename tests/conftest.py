"""Shared fixtures. ``pg_url``: a throw-away database on the local PostgreSQL server."""

from __future__ import annotations

import os
import secrets

import pytest

PG_SERVER = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")


@pytest.fixture(scope="session")
def pg_database():
    """Make fresh UTF-8 databases ``zerocert_test_<pid>_<random>`` on demand; all dropped after the session.

    Call it for a database of one's own (a warehouse whose previous runs another test shaped
    would change what validation expects). Fails (never skips) when the server is down.
    """
    import psycopg

    problem = None
    try:
        admin = psycopg.connect(**PG_SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip().splitlines()[0]
    if problem:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_SERVER['host']}:{PG_SERVER['port']} as user "
            f"{PG_SERVER['user']} (start it, e.g. as .ci/run does): {problem}",
            pytrace=False,
        )
    created: list[str] = []

    def create() -> str:
        name = f"zerocert_test_{os.getpid()}_{secrets.token_hex(4)}"
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        created.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    with admin:
        try:
            yield create
        finally:
            for name in created:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_url(pg_database):
    """One database shared by the session's PostgreSQL tests that do not care about earlier runs."""
    return pg_database()
