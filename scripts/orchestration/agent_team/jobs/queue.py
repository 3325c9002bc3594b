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

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, exists, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from .db import DEFAULT_MAX_ATTEMPTS, db_now, write_transaction
from .errors import FenceRejected
from .records import JobTask
from .schema import BLOCKED, COMPLETED, FAILED, PENDING, RUNNING, jobs, task_deps, tasks
from .store import JobStore, add_job_usage, opt_in_jobs, refresh_job_status
from .store_events import write_event

DEFAULT_LEASE_S = 60.0
MERGE_POLL_S = 0.2


@dataclass(frozen=True)
class Claim:
    """A task a worker holds: the record as claimed, its fence and the lease length."""

    task: JobTask
    fence: int
    worker_id: str
    lease_s: float

    @property
    def task_id(self) -> int:
        return self.task.id


class TaskQueue:
    """The queue operations over a `JobStore`; `get_task` is the guide's `orch.queue.get_task`."""

    def __init__(self, store: JobStore, *, lease_s: float = DEFAULT_LEASE_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        if lease_s <= 0:
            raise ValueError("the lease must be a positive number of seconds")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.lease_s = float(lease_s)
        self.max_attempts = int(max_attempts)

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
        expired = and_(tasks.c.status == RUNNING, tasks.c.lease_expires_at < db_now())
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
                usage={},
                cost_usd=0.0,
                lease_expiries=tasks.c.lease_expiries + case((expired, 1), else_=0),
            )
            .returning(tasks.c.id, tasks.c.attempts, tasks.c.job_id)
        )
        with write_transaction(self.store.engine) as conn:
            self._fail_worn_out(conn, job_id)
            row = conn.execute(statement).first()
            if row is None:
                return None
            conn.execute(update(jobs).where(jobs.c.id == row.job_id, jobs.c.status == PENDING)
                         .values(status=RUNNING, started_at=db_now()))
            write_event(conn, "claimed", f"attempt {row.attempts}", job_id=row.job_id,
                        task_id=row.id, worker_id=worker_id)
        return Claim(self.store.get_task(row.id), int(row.attempts), worker_id, self.lease_s)

    def _fail_worn_out(self, conn: Connection, job_id: str | None) -> None:
        """Fail the tasks whose leases expired `max_attempts` times in a row.

        A lease expires when its worker died or hung; a task whose process kills its worker
        each time would otherwise be claimed again forever.
        """
        query = select(tasks.c.id, tasks.c.job_id, tasks.c.attempts, tasks.c.worker_id,
                       tasks.c.lease_expiries).where(
            tasks.c.status == RUNNING, tasks.c.lease_expires_at < db_now(),
            tasks.c.lease_expiries + 1 >= self.max_attempts)
        if job_id is not None:
            query = query.where(tasks.c.job_id == job_id)
        for row in conn.execute(query).all():
            count = int(row.lease_expiries) + 1
            error = (f"the lease of this task expired {count} time(s) in a row (attempts "
                     f"{row.attempts - count + 1}..{row.attempts}, last worker {row.worker_id}): "
                     "each time its worker died or hung while running it, so it is not claimed "
                     f"again (max_attempts = {self.max_attempts}). Look at the worker's output "
                     "and the task's log, fix the cause, then retry the task")
            conn.execute(update(tasks).where(tasks.c.id == row.id).values(
                status=FAILED, error=error, lease_expires_at=None, finished_at=db_now(),
                lease_expiries=count, merge_attempt=None))
            blocked = _block_dependents(conn, int(row.id))
            write_event(conn, FAILED,
                        error[:300] + (f" (blocked: {blocked})" if blocked else ""),
                        job_id=row.job_id, task_id=row.id, worker_id=row.worker_id)
            refresh_job_status(conn, row.job_id)

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
        """Lock the job's row and the task's fence for one short transaction.

        PostgreSQL: the job's row and the task's row locked `FOR UPDATE` for the transaction;
        SQLite: the database write lock (`BEGIN IMMEDIATE`). Nobody can re-claim the task
        meanwhile; record the result with `complete(..., conn=)` inside the body. Keep the body
        short (it blocks every writer on SQLite); a merge, which may need the manager, runs
        under `merge_lock` instead.
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

    @contextmanager
    def merge_lock(self, claim: Claim, *, poll_s: float = MERGE_POLL_S) -> Iterator[None]:
        """Hold the job's merge lock for the body: one merge (and conflict resolution) at a
        time per job, with no database transaction left open meanwhile.

        The lock names `(task, fence)` on the job's row and lasts while that attempt's lease
        does, so the worker that renews the lease keeps it, and a dead worker's lock frees
        itself when its lease expires. Waits while another attempt holds it; FenceRejected
        when this attempt's own lease was lost.
        """
        while not self._take_merge_lock(claim):
            time.sleep(poll_s)
        try:
            yield
        finally:
            # An unreachable database: the lock frees itself when the lease expires.
            with contextlib.suppress(SQLAlchemyError), \
                    write_transaction(self.store.engine) as conn:
                _drop_merge_lock(conn, claim)

    def _take_merge_lock(self, claim: Claim) -> bool:
        try:
            with write_transaction(self.store.engine) as conn:
                job = conn.execute(select(jobs.c.merge_task_id, jobs.c.merge_fence)
                                   .where(jobs.c.id == claim.task.job_id)
                                   .with_for_update()).first()
                self._check(conn, claim)
                if job is not None and job.merge_task_id is not None and (
                    (job.merge_task_id, job.merge_fence) != (claim.task_id, claim.fence)
                ) and conn.execute(select(tasks.c.id).where(
                    tasks.c.id == job.merge_task_id, tasks.c.attempts == job.merge_fence,
                    tasks.c.status == RUNNING, tasks.c.lease_expires_at >= db_now())).first():
                    return False
                conn.execute(update(jobs).where(jobs.c.id == claim.task.job_id).values(
                    merge_task_id=claim.task_id, merge_fence=claim.fence))
                return True
        except FenceRejected:
            self._note_refused(claim)
            raise

    def record_merging(self, claim: Claim, *, commit: str, branch: str,
                       result: Mapping[str, Any]) -> None:
        """Say, before merging, which commit this attempt merges and what it produced, so an
        attempt that crashes after the merge is recognised as done by the next one."""
        with write_transaction(self.store.engine) as conn:
            self._check(conn, claim)
            conn.execute(update(tasks).where(*_held(claim)).values(
                merge_attempt=claim.fence, commit=commit, branch=branch,
                result=json.dumps(dict(result), default=str)))

    def record_usage(self, claim: Claim, usage: Mapping[str, int], cost: float) -> bool:
        """Set the attempt's usage so far (and add the difference to its job's totals);
        False when the attempt lost its lease."""
        with write_transaction(self.store.engine) as conn:
            row = conn.execute(select(tasks.c.usage, tasks.c.cost_usd)
                               .where(*_held(claim)).with_for_update()).first()
            if row is None:
                return False
            _set_task_usage(conn, claim, row, usage, cost)
        return True

    def _note_refused(self, claim: Claim) -> None:
        self.store.events.add("refused", f"late write of attempt {claim.fence} refused",
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
                write_event(conn, "released", reason, job_id=claim.task.job_id,
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
        values = {key: value for key, value in fields.items() if key not in ("usage", "cost_usd")}
        if status == FAILED:
            values["merge_attempt"] = None
        conn.execute(update(tasks).where(*_held(claim)).values(
            status=status,
            result=json.dumps(result, default=str) if result is not None else None,
            error=error,
            lease_expires_at=None,
            finished_at=db_now(),
            **values,
        ))
        if "usage" in fields or "cost_usd" in fields:
            row = conn.execute(select(tasks.c.usage, tasks.c.cost_usd)
                               .where(tasks.c.id == claim.task_id)).first()
            _set_task_usage(conn, claim, row, fields.get("usage") or {},
                            float(fields.get("cost_usd") or 0.0))
        _drop_merge_lock(conn, claim)
        if status == FAILED:
            blocked = _block_dependents(conn, claim.task_id)
            message = (error or "")[:300] + (f" (blocked: {blocked})" if blocked else "")
        else:
            message = str((result or {}).get("summary", ""))[:300]
        write_event(conn, status, message, job_id=job_id, task_id=claim.task_id,
                    worker_id=claim.worker_id)
        refresh_job_status(conn, job_id)


def _set_task_usage(conn: Connection, claim: Claim, row: Any, usage: Mapping[str, int],
                    cost: float) -> None:
    """The attempt's totals on its task; what changed since the last write on its job."""
    before = dict(row.usage or {}) if row is not None else {}
    delta = {key: int(value) - int(before.get(key, 0)) for key, value in usage.items()}
    conn.execute(update(tasks).where(tasks.c.id == claim.task_id).values(
        usage=dict(usage), cost_usd=float(cost)))
    spent = float(cost) - float(row.cost_usd or 0.0) if row is not None else float(cost)
    if any(delta.values()) or spent:
        add_job_usage(conn, claim.task.job_id, delta, spent)


def _drop_merge_lock(conn: Connection, claim: Claim) -> None:
    conn.execute(update(jobs).where(
        jobs.c.id == claim.task.job_id, jobs.c.merge_task_id == claim.task_id,
        jobs.c.merge_fence == claim.fence).values(merge_task_id=None, merge_fence=None))


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
