"""The job store and its worker pool: durable jobs of tasks on SQLite or PostgreSQL.

Public API (stable; the REST service and the `co` CLI build on it):

- `JobStore.open(db=None, project_dir=None)`: open or create the store (`resolve_db_url`).
- `JobStore.create_job / get_job / list_jobs / update_job / job_status / cancel_job`.
- `JobStore.add_task / get_task / list_tasks / retry_failed`.
- `JobStore.workers.register / heartbeat / records / live` (store_workers.py).
- `JobStore.events.add / recent` (store_events.py), `JobStore.kv.save / load` (store_kv.py).
- `TaskQueue(store, lease_s=60, max_attempts=3).claim / renew / merge_lock / record_merging /
  job_lock / complete / fail / release`.
- `execute.execute_job_task(queue, claim, work_dir=...)`: one attempt on the core's task step
  (`attempt.open_attempt` builds its `Team` and `RunContext`; `run_store.JobRunStore` is the
  run's store).
- `parse_priority`: 1-10 or high/medium/low, everywhere.
"""

from __future__ import annotations

from .db import DEFAULT_MAX_ATTEMPTS, ENV_VAR, normalise_url, resolve_db_url
from .errors import (
    BadTaskInput,
    FenceRejected,
    JobNotFound,
    JobStoreError,
    LeaseLost,
    TaskNotFound,
    WaitTimeout,
)
from .priority import DEFAULT_PRIORITY, parse_priority, priority_word
from .queue import DEFAULT_LEASE_S, Claim, TaskQueue
from .records import EventRecord, JobRecord, JobStatus, JobTask, WorkerRecord
from .schema import (
    BLOCKED,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEMA_VERSION,
    TASK_STATUSES,
    TERMINAL_STATUSES,
)
from .store import DEFAULT_ROLE, JobStore

__all__ = [
    "BLOCKED",
    "CANCELLED",
    "COMPLETED",
    "DEFAULT_LEASE_S",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_ROLE",
    "ENV_VAR",
    "FAILED",
    "PENDING",
    "RUNNING",
    "SCHEMA_VERSION",
    "TASK_STATUSES",
    "TERMINAL_STATUSES",
    "BadTaskInput",
    "Claim",
    "EventRecord",
    "FenceRejected",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "LeaseLost",
    "TaskNotFound",
    "TaskQueue",
    "JobTask",
    "WaitTimeout",
    "WorkerRecord",
    "normalise_url",
    "parse_priority",
    "priority_word",
    "resolve_db_url",
]
