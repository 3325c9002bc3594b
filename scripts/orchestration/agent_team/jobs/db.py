"""Where the job store lives and how to talk to it: URL resolution, engines, transactions.

One SQLAlchemy Core code path for both databases. SQLite (the default, a file in the project)
runs in WAL mode with a busy timeout, and every write transaction starts with
`BEGIN IMMEDIATE`, so two processes never both read-then-write the same rows. PostgreSQL (any
`postgresql://` URL, driven by psycopg 3) is the engine for several machines: claims use
`FOR UPDATE SKIP LOCKED` and row locks. Times are seconds since the epoch read from the
database's own clock (`db_now()`), never from a worker's, so leases mean the same to everyone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Float, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.functions import FunctionElement

from .errors import JobStoreError

ENV_VAR = "AGENT_TEAM_DB"
MAX_ATTEMPTS_ENV = "AGENT_TEAM_MAX_ATTEMPTS"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_RELATIVE_PATH = Path(".ai-agents") / "jobs.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
_IMMEDIATE = "agent_team_immediate"
CONFIG_NAMES = ("orchestrator-config.json", ".ai-agents/orchestrator-config.json")


class db_now(FunctionElement[float]):  # noqa: N801 - reads like the SQL function it renders
    """The database server's current time in epoch seconds (sub-second precision)."""

    type = Float()
    inherit_cache = True


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now, "postgresql")
def _now_postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


def config_storage(project_dir: Path) -> dict[str, Any]:
    """The `storage` section of the project's config file, if any (read only, never written)."""
    for name in CONFIG_NAMES:
        path = project_dir / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError) as exc:
                raise JobStoreError(f"config file {path} cannot be read: {exc}") from None
            storage = data.get("storage") if isinstance(data, dict) else None
            return dict(storage) if isinstance(storage, dict) else {}
    return {}


def _config_storage_url(project_dir: Path) -> str | None:
    url = config_storage(project_dir).get("url")
    if url is not None and not isinstance(url, str):
        raise JobStoreError(f"{project_dir}: storage.url must be a string database URL")
    return url or None


def resolve_max_attempts(value: int | None = None,
                         project_dir: str | os.PathLike[str] | None = None) -> int:
    """Expired leases allowed in a row: `value`, else $AGENT_TEAM_MAX_ATTEMPTS, else config
    `storage.max_attempts`, else 3."""
    raw: object = value if value is not None else os.environ.get(MAX_ATTEMPTS_ENV)
    if raw in (None, ""):
        project = Path(project_dir or os.getcwd()).expanduser().resolve()
        raw = config_storage(project).get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    try:
        count = int(str(raw))
    except ValueError:
        count = 0
    if count < 1 or isinstance(raw, bool):
        raise JobStoreError(f"max_attempts {raw!r} is not valid: give a whole number of at "
                            f"least 1 (default {DEFAULT_MAX_ATTEMPTS})")
    return count


def resolve_db_url(db: str | os.PathLike[str] | None = None,
                   project_dir: str | os.PathLike[str] | None = None) -> str:
    """The store's SQLAlchemy URL: `db`, else $AGENT_TEAM_DB, else config `storage.url`,
    else `<project>/.ai-agents/jobs.db`.

    A bare path means a SQLite file; `postgresql://` and `postgres://` get the psycopg 3
    driver. The returned URL is normalised (see `normalise_url`).
    """
    project = Path(project_dir or os.getcwd()).expanduser().resolve()
    raw = str(db) if db else (os.environ.get(ENV_VAR) or _config_storage_url(project))
    if not raw:
        return normalise_url(str(project / DEFAULT_RELATIVE_PATH))
    if "://" not in raw:
        path = Path(raw).expanduser()
        return normalise_url(str(path if path.is_absolute() else project / path))
    return normalise_url(raw)


def normalise_url(raw: str) -> str:
    """Map a path or URL onto the dialect+driver we use; JobStoreError for anything else."""
    if "://" not in raw:
        return f"sqlite:///{Path(raw).expanduser().resolve()}"
    scheme, rest = raw.split("://", 1)
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg3"):
        return f"postgresql+psycopg://{rest}"
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return f"sqlite://{rest}"
    raise JobStoreError(
        f"the job store URL {redact_url(raw)!r} is not supported: use a SQLite path or "
        "sqlite:///FILE, or postgresql://USER@HOST:PORT/DB"
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and the dashboard."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def is_postgresql(url: str) -> bool:
    return url.startswith("postgresql")


def make_engine(url: str) -> Engine:
    """An engine for `url` with the connection settings the queue relies on."""
    try:
        if is_postgresql(url):
            return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=8)
        return _sqlite_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise JobStoreError(
            f"cannot open the job store at {redact_url(url)}: {exc}. PostgreSQL needs "
            "`pip install 'psycopg[binary]'`."
        ) from None


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # NullPool: a fresh connection per checkout is cheap for SQLite and keeps no file handles
    # across fork() (workers are separate processes).
    engine = create_engine(
        url,
        poolclass=NullPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: `BEGIN IMMEDIATE` on SQLite, a plain one on PostgreSQL.

    SQLite takes the database's write lock up front, so read-then-write sequences (claims,
    fenced writes) cannot interleave between processes.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot on both databases)."""
    with engine.connect() as conn, conn.begin():
        yield conn
