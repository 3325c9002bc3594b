"""The project's task backlog: short integer ids, priorities, dependencies, subtasks, statuses.

`Backlog` is the interface `co` works against. `FileBacklog` keeps it in one schema-validated
JSON file (`.ai-agents/state/backlog.json`), written atomically under a cross-process lock; a
job-store implementation plugs in behind the same methods.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import filelock
import jsonschema

from ..errors import StateError, UserError
from ..fsutil import write_atomic

BACKLOG_RELATIVE_PATH = Path(".ai-agents") / "state" / "backlog.json"
SCHEMA_VERSION = 1
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


_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema_version", "next_id", "tasks"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "next_id": {"type": "integer", "minimum": 1},
        "tasks": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "description", "priority", "status", "dependencies"],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "description": {"type": "string", "minLength": 1},
                "priority": {"type": "integer", "minimum": 1, "maximum": 10},
                "status": {"enum": list(STATUSES)},
                "dependencies": {"type": "array", "items": {"type": "integer"}},
                "parent": {"type": ["integer", "null"]},
                "role": {"type": ["string", "null"]},
                "details": {"type": "string"},
                "source": {"type": ["string", "null"]},
                "runs": {"type": "array", "items": {"type": "object"}},
            },
        }},
    },
}


class FileBacklog(Backlog):
    """The backlog in `.ai-agents/state/backlog.json`."""

    def __init__(self, project_dir: Path) -> None:
        self.path = project_dir / BACKLOG_RELATIVE_PATH
        self._lock = filelock.FileLock(str(self.path) + ".lock", timeout=30)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema_version": SCHEMA_VERSION, "next_id": 1, "tasks": []}
        except ValueError as exc:
            raise StateError(f"The backlog {self.path} is not valid JSON ({exc}); fix it or "
                             "roll back with `co rollback`.") from None
        self._validate(data)
        return data

    def _validate(self, data: Any) -> None:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(_SCHEMA).iter_errors(data))
        if error is not None:
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                  for p in error.absolute_path)
            raise StateError(f"The backlog {self.path} is invalid at {where}: {error.message}.")

    def _write(self, data: dict[str, Any]) -> None:
        self._validate(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def all(self) -> list[BacklogTask]:
        return [BacklogTask.from_json(t) for t in self._read()["tasks"]]

    def add(self, description: str, *, priority: object = None, dependencies: Iterable[int] = (),
            parent: int | None = None, role: str | None = None, details: str = "",
            source: str | None = None) -> BacklogTask:
        if not description.strip():
            raise BadBacklogInput("The task description is empty: co add \"what to do\".")
        level = parse_priority(priority)
        with self._lock:
            data = self._read()
            known = {t["id"] for t in data["tasks"]}
            wanted = set(dependencies) | ({parent} if parent is not None else set())
            missing = sorted(wanted - known)
            if missing:
                raise BadBacklogInput(f"Task(s) {', '.join(map(str, missing))} do not exist; "
                                      "add them first.")
            now = time.time()
            task = BacklogTask(data["next_id"], description.strip(), level, "pending",
                               tuple(sorted(set(dependencies))), parent, role, details, source,
                               now, now)
            data["tasks"].append(task.to_json())
            data["next_id"] += 1
            self._write(data)
        return task

    def update(self, task_id: int, **fields: Any) -> BacklogTask:
        if "status" in fields:
            fields["status"] = parse_status(fields["status"])
        if "priority" in fields:
            fields["priority"] = parse_priority(fields["priority"])
        with self._lock:
            data = self._read()
            for index, raw in enumerate(data["tasks"]):
                if raw["id"] == task_id:
                    task = replace(BacklogTask.from_json(raw), **fields, updated_at=time.time())
                    data["tasks"][index] = task.to_json()
                    self._write(data)
                    return task
        raise BadBacklogInput(f"No task {task_id} in the backlog. List them with `co list`.")

    def delete(self, task_id: int, *, force: bool = False) -> list[int]:
        with self._lock:
            data = self._read()
            tasks = {t["id"]: t for t in data["tasks"]}
            if task_id not in tasks:
                raise BadBacklogInput(f"No task {task_id} in the backlog.")
            doomed = {task_id}
            frontier = [task_id]
            while frontier:  # subtasks go with their parent
                current = frontier.pop()
                for t in tasks.values():
                    if t.get("parent") == current and t["id"] not in doomed:
                        doomed.add(t["id"])
                        frontier.append(t["id"])
            running = [i for i in sorted(doomed) if tasks[i]["status"] == "in-progress"]
            if running:
                raise BadBacklogInput(f"Task {', '.join(map(str, running))} is running; wait for "
                                      "the run to end (or stop it) before deleting.")
            dependents = sorted(t["id"] for t in tasks.values() if t["id"] not in doomed
                                and doomed & set(t["dependencies"]))
            if dependents and not force:
                raise BadBacklogInput(
                    f"Task(s) {', '.join(map(str, dependents))} depend on task {task_id}. "
                    "Nothing was deleted. Use --force to delete it and drop those dependencies.")
            data["tasks"] = [t for t in data["tasks"] if t["id"] not in doomed]
            for t in data["tasks"]:
                t["dependencies"] = [d for d in t["dependencies"] if d not in doomed]
            self._write(data)
        return sorted(doomed)

    def restore(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            data = self._read()
            restored = [BacklogTask.from_json(t).to_json() for t in tasks]
            top = max([t["id"] for t in restored] + [data["next_id"] - 1, 0])
            self._write({"schema_version": SCHEMA_VERSION, "next_id": top + 1,
                         "tasks": restored})


def open_backlog(project_dir: Path) -> Backlog:
    """The project's backlog (the file; the job store once it provides the same methods)."""
    return FileBacklog(project_dir)
