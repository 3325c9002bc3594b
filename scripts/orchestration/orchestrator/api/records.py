"""Job records of the service: what the API reports, kept in memory and written to disk.

Each record is saved as `<workspace>/job_<root>/jobs/<id>.json` whenever it changes (atomic
replace), so a restarted server still lists finished jobs and their reports. Events of a job
tree are kept in order with a sequence number for the live stream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent_team.fsutil import write_atomic

TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})
MAX_EVENTS_PER_TREE = 20_000


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]


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
class JobRecord:
    job_id: str
    request: str
    settings: JobSettings
    depth: int
    root_job_id: str
    workspace: str
    status: str = "pending"
    parent_job_id: str | None = None
    parent_task_id: str | None = None
    worker_prefix: str = ""
    created_at: str = field(default_factory=utc_now)
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
    started_monotonic: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started_monotonic", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        data = dict(data)
        data["settings"] = JobSettings(**data["settings"])
        return cls(**data)


class JobRegistry:
    """Thread-safe records and event streams; the REST handlers and the runner share one."""

    def __init__(self, workspace_root: Path) -> None:
        self.workspace_root = workspace_root
        self._jobs: dict[str, JobRecord] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.RLock()

    # -- records ---------------------------------------------------------------------------

    def add(self, record: JobRecord) -> None:
        with self._lock:
            self._jobs[record.job_id] = record
            self._events.setdefault(record.root_job_id, [])
            if record.parent_job_id and record.parent_job_id in self._jobs:
                self._jobs[record.parent_job_id].children.append(record.job_id)
            self.save(record)

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[JobRecord]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda r: r.created_at, reverse=True)

    def update(self, job_id: str, **fields: Any) -> JobRecord:
        with self._lock:
            record = self._jobs[job_id]
            for name, value in fields.items():
                setattr(record, name, value)
            self.save(record)
            return record

    def tree(self, job_id: str) -> list[JobRecord]:
        """The job and all its descendants, parents first."""
        with self._lock:
            out: list[JobRecord] = []
            pending = [job_id]
            while pending:
                record = self._jobs.get(pending.pop(0))
                if record is not None:
                    out.append(record)
                    pending.extend(record.children)
            return out

    def job_dir(self, record: JobRecord) -> Path:
        return Path(record.workspace)

    def save(self, record: JobRecord) -> None:
        directory = Path(record.workspace) / "jobs"
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / f"{record.job_id}.json",
                          json.dumps(record.to_json(), indent=2, default=str))

    def load_existing(self) -> int:
        """Read the records a previous server left; jobs it was running are marked failed."""
        count = 0
        if not self.workspace_root.is_dir():
            return 0
        for path in sorted(self.workspace_root.glob("job_*/jobs/*.json")):
            try:
                record = JobRecord.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if not record.finished:
                record.status = "failed"
                record.error = "The server stopped while this job ran."
                record.finished_at = record.finished_at or utc_now()
                self.save(record)
            with self._lock:
                self._jobs[record.job_id] = record
                self._events.setdefault(record.root_job_id, [])
            count += 1
        return count

    # -- events ----------------------------------------------------------------------------

    def emit(self, record: JobRecord, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"kind": kind, "job_id": record.job_id, "depth": record.depth,
                 "time": utc_now(), "t": time.time(), **fields}
        with self._lock:
            events = self._events.setdefault(record.root_job_id, [])
            event["seq"] = len(events) + 1
            if len(events) < MAX_EVENTS_PER_TREE:
                events.append(event)
        return event

    def events_after(self, job_id: str, seq: int) -> tuple[list[dict[str, Any]], bool]:
        """Events of the job's tree after `seq`, and whether the whole tree has finished."""
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                return [], True
            events = self._events.get(record.root_job_id, [])
            ids = {r.job_id for r in self.tree(job_id)}
            chosen = [e for e in events[seq:] if e["job_id"] in ids]
            return chosen, all(r.finished for r in self.tree(job_id))

    def running_count(self) -> int:
        with self._lock:
            return sum(1 for r in self._jobs.values() if r.status == "running")

    def ids(self) -> Iterable[str]:
        with self._lock:
            return list(self._jobs)
