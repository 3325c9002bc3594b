"""Typed rows of the job store: what callers get back instead of raw database rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import RowMapping


@dataclass(frozen=True)
class JobRecord:
    """One job: a goal, where its repository is, its branches and what it cost so far."""

    id: str
    goal: str
    orchestrator_id: str
    project_dir: str | None
    workspace: str | None
    remote_url: str | None
    base_branch: str
    base_commit: str | None
    job_branch: str
    parent_job_id: str | None
    parent_task_id: int | None
    depth: int
    settings: dict[str, Any]
    status: str
    usage: dict[str, Any]
    cost_usd: float
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    merge_task_id: int | None = None
    merge_fence: int | None = None
    opt_in: bool = False

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> JobRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class JobTask:
    """One task. `attempts` is its fence: the number of times it was claimed."""

    id: int
    job_id: str
    prompt: str
    role: str
    priority: int
    dependencies: list[int]
    parent_task_id: int | None
    context_files: list[str]
    expected_outputs: list[str]
    metadata: dict[str, Any]
    status: str
    attempts: int
    lease_expires_at: float | None
    worker_id: str | None
    branch: str | None
    commit: str | None
    merge_commit: str | None
    result: str | None
    error: str | None
    usage: dict[str, Any]
    cost_usd: float
    log_path: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    merge_attempt: int | None = None
    lease_expiries: int = 0

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> JobTask:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def fence(self) -> int:
        return self.attempts

    def result_data(self) -> dict[str, Any] | None:
        """The result JSON decoded, None while there is none."""
        return json.loads(self.result) if self.result else None

    def to_dict(self) -> dict[str, Any]:
        """The guide's task dict: `id`, `prompt`, `status`, `result` (a JSON string), `error`,
        and every other column."""
        return asdict(self)


@dataclass(frozen=True)
class WorkerRecord:
    """A worker process as it last reported itself."""

    id: str
    host: str
    pid: int
    status: str
    current_task_id: int | None
    tasks_done: int
    started_at: float
    heartbeat_at: float
    alive: bool = False

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any], *, now: float,
                 stale_after: float) -> WorkerRecord:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "alive"}
        alive = row["status"] != "stopped" and now - float(row["heartbeat_at"]) < stale_after
        return cls(**values, alive=alive)


@dataclass(frozen=True)
class EventRecord:
    """One line of a job's history, for dashboards."""

    id: int
    job_id: str | None
    task_id: int | None
    worker_id: str | None
    kind: str
    message: str
    created_at: float

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> EventRecord:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobStatus:
    """Counts of a job's tasks: the guide's `get_job_status` fields."""

    job_id: str
    status: str
    total_tasks: int
    completed: int
    failed: int
    running: int
    pending: int
    blocked: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def progress_pct(self) -> float:
        if not self.total_tasks:
            return 0.0
        done = self.completed + self.failed + self.blocked + self.cancelled
        return round(100.0 * done / self.total_tasks, 1)

    @property
    def finished(self) -> bool:
        return self.total_tasks > 0 and self.running == 0 and self.pending == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["progress_pct"] = self.progress_pct
        return data
