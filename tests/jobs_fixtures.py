"""Fixtures for the job store tests: a store on SQLite, and one on a real PostgreSQL server.

The server is started once per test session from the machine's own binaries (`initdb`,
`pg_ctl`), on 127.0.0.1 and a free port, in a temporary directory; tests that need it are
skipped with the reason when the binaries are not installed (`.ci/run` installs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_team.jobs import JobStore
from agent_team.jobs.pgserver import PostgresServer, find_pg_bin, start_postgres

PG_MISSING = "PostgreSQL binaries (initdb, pg_ctl) are not installed; apt-get install postgresql"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if find_pg_bin() is None:
        pytest.skip(PG_MISSING)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest.fixture
def store(db_url: str) -> Iterator[JobStore]:
    opened = JobStore.open(db_url)
    try:
        yield opened
    finally:
        opened.close()
