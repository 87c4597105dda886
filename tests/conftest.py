"""Shared fixtures. ``pg_url``: a throw-away database on the local PostgreSQL server."""

from __future__ import annotations

import os
import secrets

import pytest

PG_SERVER = dict(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")


@pytest.fixture(scope="session")
def pg_url():
    """A fresh UTF-8 database ``zerocert_test_<pid>_<random>``, dropped after the session.

    Fails (never skips) when the server is down: the PostgreSQL tests are part of the suite.
    """
    import psycopg

    name = f"zerocert_test_{os.getpid()}_{secrets.token_hex(4)}"
    problem = None
    try:
        admin = psycopg.connect(**PG_SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip().splitlines()[0]
    if problem:
        pytest.fail(f"PostgreSQL is not reachable at {PG_SERVER['host']}:{PG_SERVER['port']} as user "
                    f"{PG_SERVER['user']} (start it, e.g. as .ci/run does): {problem}", pytrace=False)
    with admin:
        admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
