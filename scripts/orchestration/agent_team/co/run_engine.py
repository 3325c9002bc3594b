"""`co run`: the backlog's pending tasks through the file-based engine.

The manager orders the pending tasks (assigning roles, splitting a large one into `T<id>.<n>`
subtasks); workers run them in worktrees; each finished branch is merged into the run's branch
after an automatic checkpoint; the orchestrator runs the tests; the manager reviews. The result
of every plan task goes back to its backlog task.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent_loop import AgentHooks, AgentResult
from ..errors import AgentTeamError, PlanError
from ..models import ChatModel, Usage
from .backlog import Backlog, BacklogTask
from .checkpoints import CheckpointType, RollbackManager
from .settings import CoSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/orchestration
from file_based_orchestrator import FileBasedOrchestrator  # noqa: E402

PLAN_ID = re.compile(r"T(\d+)(?:\.\d+)?")


class WorkerError(AgentTeamError):
    """A worker could not carry a task out (a timeout, a custom worker's own failure)."""


@dataclass
class WorkerTask:
    """One task as a worker sees it; `process_task` returns it with status and result set."""

    task_id: str
    description: str
    role: str
    working_dir: Path
    dependencies: tuple[str, ...] = ()
    priority: str = "medium"
    backlog_id: int | None = None
    status: str = "pending"
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


#: A worker: takes a WorkerTask whose working_dir is the task's worktree, edits files there,
#: and returns the task with status "completed" or "failed".
WorkerFunction = Callable[[WorkerTask], WorkerTask]


def backlog_id_of(plan_task_id: str) -> int | None:
    match = PLAN_ID.fullmatch(plan_task_id)
    return int(match.group(1)) if match else None


def backlog_feature(tasks: Sequence[BacklogTask], run_label: str) -> str:
    """The text the manager plans from: a title line, then every pending task."""
    lines = [f"Backlog run {run_label}: tasks {', '.join(str(t.id) for t in tasks)}", ""]
    for t in tasks:
        deps = ", ".join(f"T{d}" for d in t.dependencies if any(o.id == d for o in tasks))
        lines.append(f"- T{t.id} [priority {t.priority_name}]"
                     + (f" [role {t.role}]" if t.role else "")
                     + (f" [after {deps}]" if deps else "") + f": {t.description}"
                     + (f"\n  {t.details}" if t.details else ""))
    lines += ["", "Plan exactly these backlog tasks. Use task_id T<number> for a backlog task, "
              "or split a large one into subtasks T<number>.1, T<number>.2, ... (with "
              "dependencies between them where order matters). Keep the dependencies shown "
              "with [after ...], assign each task the best role, and set its priority."]
    return "\n".join(lines)


class BacklogOrchestrator(FileBasedOrchestrator):
    """The file-based engine with the backlog as its plan source and pluggable workers."""

    orchestrator_name = "co"

    def __init__(
        self,
        project_dir: str | Path,
        *,
        backlog_tasks: Sequence[BacklogTask],
        settings: CoSettings,
        worker: WorkerFunction | None = None,
        checkpoints: RollbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(project_dir, **kwargs)
        self.backlog_tasks = list(backlog_tasks)
        self.co_settings = settings
        self.worker = worker
        self.checkpoints = checkpoints
        self._task_started = threading.local()

    # -- planning ----------------------------------------------------------------------------

    def manager_create_tasks(self, feature: str) -> list[dict[str, Any]]:
        tasks = super().manager_create_tasks(feature)
        wanted = {t.id for t in self.backlog_tasks}
        wrong = [t["task_id"] for t in tasks if backlog_id_of(t["task_id"]) not in wanted]
        if wrong:
            raise PlanError(
                "The manager's plan does not match the backlog.",
                [f"Task id {w} is not T<id> or T<id>.<n> of a pending backlog task "
                 f"({', '.join(f'T{i}' for i in sorted(wanted))})." for w in wrong])
        return tasks

    # -- one task ----------------------------------------------------------------------------

    def run_task_agent(self, task: Mapping[str, Any], workspace: Path) -> AgentResult:
        self._task_started.at = time.monotonic()
        if self.worker is None:
            return super().run_task_agent(task, workspace)
        item = WorkerTask(task["task_id"], task["description"], task["assigned_to"], workspace,
                          tuple(task.get("dependencies") or ()), task.get("priority", "medium"),
                          backlog_id_of(task["task_id"]), "in_progress")
        done = self.worker(item)
        status = "completed" if done.status in ("completed", "done") else "failed"
        blockers = [] if status == "completed" else [done.error or "the worker failed"]
        report = {"status": status, "summary": str(done.result.get("summary") or
                                                   f"{done.task_id} processed by the worker"),
                  "completed_items": list(done.result.get("completed_items") or []),
                  "blockers": blockers, "notes": str(done.result.get("notes") or "")}
        return AgentResult(report=report, turns=0, usage=Usage(), messages=(), tool_calls=0)

    def make_hooks(self, role: str, task_id: str, model: ChatModel) -> AgentHooks:
        """The engine's hooks, plus execution.worker_timeout checked before each turn."""
        hooks = super().make_hooks(role, task_id, model)
        limit = self.co_settings.worker_timeout
        started = getattr(self._task_started, "at", time.monotonic())
        inner = hooks.before_model_call

        def before_model_call(turn: int, messages: Sequence[Any]) -> None:
            if time.monotonic() - started > limit:
                raise WorkerError(f"{task_id} ran longer than execution.worker_timeout "
                                  f"({limit:g} s); its work so far is committed on its branch")
            inner(turn, messages)

        hooks.before_model_call = before_model_call  # type: ignore[method-assign]
        return hooks

    def merge_task(self, task: dict[str, Any], branch: str) -> dict[str, Any]:
        if self.checkpoints is not None:
            self.checkpoints.create_checkpoint(
                CheckpointType.PRE_MERGE, f"before merging {task['task_id']} into "
                                          f"{self.feature_branch}")
        return super().merge_task(task, branch)

    def ask_manager(self, agent_id: str, prompt: str) -> str:
        if agent_id == "integration" and not self.co_settings.enable_opus_review:
            return ('{"summary": "Manager review skipped (monitoring.enable_opus_review is '
                    'false); the tests ran.", "decisions": []}')
        return super().ask_manager(agent_id, prompt)


def record_results(backlog: Backlog, state: Mapping[str, Any], run_id: str,
                   exit_code: int) -> dict[int, str]:
    """Write each plan task's outcome back to its backlog task; returns id -> new status."""
    by_backlog: dict[int, list[Mapping[str, Any]]] = {}
    for task in state.get("tasks", []):
        number = backlog_id_of(task["task_id"])
        if number is not None:
            by_backlog.setdefault(number, []).append(task)
    integration = state.get("integration") or {}
    tests = integration.get("test_results")
    branch = (state.get("current_feature") or {}).get("branch")
    outcome: dict[int, str] = {}
    for number, parts in by_backlog.items():
        statuses = {p["status"] for p in parts}
        if statuses == {"completed"}:
            status = "done"
        elif "failed" in statuses:
            status = "failed"
        elif "blocked" in statuses or "skipped" in statuses:
            status = "blocked"
        else:
            status = "pending"
        record = {
            "run_id": run_id, "branch": branch, "exit_code": exit_code, "status": status,
            "plan_tasks": [{"task_id": p["task_id"], "role": p["assigned_to"],
                            "status": p["status"], "branch": p.get("branch"),
                            "commit": p.get("commit"), "merge_commit": p.get("merge_commit"),
                            "error": p.get("error")} for p in parts],
            "tests": tests, "finished_at": time.time(),
        }
        current = backlog.get(number)
        role = parts[0]["assigned_to"] if len(parts) == 1 else current.role
        backlog.update(number, status=status, role=role, runs=(*current.runs, record))
        outcome[number] = status
    return outcome
