"""The project's task backlog: short integer ids, priorities, dependencies, subtasks, statuses.

`Backlog` is the interface `co` works against; `JobStoreBacklog` keeps it in the project's job
store (SQLite `.ai-agents/jobs.db` by default, PostgreSQL through `storage.url`), as the tasks
of one job, so workers and dashboards of the job store see the same tasks.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jobs import DEFAULT_ROLE, JobNotFound, JobStore
from ..jobs.records import JobTask

STATUSES = ("pending", "in-progress", "done", "failed", "blocked", "cancelled")
STATUS_ALIASES = {"in_progress": "in-progress", "running": "in-progress", "completed": "done",
                  "complete": "done", "todo": "pending"}
PRIORITY_WORDS = {"critical": 10, "high": 8, "medium": 5, "normal": 5, "low": 2}
DEFAULT_PRIORITY = 5


class BadBacklogInput(UserError):
    """A task id, status, priority or dependency that the backlog cannot take."""


def parse_priority(value: object) -> int:
    """1-10 (10 most urgent) or high / medium / low."""
    if value is None:
        return DEFAULT_PRIORITY
    text = str(value).strip().lower()
    if text in PRIORITY_WORDS:
        return PRIORITY_WORDS[text]
    if text.isdigit() and 1 <= int(text) <= 10:
        return int(text)
    raise BadBacklogInput(f"Priority {value!r} is not valid: use high, medium, low or an "
                          "integer from 1 to 10 (10 most urgent).")


def priority_word(priority: int) -> str:
    return "high" if priority >= 7 else "medium" if priority >= 4 else "low"


def parse_status(value: str) -> str:
    text = value.strip().lower()
    text = STATUS_ALIASES.get(text, text)
    if text not in STATUSES:
        raise BadBacklogInput(f"Status {value!r} is not valid: use one of {', '.join(STATUSES)}.")
    return text


@dataclass(frozen=True)
class BacklogTask:
    """One backlog entry; `runs` records each run that worked on it (branch, merge, tests)."""

    id: int
    description: str
    priority: int = DEFAULT_PRIORITY
    status: str = "pending"
    dependencies: tuple[int, ...] = ()
    parent: int | None = None
    role: str | None = None
    details: str = ""
    source: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    runs: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def priority_name(self) -> str:
        return priority_word(self.priority)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dependencies"] = list(self.dependencies)
        data["runs"] = [dict(r) for r in self.runs]
        data["priority_name"] = self.priority_name
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BacklogTask:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["dependencies"] = tuple(int(d) for d in data.get("dependencies") or ())
        fields["runs"] = tuple(dict(r) for r in data.get("runs") or ())
        return cls(**fields)


class Backlog(ABC):
    """What `co` needs from wherever the backlog lives."""

    @abstractmethod
    def all(self) -> list[BacklogTask]:
        """Every task, by id."""

    @abstractmethod
    def add(self, description: str, *, priority: object = None, dependencies: Iterable[int] = (),
            parent: int | None = None, role: str | None = None, details: str = "",
            source: str | None = None) -> BacklogTask:
        """Add a pending task; dependencies and parent must exist."""

    @abstractmethod
    def update(self, task_id: int, **fields: Any) -> BacklogTask:
        """Change fields of one task (status, priority, role, runs, ...)."""

    @abstractmethod
    def delete(self, task_id: int, *, force: bool = False) -> list[int]:
        """Delete a task (and its subtasks); returns the ids removed."""

    @abstractmethod
    def restore(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """Replace the whole backlog with a snapshot (rollback)."""

    def get(self, task_id: int) -> BacklogTask:
        for task in self.all():
            if task.id == task_id:
                return task
        raise BadBacklogInput(f"No task {task_id} in the backlog. List them with `co list`.")

    def snapshot(self) -> list[dict[str, Any]]:
        return [task.to_json() for task in self.all()]

    def dependents(self, task_id: int) -> list[BacklogTask]:
        return [t for t in self.all() if task_id in t.dependencies]

    def subtasks(self, task_id: int) -> list[BacklogTask]:
        return [t for t in self.all() if t.parent == task_id]


#: The backlog's statuses in the job store's words, and back.
TO_STORE = {"pending": "pending", "in-progress": "running", "done": "completed",
            "failed": "failed", "blocked": "blocked", "cancelled": "cancelled"}
FROM_STORE = {v: k for k, v in TO_STORE.items()}
#: The job that holds the project's backlog in the job store.
BACKLOG_JOB = "backlog"


class JobStoreBacklog(Backlog):
    """The backlog as the tasks of one job (`backlog`) in the project's job store.

    Ids are the store's task ids, never handed out twice. The job is opt-in: `co run`
    executes it, and job-store workers take its tasks only when asked for it by id
    (`claude_coordinator.py N --job backlog`).
    """

    def __init__(self, store: JobStore, project_dir: Path) -> None:
        self.store = store
        try:
            job = store.get_job(BACKLOG_JOB)
        except JobNotFound:
            store.create_job("The project's backlog (co)", project_dir=project_dir,
                             job_id=BACKLOG_JOB, job_branch="co/backlog", opt_in=True)
        else:
            if not job.opt_in:  # made before backlog jobs were opt-in
                store.update_job(BACKLOG_JOB, opt_in=True)

    @staticmethod
    def _task(row: JobTask) -> BacklogTask:
        meta = dict(row.metadata or {})
        return BacklogTask(
            id=row.id, description=row.prompt, priority=row.priority,
            status=FROM_STORE.get(row.status, "pending"),
            dependencies=tuple(int(d) for d in row.dependencies or ()),
            parent=meta.get("parent"), role=meta.get("role"), details=meta.get("details", ""),
            source=meta.get("source"), created_at=float(row.created_at or 0),
            updated_at=float(meta.get("updated_at") or row.created_at or 0),
            runs=tuple(meta.get("runs") or ()))

    def all(self) -> list[BacklogTask]:
        return [self._task(row) for row in self.store.list_tasks(BACKLOG_JOB)]

    def add(self, description: str, *, priority: object = None, dependencies: Iterable[int] = (),
            parent: int | None = None, role: str | None = None, details: str = "",
            source: str | None = None) -> BacklogTask:
        if not description.strip():
            raise BadBacklogInput("The task description is empty: co add \"what to do\".")
        level = parse_priority(priority)
        known = {t.id for t in self.all()}
        missing = sorted((set(dependencies) | ({parent} if parent is not None else set()))
                         - known)
        if missing:
            raise BadBacklogInput(f"Task(s) {', '.join(map(str, missing))} do not exist; "
                                  "add them first.")
        # The parent lives in metadata: in the store a parent is also a dependency, while a
        # backlog parent is finished through its subtasks.
        record = self.store.add_task(
            BACKLOG_JOB, description.strip(), priority=level, role=role or None,
            dependencies=sorted(set(dependencies)),
            metadata={"parent": parent, "role": role, "details": details, "source": source,
                      "runs": []})
        return self.get(record.id)

    def update(self, task_id: int, **fields: Any) -> BacklogTask:
        current = self.get(task_id)
        if "status" in fields:
            fields["status"] = parse_status(fields["status"])
        if "priority" in fields:
            fields["priority"] = parse_priority(fields["priority"])
        task = replace(current, **fields, updated_at=time.time())
        row = self._row(task)
        self.store.update_task(
            task_id, prompt=row["prompt"], priority=row["priority"], role=row["role"],
            status=row["status"], metadata=row["metadata"],
            dependencies=row["dependencies"] if task.dependencies != current.dependencies
            else None)
        return task

    @staticmethod
    def _row(task: BacklogTask) -> dict[str, Any]:
        return {"id": task.id, "prompt": task.description, "priority": task.priority,
                "status": TO_STORE[task.status], "role": task.role or DEFAULT_ROLE,
                "dependencies": list(task.dependencies), "created_at": task.created_at,
                "metadata": {"parent": task.parent, "role": task.role, "details": task.details,
                             "source": task.source, "runs": [dict(r) for r in task.runs],
                             "updated_at": task.updated_at}}

    def delete(self, task_id: int, *, force: bool = False) -> list[int]:
        everything = {t.id: t for t in self.all()}
        if task_id not in everything:
            raise BadBacklogInput(f"No task {task_id} in the backlog.")
        doomed = {task_id}
        frontier = [task_id]
        while frontier:  # subtasks go with their parent
            current = frontier.pop()
            for t in everything.values():
                if t.parent == current and t.id not in doomed:
                    doomed.add(t.id)
                    frontier.append(t.id)
        running = [i for i in sorted(doomed) if everything[i].status == "in-progress"]
        if running:
            raise BadBacklogInput(f"Task {', '.join(map(str, running))} is running; wait for the "
                                  "run to end (or stop it) before deleting.")
        dependents = sorted(t.id for t in everything.values()
                            if t.id not in doomed and doomed & set(t.dependencies))
        if dependents and not force:
            raise BadBacklogInput(
                f"Task(s) {', '.join(map(str, dependents))} depend on task {task_id}. "
                "Nothing was deleted. Use --force to delete it and drop those dependencies.")
        return self.store.delete_tasks(doomed, force=True)  # dependents were checked above

    def restore(self, snapshot: Sequence[Mapping[str, Any]]) -> None:
        self.store.replace_tasks(
            BACKLOG_JOB, [self._row(BacklogTask.from_json(t)) for t in snapshot])


def open_backlog(project_dir: Path) -> Backlog:
    """The project's backlog in its job store (`.ai-agents/jobs.db` unless configured)."""
    return JobStoreBacklog(JobStore.open(project_dir=project_dir), project_dir)
