"""The service's jobs, kept in the job store: one store job per service job, one store task per
planned task, events in the store's event table.

What the store's columns do not hold lives next to them: the service's settings of a job in
the job's `settings` JSON, and its outcome (the status the API reports, report paths, result
branch) under the key `service:job:<id>` of the store's key/value table. The API status is the
outcome's, because the store derives a job's own status from its tasks (every task merged
means "completed" there) while a service job still has its integration and reports to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent_team.jobs import JobNotFound, JobStore, JobTask
from agent_team.jobs import JobRecord as StoreJob
from agent_team.jobs.db import read_transaction
from agent_team.jobs.schema import events as events_table
from agent_team.jobs.schema import jobs as jobs_table
from agent_team.jobs.store import new_job_id
from sqlalchemy import RowMapping, select

ORCHESTRATOR_ID = "service"
TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})
MAX_EVENT_CHARS = 1000
MAX_EVENT_BATCH = 500
DIED = "The server stopped while this job ran; submit it again."


def iso(epoch: float | None) -> str | None:
    """An epoch time of the store as the API's ISO-8601 UTC text."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    return str(iso(datetime.now(timezone.utc).timestamp()))


@dataclass(frozen=True)
class JobSettings:
    """The effective settings of one job: the request's, capped by the server's."""

    max_workers: int
    default_timeout: float
    max_retries: int
    enable_recursion: bool
    max_depth: int
    limits: dict[str, Any] = field(default_factory=dict)
    project_dir: str | None = None


@dataclass
class ServiceJob:
    """A service job as the API and the reports see it, read from the store."""

    job_id: str
    request: str
    settings: JobSettings
    depth: int
    root_job_id: str
    workspace: str
    status: str = "pending"
    parent_job_id: str | None = None
    parent_task_id: str | None = None
    parent_store_task: int | None = None
    worker_prefix: str = ""
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    repository: str | None = None
    branch: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=lambda: {"api_calls": 0, "tokens": 0,
                                                           "cost_usd": 0.0})
    children: list[str] = field(default_factory=list)
    final_report: str | None = None
    report: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def outcome_key(job_id: str) -> str:
    return f"service:job:{job_id}"


class ServiceJobs:
    """The service's view of a `JobStore`: create, read and finish jobs; their events."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    @classmethod
    def open(cls, workspace_root: Path, url: str | None = None) -> ServiceJobs:
        """The store at `url` (a path or a database URL), by default
        `<workspace_root>/jobs.db`."""
        workspace_root.mkdir(parents=True, exist_ok=True)
        return cls(JobStore.open(url or str(workspace_root / "jobs.db"), workspace_root))

    # -- writing -------------------------------------------------------------------------

    def create(self, request: str, settings: JobSettings, *, depth: int, workspace: str,
               root_job_id: str | None = None, parent: ServiceJob | None = None,
               parent_task_id: str | None = None, parent_store_task: int | None = None,
               worker_prefix: str = "", notes: list[str] | None = None,
               job_id: str | None = None) -> ServiceJob:
        job_id = job_id or new_job_id()
        service = {"settings": asdict(settings), "root_job_id": root_job_id or job_id,
                   "parent_task_id": parent_task_id, "worker_prefix": worker_prefix,
                   "notes": list(notes or [])}
        self.store.create_job(
            request, orchestrator_id=ORCHESTRATOR_ID, workspace=workspace,
            project_dir=settings.project_dir, job_branch=f"feature/job-{job_id}",
            parent_job_id=parent.job_id if parent else None, parent_task_id=parent_store_task,
            depth=depth, settings={"service": service}, job_id=job_id)
        self.set_outcome(job_id, status="pending")
        return self.get_required(job_id)

    def set_outcome(self, job_id: str, **fields: Any) -> None:
        """Update the job's outcome (status, error, report paths, branch, repository)."""
        current = dict(self.store.kv.load(outcome_key(job_id), {}) or {})
        current.update(fields)
        self.store.kv.save(outcome_key(job_id), current)
        columns: dict[str, Any] = {k: v for k, v in fields.items() if k == "error"}
        if fields.get("status") in TERMINAL:
            columns.update(status=fields["status"], finished_at=self.store.now())
        elif fields.get("status") == "running":
            columns.update(started_at=self.store.now())
        if fields.get("repository"):
            columns["project_dir"] = fields["repository"]
        if columns:
            self.store.update_job(job_id, **columns)

    def set_usage(self, job_id: str, usage: Mapping[str, Any]) -> None:
        """The job's own model usage (its plan, tasks and review; children count apart)."""
        cost = usage.get("cost_usd")
        self.store.update_job(job_id, usage=dict(usage), cost_usd=float(cost or 0.0))

    def emit(self, job: ServiceJob, kind: str, **fields: Any) -> None:
        """One event of the job, in the store's event table (its fields as compact JSON)."""
        data = {k: v for k, v in fields.items() if v is not None}
        data["depth"] = job.depth
        text = json.dumps(data, default=str)
        if len(text) > MAX_EVENT_CHARS:
            data = {k: (v[:200] if isinstance(v, str) else v) for k, v in data.items()
                    if isinstance(v, (str, int, float, bool))}
            text = json.dumps(data, default=str)
            if len(text) > MAX_EVENT_CHARS:
                text = json.dumps({"depth": job.depth, "truncated": True})
        self.store.events.add(kind, text, job_id=job.job_id,
                             worker_id=str(fields.get("worker_id") or "") or None)

    # -- reading -------------------------------------------------------------------------

    def get(self, job_id: str, *, with_tasks: bool = True) -> ServiceJob | None:
        try:
            row = self.store.get_job(job_id)
        except JobNotFound:
            return None
        if row.orchestrator_id != ORCHESTRATOR_ID:
            return None
        return self.view(row, with_tasks=with_tasks)

    def get_required(self, job_id: str) -> ServiceJob:
        job = self.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def view(self, row: StoreJob, *, with_tasks: bool = True) -> ServiceJob:
        from .results import task_entries

        service = dict(row.settings.get("service") or {})
        outcome = dict(self.store.kv.load(outcome_key(row.id), {}) or {})
        usage = {"api_calls": 0, "tokens": 0, "cost_usd": 0.0, **(row.usage or {})}
        job = ServiceJob(
            job_id=row.id, request=row.goal, settings=JobSettings(**service["settings"]),
            depth=row.depth, root_job_id=str(service.get("root_job_id") or row.id),
            workspace=row.workspace or "", status=str(outcome.get("status", "pending")),
            parent_job_id=row.parent_job_id, parent_task_id=service.get("parent_task_id"),
            parent_store_task=row.parent_task_id,
            worker_prefix=str(service.get("worker_prefix") or ""),
            created_at=iso(row.created_at) or "", started_at=iso(row.started_at),
            finished_at=iso(row.finished_at) if outcome.get("status") in TERMINAL else None,
            error=outcome.get("error"), notes=list(service.get("notes") or []),
            repository=outcome.get("repository"), branch=outcome.get("branch"),
            usage=usage, final_report=outcome.get("final_report"),
            report=outcome.get("report"),
            children=[c.id for c in self.child_rows(row.id)],
        )
        if with_tasks:
            job.tasks = task_entries(self, job, public=True)
        return job

    def rows(self, limit: int = 500) -> list[StoreJob]:
        return [r for r in self.store.list_jobs(limit=limit * 4)
                if r.orchestrator_id == ORCHESTRATOR_ID][:limit]

    def all(self, *, limit: int = 500, with_tasks: bool = True) -> list[ServiceJob]:
        """Jobs, newest first, children included."""
        return [self.view(r, with_tasks=with_tasks) for r in self.rows(limit)]

    def child_rows(self, job_id: str) -> list[StoreJob]:
        query = (select(jobs_table).where(jobs_table.c.parent_job_id == job_id,
                                          jobs_table.c.orchestrator_id == ORCHESTRATOR_ID)
                 .order_by(jobs_table.c.created_at))
        with read_transaction(self.store.engine) as conn:
            return [StoreJob.from_row(row) for row in conn.execute(query).mappings()]

    def tasks(self, job_id: str) -> list[JobTask]:
        return self.store.list_tasks(job_id)

    def tree(self, job_id: str, *, with_tasks: bool = False) -> list[ServiceJob]:
        """The job and all its descendants, parents first."""
        out: list[ServiceJob] = []
        pending = [job_id]
        while pending:
            job = self.get(pending.pop(0), with_tasks=with_tasks)
            if job is not None:
                out.append(job)
                pending.extend(job.children)
        return out

    def running_count(self) -> int:
        return sum(1 for j in self.all(with_tasks=False) if j.status == "running")

    def events_after(self, job_id: str, after: int) -> tuple[list[dict[str, Any]], bool]:
        """Events of the job's tree after event id `after`, and whether the tree finished."""
        tree = self.tree(job_id)
        if not tree:
            return [], True
        finished = all(j.finished for j in tree)  # read first: no event is missed after it
        ids = [j.job_id for j in tree]
        query = (select(events_table).where(events_table.c.job_id.in_(ids),
                                            events_table.c.id > after)
                 .order_by(events_table.c.id).limit(MAX_EVENT_BATCH))
        with read_transaction(self.store.engine) as conn:
            rows = conn.execute(query).mappings().all()
        return [event_dict(row) for row in rows], finished

    # -- a restarted server ----------------------------------------------------------------

    def recover(self) -> list[str]:
        """Jobs a previous server left unfinished are marked failed, not resumed: their
        agents' conversations died with that process. Returns their ids."""
        failed = []
        for job in self.all(with_tasks=False):
            if job.finished:
                continue
            self.store.cancel_job(job.job_id, DIED)
            self.set_outcome(job.job_id, status="failed", error=DIED)
            self.emit(job, "job_finished", status="failed", error=DIED)
            failed.append(job.job_id)
        return failed


def event_dict(row: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """A stored event as the stream sends it: the store's columns, then the service's fields."""
    event: dict[str, Any] = {"seq": int(row["id"]), "kind": row["kind"], "job_id": row["job_id"],
                             "store_task_id": row["task_id"], "worker_id": row["worker_id"],
                             "time": iso(row["created_at"]), "t": row["created_at"]}
    message = str(row["message"] or "")
    fields: Any = None
    if message.startswith("{"):
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
    if isinstance(fields, dict):
        event.update({k: v for k, v in fields.items() if k not in ("seq", "job_id", "time")})
    elif message:
        event["message"] = message
    return event
