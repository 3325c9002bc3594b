"""`JobRunStore`: the job store behind the run store interface, for one task attempt.

The core's steps (`steps_task.execute_task`, `steps_agent.run_task_agent`, `agent_calls`)
write their records through `run.store`: a team-communication document they read and update.
A job worker gives them this store: a validated in-memory document holding the job as the
feature, the claimed task and the tasks it builds on. Writes that matter beyond the attempt go
on to the job store's rows at once, fenced by `(task, fence)`: the attempt's usage and cost
(and its job's totals), and what the agents say (`agent_updates`) as job events. Everything
else (statuses, the agents' live view) stays in the document, where the worker reads the
attempt's outcome; the result itself is recorded by the worker's fenced `complete`/`fail`.

When a fenced write is refused (another attempt owns the task now) the store calls `on_lost`
once, which stops the run: its agent ends at its next turn.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from jsonschema.exceptions import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from .. import state_ops
from ..errors import StateError
from ..state_schema import TOKEN_KEYS, describe_error, encoder, new_state, utc_now
from ..task_record import TaskRecord
from .queue import Claim, TaskQueue
from .records import JobRecord, JobTask

T = TypeVar("T")
ROLE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
FALLBACK_ROLE = "worker"
#: Kinds of job events are short; an agent's status becomes `agent:<status>`.
EVENT_KIND_CHARS = 32


def task_key(task_id: int) -> str:
    """The task's id as the core's records name it."""
    return str(task_id)


def role_name(role: str) -> str:
    """A task's role as the state document accepts it (a bad one reads as the generic one)."""
    return role if ROLE.fullmatch(role or "") else FALLBACK_ROLE


def task_entry(task: JobTask, *, attempts: int = 0) -> TaskRecord:
    """The task as the state document's `tasks[]` entry (pending, not yet started)."""
    return {
        "task_id": task_key(task.id),
        "description": task.prompt,
        "assigned_to": role_name(task.role),
        "dependencies": [task_key(d) for d in task.dependencies],
        "deliverables": list(task.expected_outputs),
        "status": "pending",
        "attempts": attempts,
    }


def done_entry(task: JobTask) -> TaskRecord:
    """A finished dependency as the document shows it: its summary and the files it changed."""
    data = task.result_data() or {}
    entry = task_entry(task)
    entry.update({"status": "completed" if task.status == "completed" else "failed",
                  "branch": task.branch, "commit": task.commit,
                  "merged": bool(task.merge_commit), "merge_commit": task.merge_commit,
                  "dependencies": []})
    entry["result"] = {
        "summary": str(data.get("summary") or task.prompt),
        "completed_items": [],
        "files_modified": [str(f) for f in data.get("files_changed") or []],
        "blockers": [],
    }
    return entry


def initial_document(job: JobRecord, task: JobTask, parents: list[JobTask], *,
                     run_id: str, fence: int) -> dict[str, Any]:
    """The document one attempt starts from: the job as the feature, its task and parents."""
    state = new_state(f"job-{job.id}")
    now = utc_now()
    state["current_feature"] = {
        "id": job.id, "title": job.goal.splitlines()[0][:200] or job.id,
        "description": job.goal, "branch": job.job_branch,
        "base_branch": job.base_branch or "HEAD", "base_commit": job.base_commit,
        "status": "in_progress", "orchestrator": "job-worker", "run_id": run_id,
        "started_at": now, "updated_at": now, "completed_at": None,
    }
    state["tasks"] = [done_entry(p) for p in parents] + [task_entry(task, attempts=fence - 1)]
    state["integration"] = {"status": "in_progress", "branch": job.job_branch, "merges": []}
    return state


class JobRunStore:
    """The run store of one claimed task: a validated document, fenced writes to the rows."""

    def __init__(self, queue: TaskQueue, claim: Claim, document: dict[str, Any]) -> None:
        self.queue = queue
        self.claim = claim
        self.key = task_key(claim.task_id)
        self.on_lost: Callable[[], None] | None = None
        self.lost = False
        self._lock = threading.RLock()
        self._state = self._checked(document)
        self._usage = self._task_usage(self._state)
        self._notes = len(self._state["agent_updates"])

    # -- the store interface -------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._state)

    def update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        """Change a copy, validate it, keep it, then write what the job store must know."""
        with self._lock:
            draft = copy.deepcopy(self._state)
            result = fn(draft)
            draft["last_updated"] = utc_now()
            self._state = self._checked(draft)
            self._publish()
            return result

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The fence already makes this attempt the task's only writer."""
        yield

    def view(self, pick: Callable[[dict[str, Any]], T]) -> T:
        with self._lock:
            return copy.deepcopy(pick(self._state))

    def record(self, *ops: dict[str, Any],
               pick: Callable[[dict[str, Any]], Any] | None = None) -> Any:
        """Small changes, applied and validated like any update (one document, no journal)."""

        def apply(state: dict[str, Any]) -> Any:
            for op in ops:
                state_ops.apply_op(state, op, check=False)
            return copy.deepcopy(pick(state)) if pick is not None else None

        return self.update(apply)

    # -- what the worker reads back --------------------------------------------------------------

    def own_task(self) -> TaskRecord:
        """This attempt's task entry as the steps left it."""
        with self._lock:
            return copy.deepcopy(next(t for t in self._state["tasks"]
                                      if t["task_id"] == self.key))

    def usage(self) -> tuple[dict[str, int], float]:
        """The attempt's usage so far: token counts with `api_calls`, and its cost."""
        with self._lock:
            return self._counts(self._usage), float(self._usage.get("cost_usd") or 0.0)

    def merges(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._state["integration"].get("merges") or [])

    # -- internals -------------------------------------------------------------------------------

    def _checked(self, state: dict[str, Any]) -> dict[str, Any]:
        """The document as the state file would hold it (secrets masked), or StateError."""
        try:
            text = encoder().encode(state)
        except ValidationError as error:
            raise StateError(f"Refusing to record task {self.key}'s state: "
                             f"{describe_error(error)}. Nothing was written.") from None
        except (TypeError, ValueError) as exc:
            raise StateError(f"Refusing to record task {self.key}'s state: {exc}.") from exc
        return dict(json.loads(text))

    def _task_usage(self, state: Mapping[str, Any]) -> dict[str, Any]:
        entry: Mapping[str, Any] = next(
            (t for t in state["tasks"] if t["task_id"] == self.key), {})
        return dict(entry.get("usage") or {})

    @staticmethod
    def _counts(bucket: Mapping[str, Any]) -> dict[str, int]:
        counts = {key: int(bucket.get(key) or 0) for key in TOKEN_KEYS}
        counts["api_calls"] = int(bucket.get("api_calls") or 0)
        return counts

    def _publish(self) -> None:
        """Usage that changed, and new agent updates, go to the job store (fenced)."""
        if self.lost:
            return
        usage = self._task_usage(self._state)
        updates = self._state["agent_updates"][self._notes:]
        self._notes = len(self._state["agent_updates"])
        try:
            if usage != self._usage:
                self._usage = usage
                if not self.queue.record_usage(self.claim, self._counts(usage),
                                               float(usage.get("cost_usd") or 0.0)):
                    self._lose()
                    return
            for entry in updates:
                kind = f"agent:{entry.get('status', 'update')}"[:EVENT_KIND_CHARS]
                message = f"{entry.get('agent')}: {entry.get('message', '')}"
                self.queue.store.events.add(kind, message, job_id=self.claim.task.job_id,
                                           task_id=self.claim.task_id,
                                           worker_id=self.claim.worker_id)
        except SQLAlchemyError:
            pass  # an unreachable database: the lease decides; the worker stops the agent

    def _lose(self) -> None:
        self.lost = True
        if self.on_lost is not None:
            self.on_lost()
