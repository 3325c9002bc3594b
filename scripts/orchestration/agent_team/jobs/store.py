"""`JobStore`: jobs, tasks, workers, events and key/values in one SQL database (SQLite or
PostgreSQL).

This is the durable side of the delegation API, the REST service and the `co` CLI. It holds
records and answers questions; claiming, leases and fenced result writes live in `queue.py`.
Every method is one short transaction, safe to call from several threads and processes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Select, case, delete, func, select, update

from .db import (
    db_now,
    is_postgresql,
    make_engine,
    read_transaction,
    redact_url,
    resolve_db_url,
    write_transaction,
)
from .errors import BadTaskInput, JobNotFound, TaskNotFound
from .priority import parse_priority
from .records import JobRecord, JobStatus, JobTask
from .schema import (
    BLOCKED,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    TASK_STATUSES,
    TERMINAL_STATUSES,
    jobs,
    migrate,
    task_deps,
    tasks,
)
from .store_events import Events, write_event
from .store_kv import KeyValues
from .store_workers import Workers

DEFAULT_ROLE = "worker"
RETRY_NOTE = "\n\nA previous attempt failed: "


def new_job_id() -> str:
    """Short, URL-safe and unique across machines without asking the database."""
    return uuid.uuid4().hex[:12]


class JobStore:
    """The job store on one database URL; create with `JobStore.open(...)`.

    Jobs and tasks are its own methods; worker processes are `workers` (store_workers.py),
    the event log `events` (store_events.py), JSON values by key `kv` (store_kv.py).
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        migrate(self.engine)
        self.workers = Workers(self.engine)
        self.events = Events(self.engine)
        self.kv = KeyValues(self.engine)

    @classmethod
    def open(cls, db: str | os.PathLike[str] | None = None,
             project_dir: str | os.PathLike[str] | None = None) -> JobStore:
        """Open (creating or migrating) the store `resolve_db_url(db, project_dir)` names."""
        return cls(resolve_db_url(db, project_dir))

    @property
    def is_postgresql(self) -> bool:
        return is_postgresql(self.url)

    @property
    def display_url(self) -> str:
        return redact_url(self.url)

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> float:
        """The database's clock, in epoch seconds."""
        with read_transaction(self.engine) as conn:
            return float(conn.execute(select(db_now())).scalar_one())

    # -- jobs --------------------------------------------------------------------------------

    def create_job(
        self,
        goal: str,
        *,
        orchestrator_id: str = "",
        project_dir: str | os.PathLike[str] | None = None,
        workspace: str | None = None,
        remote_url: str | None = None,
        base_branch: str = "",
        base_commit: str | None = None,
        job_branch: str | None = None,
        parent_job_id: str | None = None,
        parent_task_id: int | None = None,
        depth: int = 0,
        settings: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        opt_in: bool = False,
    ) -> JobRecord:
        """Record a new job; its branch defaults to `jobs/<id>`.

        An `opt_in` job's tasks are claimed only by workers asked for it by id (`co`'s
        backlog, which `co run` executes itself).
        """
        if not isinstance(goal, str) or not goal.strip():
            raise BadTaskInput("a job needs a non-empty goal, e.g. create_job('Build the API')")
        job_id = job_id or new_job_id()
        with write_transaction(self.engine) as conn:
            conn.execute(jobs.insert().values(
                id=job_id,
                goal=goal.strip(),
                orchestrator_id=orchestrator_id,
                project_dir=str(Path(project_dir).resolve()) if project_dir else None,
                workspace=workspace,
                remote_url=remote_url,
                base_branch=base_branch,
                base_commit=base_commit,
                job_branch=job_branch or f"jobs/{job_id}",
                parent_job_id=parent_job_id,
                parent_task_id=parent_task_id,
                depth=int(depth),
                settings=dict(settings or {}),
                status=PENDING,
                usage={},
                cost_usd=0.0,
                created_at=db_now(),
                opt_in=bool(opt_in),
            ))
            write_event(conn, "job_created", goal.strip()[:200], job_id=job_id)
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobRecord:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return JobRecord.from_row(row)

    def list_jobs(self, *, limit: int = 50, status: str | None = None) -> list[JobRecord]:
        """Newest first."""
        query = select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(jobs.c.status == status)
        with read_transaction(self.engine) as conn:
            return [JobRecord.from_row(row) for row in conn.execute(query).mappings()]

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set columns of a job (branch names, base commit, error...)."""
        unknown = set(fields) - set(jobs.c.keys())
        if unknown:
            raise ValueError(f"unknown job fields: {', '.join(sorted(unknown))}")
        with write_transaction(self.engine) as conn:
            done = conn.execute(update(jobs).where(jobs.c.id == job_id).values(**fields))
        if done.rowcount == 0:
            raise JobNotFound(job_id)

    def job_status(self, job_id: str) -> JobStatus:
        """Counts by status; `status` is the job's own (pending/running/completed/failed...)."""
        with read_transaction(self.engine) as conn:
            job = conn.execute(select(jobs.c.status, jobs.c.cost_usd)
                               .where(jobs.c.id == job_id)).first()
            if job is None:
                raise JobNotFound(job_id)
            counts = {status: int(n) for status, n in conn.execute(
                select(tasks.c.status, func.count()).where(tasks.c.job_id == job_id)
                .group_by(tasks.c.status))}
        total = sum(counts.values())
        return JobStatus(
            job_id=job_id,
            status=job.status,
            total_tasks=total,
            completed=counts.get(COMPLETED, 0),
            failed=counts.get(FAILED, 0),
            running=counts.get(RUNNING, 0),
            pending=counts.get(PENDING, 0),
            blocked=counts.get(BLOCKED, 0),
            cancelled=counts.get(CANCELLED, 0),
            cost_usd=float(job.cost_usd or 0.0),
            counts=counts,
        )

    def cancel_job(self, job_id: str, reason: str = "cancelled") -> int:
        """Cancel every unfinished task; a running one's worker loses its fence and stops."""
        self.get_job(job_id)
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(tasks)
                .where(tasks.c.job_id == job_id, tasks.c.status.in_((PENDING, RUNNING, BLOCKED)))
                .values(status=CANCELLED, error=reason, lease_expires_at=None,
                        finished_at=db_now())
            )
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                status=CANCELLED, finished_at=db_now(), error=reason))
            write_event(conn, "job_cancelled", reason, job_id=job_id)
        return int(done.rowcount)

    # -- tasks -------------------------------------------------------------------------------

    def add_task(
        self,
        job_id: str,
        prompt: str,
        *,
        priority: object = 5,
        role: str | None = None,
        dependencies: Iterable[int] = (),
        parent_task_id: int | None = None,
        context_files: Sequence[str] | None = None,
        expected_outputs: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> JobTask:
        """Add a task to a job (also while it runs). A parent task is also a dependency: the
        child starts once its parent is merged, on top of its work."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadTaskInput("a task needs a non-empty prompt")
        level = parse_priority(priority)
        deps = sorted({int(d) for d in dependencies} | (
            {int(parent_task_id)} if parent_task_id is not None else set()))
        files = _paths(context_files, "context_files")
        outputs = _paths(expected_outputs, "expected_outputs")
        with write_transaction(self.engine) as conn:
            job = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).first()
            if job is None:
                raise JobNotFound(job_id)
            if job.status == CANCELLED:
                raise BadTaskInput(f"job {job_id} was cancelled; create a new job instead")
            dep_rows = conn.execute(select(tasks.c.id, tasks.c.job_id, tasks.c.status)
                                    .where(tasks.c.id.in_(deps))).all() if deps else []
            found = {row.id: row for row in dep_rows}
            missing = [d for d in deps if d not in found or found[d].job_id != job_id]
            if missing:
                raise BadTaskInput(
                    f"task(s) {', '.join(map(str, missing))} are not tasks of job {job_id}; a "
                    "dependency or parent must be added to the same job first"
                )
            dead = any(found[d].status in (FAILED, CANCELLED, BLOCKED) for d in deps)
            task_id = conn.execute(tasks.insert().values(
                job_id=job_id,
                prompt=prompt.strip(),
                role=role or DEFAULT_ROLE,
                priority=level,
                dependencies=deps,
                parent_task_id=parent_task_id,
                context_files=files,
                expected_outputs=outputs,
                metadata=dict(metadata or {}),
                status=BLOCKED if dead else PENDING,
                attempts=0,
                usage={},
                cost_usd=0.0,
                created_at=db_now(),
            ).returning(tasks.c.id)).scalar_one()
            if deps:
                conn.execute(task_deps.insert(),
                             [{"task_id": task_id, "depends_on": d} for d in deps])
            if job.status in (COMPLETED, FAILED):
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    status=RUNNING, finished_at=None))
            write_event(conn, "task_added", prompt.strip()[:200], job_id=job_id, task_id=task_id)
        return self.get_task(int(task_id))

    def get_task(self, task_id: int) -> JobTask:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(tasks).where(tasks.c.id == int(task_id))).mappings().first()
        if row is None:
            raise TaskNotFound(task_id)
        return JobTask.from_row(row)

    def list_tasks(self, job_id: str | None = None, *,
                   status: str | Sequence[str] | None = None,
                   limit: int | None = None, claimable: bool = False) -> list[JobTask]:
        """Tasks in id order, optionally of one job and with given statuses; `claimable`
        leaves out the tasks of opt-in jobs (what a worker of every job may take)."""
        query = select(tasks).order_by(tasks.c.id)
        if job_id is not None:
            query = query.where(tasks.c.job_id == job_id)
        if claimable:
            query = query.where(tasks.c.job_id.not_in(opt_in_jobs()))
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            query = query.where(tasks.c.status.in_(wanted))
        if limit is not None:
            query = query.limit(limit)
        with read_transaction(self.engine) as conn:
            return [JobTask.from_row(row) for row in conn.execute(query).mappings()]

    def update_task(
        self,
        task_id: int,
        *,
        prompt: str | None = None,
        priority: object = None,
        role: str | None = None,
        status: str | None = None,
        dependencies: Iterable[int] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> JobTask:
        """Edit a task that no worker holds; None leaves a field as it is.

        Dependencies must be tasks of the same job and make no cycle. A status other than
        running drops any worker and lease the task had.
        """
        values: dict[str, Any] = {}
        if prompt is not None:
            if not prompt.strip():
                raise BadTaskInput("a task needs a non-empty prompt")
            values["prompt"] = prompt.strip()
        if priority is not None:
            values["priority"] = parse_priority(priority)
        if role is not None:
            values["role"] = role or DEFAULT_ROLE
        if metadata is not None:
            values["metadata"] = dict(metadata)
        if status is not None:
            if status not in TASK_STATUSES:
                raise BadTaskInput(f"status {status!r} is not one of {', '.join(TASK_STATUSES)}")
            values["status"] = status
            if status != RUNNING:
                values.update(worker_id=None, lease_expires_at=None)
        with write_transaction(self.engine) as conn:
            row = conn.execute(select(tasks.c.job_id, tasks.c.status, tasks.c.worker_id,
                                      tasks.c.lease_expires_at)
                               .where(tasks.c.id == int(task_id))).first()
            if row is None:
                raise TaskNotFound(task_id)
            now = float(conn.execute(select(db_now())).scalar_one())
            if row.worker_id and row.lease_expires_at and row.lease_expires_at > now and (
                    status is not None or dependencies is not None):
                raise BadTaskInput(f"task {task_id} is being run by worker {row.worker_id}; "
                                   "wait for it to finish or cancel its job")
            if dependencies is not None:
                deps = sorted({int(d) for d in dependencies})
                _check_dependencies(conn, int(task_id), row.job_id, deps)
                values["dependencies"] = deps
                conn.execute(delete(task_deps).where(task_deps.c.task_id == int(task_id)))
                if deps:
                    conn.execute(task_deps.insert(),
                                 [{"task_id": int(task_id), "depends_on": d} for d in deps])
            if values:
                conn.execute(update(tasks).where(tasks.c.id == int(task_id)).values(**values))
            write_event(conn, "task_updated", ", ".join(sorted(values)), job_id=row.job_id,
                        task_id=int(task_id))
            refresh_job_status(conn, row.job_id)
        return self.get_task(int(task_id))

    def delete_tasks(self, task_ids: Iterable[int], *, force: bool = False) -> list[int]:
        """Delete tasks no one runs; returns the ids deleted, in order.

        Refused while one of them is running, and when another task depends on one of them
        unless `force`, which drops those dependencies. Ids are never handed out again.
        """
        doomed = sorted({int(t) for t in task_ids})
        if not doomed:
            return []
        with write_transaction(self.engine) as conn:
            rows = conn.execute(select(tasks.c.id, tasks.c.job_id, tasks.c.status)
                                .where(tasks.c.id.in_(doomed))).all()
            missing = sorted(set(doomed) - {int(r.id) for r in rows})
            if missing:
                raise TaskNotFound(missing[0])
            running = [int(r.id) for r in rows if r.status == RUNNING]
            if running:
                raise BadTaskInput(f"task(s) {', '.join(map(str, running))} are running; "
                                   "wait for them to finish or cancel their job first")
            dependents = conn.execute(
                select(tasks.c.id, tasks.c.dependencies)
                .where(tasks.c.id.in_(select(task_deps.c.task_id)
                                      .where(task_deps.c.depends_on.in_(doomed))),
                       tasks.c.id.not_in(doomed))).all()
            if dependents and not force:
                raise BadTaskInput(
                    f"task(s) {', '.join(str(r.id) for r in dependents)} depend on "
                    f"{', '.join(map(str, doomed))}; nothing was deleted (force drops those "
                    "dependencies)")
            for other in dependents:
                kept = [d for d in other.dependencies or () if int(d) not in doomed]
                conn.execute(update(tasks).where(tasks.c.id == other.id)
                             .values(dependencies=kept))
            conn.execute(delete(task_deps).where(task_deps.c.depends_on.in_(doomed)))
            conn.execute(delete(task_deps).where(task_deps.c.task_id.in_(doomed)))
            conn.execute(delete(tasks).where(tasks.c.id.in_(doomed)))
            for job_id in sorted({r.job_id for r in rows}):
                write_event(conn, "tasks_deleted", ", ".join(map(str, doomed)), job_id=job_id)
                refresh_job_status(conn, job_id)
        return doomed

    def delete_task(self, task_id: int, *, force: bool = False) -> list[int]:
        """`delete_tasks([task_id])`."""
        return self.delete_tasks([task_id], force=force)

    def replace_tasks(self, job_id: str, snapshot: Sequence[Mapping[str, Any]]) -> None:
        """Make a job's tasks exactly `snapshot` (id, prompt, role, priority, status,
        dependencies, metadata each), keeping their ids: a rollback of the `co` backlog.

        Ids the job held before are its own and never reused elsewhere, so putting them back
        cannot collide with another job's task.
        """
        self.get_job(job_id)
        wanted = {int(t["id"]) for t in snapshot}
        with write_transaction(self.engine) as conn:
            taken = conn.execute(select(tasks.c.id).where(
                tasks.c.id.in_(wanted), tasks.c.job_id != job_id)).scalars().all()
            if taken:
                raise BadTaskInput(f"task id(s) {', '.join(map(str, taken))} now belong to "
                                   f"another job; the snapshot of {job_id} cannot be restored")
            own = select(tasks.c.id).where(tasks.c.job_id == job_id)
            conn.execute(delete(task_deps).where(task_deps.c.task_id.in_(own)))
            conn.execute(delete(tasks).where(tasks.c.job_id == job_id))
            for item in snapshot:
                status = str(item.get("status") or PENDING)
                if status not in TASK_STATUSES:
                    raise BadTaskInput(f"task {item['id']}: status {status!r} is not valid")
                conn.execute(tasks.insert().values(
                    id=int(item["id"]), job_id=job_id, prompt=str(item["prompt"]),
                    role=str(item.get("role") or DEFAULT_ROLE),
                    priority=parse_priority(item.get("priority", 5)),
                    dependencies=sorted(int(d) for d in item.get("dependencies") or ()),
                    metadata=dict(item.get("metadata") or {}), status=status,
                    context_files=[], expected_outputs=[], attempts=0, usage={},
                    cost_usd=0.0, created_at=float(item.get("created_at") or 0.0)
                    or db_now()))
            pairs = [{"task_id": int(t["id"]), "depends_on": int(d)}
                     for t in snapshot for d in t.get("dependencies") or ()]
            if pairs:
                conn.execute(task_deps.insert(), pairs)
            write_event(conn, "tasks_restored", f"{len(snapshot)} task(s)", job_id=job_id)
            refresh_job_status(conn, job_id)

    def retry_failed(self, job_id: str) -> list[int]:
        """Failed tasks and the dependents they blocked go back to the queue.

        A failed task's prompt gets its last error appended, so the next attempt knows what
        went wrong. The fence is never reset: a late worker of an old attempt stays refused.
        """
        self.get_job(job_id)
        with write_transaction(self.engine) as conn:
            rows = conn.execute(select(tasks.c.id, tasks.c.prompt, tasks.c.error, tasks.c.status)
                                .where(tasks.c.job_id == job_id,
                                       tasks.c.status.in_((FAILED, BLOCKED)))).all()
            for row in rows:
                prompt = row.prompt.split(RETRY_NOTE, 1)[0]
                if row.status == FAILED and row.error:
                    prompt += RETRY_NOTE + row.error[:2000]
                conn.execute(update(tasks).where(tasks.c.id == row.id).values(
                    status=PENDING, prompt=prompt, worker_id=None, lease_expires_at=None,
                    finished_at=None, lease_expiries=0, merge_attempt=None))
            if rows:
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                    status=RUNNING, finished_at=None, error=None))
                write_event(conn, "retry", f"{len(rows)} task(s) back in the queue",
                            job_id=job_id)
        return [int(row.id) for row in rows]



def opt_in_jobs() -> Select[Any]:
    """The ids of opt-in jobs, as a subquery for claims of a worker of every job."""
    return select(jobs.c.id).where(jobs.c.opt_in.is_(True))


def _check_dependencies(conn: Connection, task_id: int, job_id: str, deps: list[int]) -> None:
    """Dependencies of `task_id` must be other tasks of its job, with no cycle through it."""
    if task_id in deps:
        raise BadTaskInput(f"task {task_id} cannot depend on itself")
    found = {int(row.id): row.job_id for row in conn.execute(
        select(tasks.c.id, tasks.c.job_id).where(tasks.c.id.in_(deps)))} if deps else {}
    missing = [d for d in deps if found.get(d) != job_id]
    if missing:
        raise BadTaskInput(f"task(s) {', '.join(map(str, missing))} are not tasks of job "
                           f"{job_id}")
    edges: dict[int, list[int]] = {}
    for row in conn.execute(select(task_deps.c.task_id, task_deps.c.depends_on)
                            .where(task_deps.c.task_id != task_id)):
        edges.setdefault(int(row.task_id), []).append(int(row.depends_on))
    seen: set[int] = set()
    frontier = list(deps)
    while frontier:  # walk down from the new dependencies; reaching task_id is a cycle
        current = frontier.pop()
        if current == task_id:
            raise BadTaskInput(f"those dependencies would make a cycle through task {task_id}")
        if current not in seen:
            seen.add(current)
            frontier.extend(edges.get(current, ()))


def _paths(values: Sequence[str] | None, name: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        raise BadTaskInput(f"{name} must be a list of paths, e.g. [{values!r}]")
    out = []
    for value in values:
        text = str(value).strip().replace("\\", "/")
        if not text or text.startswith("/") or ".." in text.split("/"):
            raise BadTaskInput(
                f"{name}: {value!r} must be a path relative to the repository root, inside it")
        out.append(text)
    return out




def refresh_job_status(conn: Connection, job_id: str) -> str:
    """Derive and store the job's status from its tasks, inside the caller's transaction."""
    counts = {status: int(n) for status, n in conn.execute(
        select(tasks.c.status, func.count()).where(tasks.c.job_id == job_id)
        .group_by(tasks.c.status))}
    current = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
    if current == CANCELLED:
        return CANCELLED
    unfinished = counts.get(PENDING, 0) + counts.get(RUNNING, 0)
    if unfinished:
        status = RUNNING if counts.get(RUNNING, 0) or any(
            counts.get(s, 0) for s in TERMINAL_STATUSES) else PENDING
    elif not counts:
        status = PENDING
    elif counts.get(FAILED, 0) or counts.get(BLOCKED, 0):
        status = FAILED
    else:
        status = COMPLETED
    finished = db_now() if status in (COMPLETED, FAILED) else None
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        status=status,
        finished_at=finished,
        started_at=case((jobs.c.started_at.is_(None), db_now()), else_=jobs.c.started_at)
        if status != PENDING else jobs.c.started_at,
    ))
    return status


def add_job_usage(conn: Connection, job_id: str, usage: Mapping[str, int], cost: float) -> None:
    """Add one task's tokens and cost to its job's totals."""
    row = conn.execute(select(jobs.c.usage).where(jobs.c.id == job_id)).first()
    total = dict(row.usage or {}) if row else {}
    for key, value in usage.items():
        total[key] = int(total.get(key, 0)) + int(value)
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(
        usage=total, cost_usd=jobs.c.cost_usd + float(cost)))


__all__ = ["DEFAULT_ROLE", "JobStore", "add_job_usage", "new_job_id", "opt_in_jobs",
           "refresh_job_status"]
