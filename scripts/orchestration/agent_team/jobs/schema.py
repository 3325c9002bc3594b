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
    inspect,
    select,
)

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
    metadata.create_all(conn, tables=[jobs, tasks, task_deps, workers, events, kv])


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
