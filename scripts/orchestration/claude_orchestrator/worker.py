"""Workers: `BaseWorker.process_task(task) -> task`; SonnetWorker runs the engine's agent."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from agent_team.co.base import CoContext
from agent_team.co.engine import co_team
from agent_team.co.run_engine import WorkerError, WorkerTask
from agent_team.co.settings import CoSettings
from agent_team.errors import AgentTeamError
from agent_team.models import ChatModel
from agent_team.priority import parse_priority, priority_word
from agent_team.run_frame import new_run
from agent_team.steps_agent import run_task_agent
from agent_team.task_record import new_task

__all__ = ["BaseWorker", "SonnetWorker", "WorkerTask"]


class BaseWorker(ABC):
    """A worker gets a task whose `working_dir` is its own worktree and edits files there.

    The orchestrator commits what changed, merges and tests; `process_task` only returns the
    task with `status` "completed" or "failed" (and `error`, `result` as it likes).
    """

    def __init__(self, worker_id: int = 0, working_dir: str | Path = ".",
                 config: CoSettings | None = None) -> None:
        self.worker_id = worker_id
        self.working_dir = Path(working_dir)
        self.config = config or CoSettings()

    @abstractmethod
    def process_task(self, task: WorkerTask) -> WorkerTask:
        """Do the task in `task.working_dir`; return it with its status set."""


class SonnetWorker(BaseWorker):
    """The built-in worker: the engine's tool-using agent for the task's role."""

    def __init__(self, worker_id: int = 0, working_dir: str | Path = ".",
                 config: CoSettings | None = None, *, model: ChatModel | None = None,
                 **options: Any) -> None:
        super().__init__(worker_id, working_dir, config)
        self.model = model
        self.options = options  # the group's options: api_provider, session, model_name

    def process_task(self, task: WorkerTask) -> WorkerTask:
        """Run the role's agent (built-in, or its CLI worker) in `task.working_dir`."""
        ctx = CoContext(**self.options)
        team = co_team(ctx, self.config, Path(self.working_dir).resolve(), model=self.model)
        spec = new_task(task.task_id, task.description, task.role, task.dependencies,
                        priority=priority_word(parse_priority(task.priority)))
        try:
            report = run_task_agent(team, new_run(team), spec, task.working_dir).report
        except AgentTeamError as exc:
            raise WorkerError(f"{task.task_id}: {exc}") from exc
        task.status = "completed" if report["status"] == "completed" else "failed"
        task.result = dict(report)
        task.error = None if task.status == "completed" else "; ".join(
            report.get("blockers") or []) or report.get("summary")
        return task
