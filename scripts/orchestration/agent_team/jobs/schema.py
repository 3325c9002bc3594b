"""The job store's tables and their versioned migrations.

`SCHEMA_VERSION` is written in the `schema_version` table. Opening a store applies the
migrations it lacks, in order, each in its own transaction; a store written by a newer version
is refused with the versions this code supports, never altered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    inspect,
    select,
)
from sqlalchemy.schema import CreateTable

from .db import write_transaction
from .errors import JobStoreError

metadata = MetaData()

#: Task statuses. `blocked`: a dependency failed or was cancelled; retrying it unblocks.
PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, BLOCKED = (
    "pending", "running", "completed", "failed", "cancelled", "blocked",
)
TASK_STATUSES = (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, BLOCKED)
TERMINAL_STATUSES = (COMPLETED, FAILED, CANCELLED, BLOCKED)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("goal", Text, nullable=False),
    Column("orchestrator_id", String(200), nullable=False, default=""),
    Column("project_dir", Text, nullable=True),
    Column("workspace", Text, nullable=True),
    Column("remote_url", Text, nullable=True),
    Column("base_branch", String(255), nullable=False, default=""),
    Column("base_commit", String(64), nullable=True),
    Column("job_branch", String(255), nullable=False, default=""),
    Column("parent_job_id", String(32), nullable=True),
    Column("parent_task_id", Integer, nullable=True),
    Column("depth", Integer, nullable=False, default=0),
    Column("settings", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default=PENDING),
    Column("usage", JSON, nullable=False, default=dict),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    # The job's merge lock: the (task, attempt) merging into the job branch now. It is held
    # while that attempt's lease lives, so a dead holder frees it when its lease expires.
    Column("merge_task_id", Integer, nullable=True),
    Column("merge_fence", Integer, nullable=True),
    # Workers without a job of their own skip opt-in jobs (the `co` backlog): only a worker
    # asked for the job by id claims its tasks.
    Column("opt_in", Boolean, nullable=False, server_default=false()),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("role", String(64), nullable=False),
    Column("priority", Integer, nullable=False, default=5),
    Column("dependencies", JSON, nullable=False, default=list),
    Column("parent_task_id", Integer, nullable=True),
    Column("context_files", JSON, nullable=False, default=list),
    Column("expected_outputs", JSON, nullable=False, default=list),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default=PENDING),
    # The fence: bumped by every claim; every result write and merge must present it.
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_expires_at", Float, nullable=True),
    Column("worker_id", String(128), nullable=True),
    Column("branch", String(255), nullable=True),
    Column("commit", String(64), nullable=True),
    Column("merge_commit", String(64), nullable=True),
    Column("result", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("usage", JSON, nullable=False, default=dict),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("log_path", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("duration_s", Float, nullable=True),
    # The attempt that began merging (its commit is in `commit`): found on the job branch by
    # a later attempt, it is recorded as done instead of being run again.
    Column("merge_attempt", Integer, nullable=True),
    # Leases that expired in a row (a worker died or hung); capped by `max_attempts`.
    Column("lease_expiries", Integer, nullable=False, default=0),
    Index("ix_tasks_claim", "status", "priority"),
    Index("ix_tasks_job", "job_id"),
    # Ids are never reused, even after the newest task is deleted (`co show 12` stays 12).
    sqlite_autoincrement=True,
)

task_deps = Table(
    "task_deps",
    metadata,
    Column("task_id", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on", Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_task_deps_depends_on", "depends_on"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("status", String(16), nullable=False, default="idle"),
    Column("current_task_id", Integer, nullable=True),
    Column("tasks_done", Integer, nullable=False, default=0),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32), nullable=True),
    Column("task_id", Integer, nullable=True),
    Column("worker_id", String(128), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Index("ix_events_job", "job_id", "id"),
)

#: The base issue's StorageInterface (save/load of JSON values by key) on the same database.
kv = Table(
    "kv",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", JSON, nullable=True),
    Column("updated_at", Float, nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One step of the schema; `apply` runs inside a write transaction."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def _create_v1(conn: Connection) -> None:
    """Version 1's tables; `jobs` without the columns later versions add."""
    later = {"opt_in", "merge_task_id", "merge_fence"}
    Table("jobs", MetaData(), *(c._copy() for c in jobs.columns if c.name not in later)
          ).create(conn)
    metadata.create_all(conn, tables=[tasks, task_deps, workers, events, kv])


def _v3_opt_in_and_task_ids(conn: Connection) -> None:
    """`jobs.opt_in`; on SQLite, task ids that are never reused (AUTOINCREMENT).

    SQLite cannot add AUTOINCREMENT to a table, so `tasks` is rebuilt: the dependency rows
    are kept aside first (dropping `tasks` would cascade to them), then put back.
    """
    default = "false" if conn.dialect.name == "postgresql" else "0"
    conn.exec_driver_sql(f"ALTER TABLE jobs ADD COLUMN opt_in BOOLEAN NOT NULL DEFAULT {default}")
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL's sequences never hand out an id twice
    ddl = str(CreateTable(tasks).compile(dialect=conn.dialect))
    if "AUTOINCREMENT" in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks'").scalar_one():
        return  # created by this version already
    conn.exec_driver_sql(ddl.replace("CREATE TABLE tasks", "CREATE TABLE tasks_v2", 1))
    names = ", ".join(f'"{c.name}"' for c in tasks.columns)
    conn.exec_driver_sql(f"INSERT INTO tasks_v2 ({names}) SELECT {names} FROM tasks")
    deps = conn.execute(select(task_deps)).mappings().all()
    conn.execute(task_deps.delete())
    conn.exec_driver_sql("DROP TABLE tasks")
    conn.exec_driver_sql("ALTER TABLE tasks_v2 RENAME TO tasks")
    for index in tasks.indexes:
        index.create(conn)
    if deps:
        conn.execute(task_deps.insert(), [dict(row) for row in deps])


#: Columns added after version 1: (table, column, SQL type and default).
_V2_COLUMNS = (
    ("jobs", "merge_task_id", "INTEGER"),
    ("jobs", "merge_fence", "INTEGER"),
    ("tasks", "merge_attempt", "INTEGER"),
    ("tasks", "lease_expiries", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_v2(conn: Connection) -> None:
    """The merge lock, the merging attempt and the count of expired leases."""
    inspector = inspect(conn)
    for table, column, sql_type in _V2_COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "jobs, tasks, dependencies, workers, events, kv", _create_v1),
    Migration(2, "merge lock, merging attempt, expired leases", _add_v2),
    Migration(3, "jobs.opt_in; task ids never reused on SQLite", _v3_opt_in_and_task_ids),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def current_version(conn: Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(select(schema_version.c.version).order_by(
        schema_version.c.version.desc()).limit(1)).scalar()
    return int(value or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version found before."""
    from .db import db_now

    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Two processes opening a new database at once must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7231001)")
        schema_version.create(conn, checkfirst=True)
        found = current_version(conn)
        if found > SCHEMA_VERSION:
            raise JobStoreError(
                f"the job store has schema version {found}, newer than this code supports "
                f"(1..{SCHEMA_VERSION}); upgrade agent-team on this machine"
            )
        for migration in MIGRATIONS:
            if migration.version > found:
                migration.apply(conn)
                now = conn.execute(select(db_now())).scalar_one()
                conn.execute(schema_version.insert().values(
                    version=migration.version, applied_at=now))
    return found
