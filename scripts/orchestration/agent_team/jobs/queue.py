"""Claims, leases and fencing, done by the database itself.

A claim takes the ready task with the highest priority (every dependency completed, and
either pending or running on an expired lease) in ONE statement: an UPDATE of the row a
`SELECT ... FOR UPDATE SKIP LOCKED` picked (PostgreSQL), inside `BEGIN IMMEDIATE` (SQLite). It
bumps `attempts`, the task's fence, and sets a lease that expires by the database's clock.

Every later write for that attempt (lease renewal, result, failure, release, merge) names
`(task, fence)` and is refused when the fence moved on: a worker that was paused or cut off
and comes back late can neither overwrite nor merge over the attempt that replaced it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, or_, select, update

from .db import db_now, write_transaction
from .errors import FenceRejected
from .records import TaskRecord
from .schema import BLOCKED, COMPLETED, FAILED, PENDING, RUNNING, jobs, task_deps, tasks
from .store import JobStore, _event, add_job_usage, opt_in_jobs, refresh_job_status

DEFAULT_LEASE_S = 60.0


@dataclass(frozen=True)
class Claim:
    """A task a worker holds: the record as claimed, its fence and the lease length."""

    task: TaskRecord
    fence: int
    worker_id: str
    lease_s: float

    @property
    def task_id(self) -> int:
        return self.task.id


class TaskQueue:
    """The queue operations over a `JobStore`; `get_task` is the guide's `orch.queue.get_task`."""

    def __init__(self, store: JobStore, *, lease_s: float = DEFAULT_LEASE_S) -> None:
        if lease_s <= 0:
            raise ValueError("the lease must be a positive number of seconds")
        self.store = store
        self.lease_s = float(lease_s)

    # -- reading -----------------------------------------------------------------------------

    def get_task(self, task_id: int) -> dict[str, Any]:
        """The task as the guide's dict: `id`, `prompt`, `status`, `result` (JSON text)..."""
        return self.store.get_task(task_id).to_dict()

    # -- claiming ----------------------------------------------------------------------------

    def claim(self, worker_id: str, *, job_id: str | None = None) -> Claim | None:
        """Take the best ready task, or None when nothing is ready (now)."""
        dep = tasks.alias("dep")
        unmet = exists().where(
            task_deps.c.task_id == tasks.c.id,
            dep.c.id == task_deps.c.depends_on,
            dep.c.status != COMPLETED,
        )
        ready = or_(
            tasks.c.status == PENDING,
            and_(tasks.c.status == RUNNING, tasks.c.lease_expires_at < db_now()),
        )
        candidate = select(tasks.c.id).where(ready, ~unmet)
        if job_id is not None:
            candidate = candidate.where(tasks.c.job_id == job_id)
        else:  # a worker of every job still skips the opt-in ones (the `co` backlog)
            candidate = candidate.where(tasks.c.job_id.not_in(opt_in_jobs()))
        candidate = (candidate.order_by(tasks.c.priority.desc(), tasks.c.id)
                     .limit(1).with_for_update(skip_locked=True))
        statement = (
            update(tasks)
            .where(tasks.c.id == candidate.scalar_subquery(), ready)
            .values(
                status=RUNNING,
                attempts=tasks.c.attempts + 1,
                worker_id=worker_id,
                lease_expires_at=db_now() + self.lease_s,
                started_at=db_now(),
                finished_at=None,
                error=None,
            )
            .returning(tasks.c.id, tasks.c.attempts, tasks.c.job_id)
        )
        with write_transaction(self.store.engine) as conn:
            row = conn.execute(statement).first()
            if row is None:
                return None
            conn.execute(update(jobs).where(jobs.c.id == row.job_id, jobs.c.status == PENDING)
                         .values(status=RUNNING, started_at=db_now()))
            _event(conn, "claimed", f"attempt {row.attempts}", job_id=row.job_id,
                   task_id=row.id, worker_id=worker_id)
        return Claim(self.store.get_task(row.id), int(row.attempts), worker_id, self.lease_s)

    def renew(self, claim: Claim) -> bool:
        """Extend the lease by its full length; False when the fence moved on (lease lost)."""
        with write_transaction(self.store.engine) as conn:
            done = conn.execute(
                update(tasks)
                .where(*_held(claim))
                .values(lease_expires_at=db_now() + claim.lease_s)
            )
        return done.rowcount == 1

    # -- fenced writes -------------------------------------------------------------------------

    def _check(self, conn: Connection, claim: Claim) -> None:
        """Lock the task row and make sure `claim` still holds it; FenceRejected otherwise."""
        row = conn.execute(
            select(tasks.c.attempts, tasks.c.status, tasks.c.worker_id)
            .where(tasks.c.id == claim.task_id).with_for_update()
        ).first()
        if row is None or row.attempts != claim.fence or row.status != RUNNING or (
            row.worker_id != claim.worker_id
        ):
            raise FenceRejected(claim.task_id, claim.fence,
                                current=row.attempts if row else None,
                                status=row.status if row else None)

    @contextmanager
    def job_lock(self, claim: Claim) -> Iterator[Connection]:
        """Hold the job's merge lock and the task's fence for the body of the `with`.

        PostgreSQL: the job's row and the task's row locked `FOR UPDATE` for the transaction;
        SQLite: the database write lock (`BEGIN IMMEDIATE`). Nobody can re-claim the task or
        merge into the job's branch meanwhile; record the result with `complete(..., conn=)`
        inside the body so the merge and the result commit together.
        """
        try:
            with write_transaction(self.store.engine) as conn:
                conn.execute(select(jobs.c.id).where(jobs.c.id == claim.task.job_id)
                             .with_for_update())
                self._check(conn, claim)
                yield conn
        except FenceRejected:
            self._note_refused(claim)
            raise

    def _note_refused(self, claim: Claim) -> None:
        self.store.add_event("refused", f"late write of attempt {claim.fence} refused",
                             job_id=claim.task.job_id, task_id=claim.task_id,
                             worker_id=claim.worker_id)

    def complete(self, claim: Claim, result: Mapping[str, Any], *,
                 conn: Connection | None = None, **fields: Any) -> None:
        """Record a successful attempt; refused (FenceRejected) when the fence moved on.

        `fields` may set branch, commit, merge_commit, usage, cost_usd, log_path, duration_s.
        """
        self._finish(claim, COMPLETED, result, None, conn, fields)

    def fail(self, claim: Claim, error: str, *, result: Mapping[str, Any] | None = None,
             conn: Connection | None = None, **fields: Any) -> None:
        """Record a failed attempt and block the tasks that depend on it (transitively)."""
        self._finish(claim, FAILED, result, error, conn, fields)

    def release(self, claim: Claim, reason: str = "released") -> bool:
        """Give an unfinished task back to the queue (a worker shutting down); False if lost."""
        with write_transaction(self.store.engine) as conn:
            done = conn.execute(update(tasks).where(*_held(claim)).values(
                status=PENDING, worker_id=None, lease_expires_at=None))
            if done.rowcount:
                _event(conn, "released", reason, job_id=claim.task.job_id,
                       task_id=claim.task_id, worker_id=claim.worker_id)
        return done.rowcount == 1

    def _finish(self, claim: Claim, status: str, result: Mapping[str, Any] | None,
                error: str | None, conn: Connection | None, fields: Mapping[str, Any]) -> None:
        allowed = {"branch", "commit", "merge_commit", "usage", "cost_usd", "log_path",
                   "duration_s"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown result fields: {', '.join(sorted(unknown))}")
        if conn is None:
            try:
                with write_transaction(self.store.engine) as own:
                    self._finish_in(own, claim, status, result, error, fields)
            except FenceRejected:
                self._note_refused(claim)
                raise
        else:
            self._finish_in(conn, claim, status, result, error, fields)

    def _finish_in(self, conn: Connection, claim: Claim, status: str,
                   result: Mapping[str, Any] | None, error: str | None,
                   fields: Mapping[str, Any]) -> None:
        self._check(conn, claim)
        job_id = claim.task.job_id
        conn.execute(update(tasks).where(*_held(claim)).values(
            status=status,
            result=json.dumps(result, default=str) if result is not None else None,
            error=error,
            lease_expires_at=None,
            finished_at=db_now(),
            **fields,
        ))
        if fields.get("usage") or fields.get("cost_usd"):
            add_job_usage(conn, job_id, fields.get("usage") or {}, fields.get("cost_usd") or 0.0)
        if status == FAILED:
            blocked = _block_dependents(conn, claim.task_id)
            message = (error or "")[:300] + (f" (blocked: {blocked})" if blocked else "")
        else:
            message = str((result or {}).get("summary", ""))[:300]
        _event(conn, status, message, job_id=job_id, task_id=claim.task_id,
               worker_id=claim.worker_id)
        refresh_job_status(conn, job_id)


def _held(claim: Claim) -> tuple[Any, ...]:
    """The WHERE clause of a write that only the holder of `claim` may make."""
    return (tasks.c.id == claim.task_id, tasks.c.attempts == claim.fence,
            tasks.c.status == RUNNING, tasks.c.worker_id == claim.worker_id)


def _block_dependents(conn: Connection, task_id: int) -> list[int]:
    """Mark every pending task downstream of `task_id` as blocked; returns their ids."""
    blocked: list[int] = []
    frontier = [task_id]
    while frontier:
        rows = conn.execute(
            select(tasks.c.id).join(task_deps, task_deps.c.task_id == tasks.c.id)
            .where(task_deps.c.depends_on.in_(frontier), tasks.c.status == PENDING)
        ).scalars().all()
        frontier = [int(r) for r in rows if int(r) not in blocked]
        if frontier:
            conn.execute(update(tasks).where(tasks.c.id.in_(frontier)).values(
                status=BLOCKED, error=f"blocked: dependency {task_id} failed"))
            blocked += frontier
    return blocked
