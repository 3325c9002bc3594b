"""OpusManager: plans the backlog's pending tasks, keeps the queue, reviews the results."""

from __future__ import annotations

from pathlib import Path

from agent_team.co.backlog import BacklogTask, open_backlog
from agent_team.co.base import CoContext
from agent_team.co.engine import engine_config
from agent_team.co.run_cmd import PlanChecks, runnable
from agent_team.co.run_engine import WorkerTask, backlog_feature, backlog_id_of
from agent_team.co.settings import CoSettings
from agent_team.models import ChatModel
from agent_team.orchestrator import BaseOrchestrator
from agent_team.roles import MANAGER

__all__ = ["OpusManager"]


class OpusManager:
    """The manager role of the document, over the engine's planning and review calls."""

    def __init__(self, config: CoSettings | None = None, working_dir: str | Path = ".", *,
                 model: ChatModel | None = None) -> None:
        self.config = config or CoSettings()
        self.working_dir = Path(working_dir).resolve()
        self.backlog = open_backlog(self.working_dir)
        ctx = CoContext()
        ctx._settings = self.config
        self.engine = BaseOrchestrator(
            self.working_dir, model=model, output=lambda line: None,
            config=engine_config(ctx, self.config, self.working_dir))
        self.queue: list[WorkerTask] = []
        self.last_review = ""

    def analyze_and_plan(self) -> list[WorkerTask]:
        """The pending backlog tasks as the manager orders, assigns and splits them."""
        chosen, _ = runnable(self.backlog.all(), None)
        if not chosen:
            return []
        plan = PlanChecks(chosen).enforce(self.engine.plan_feature(
            backlog_feature(chosen, "plan")))
        return [WorkerTask(t.task_id, t.description, t.assigned_to, self.working_dir,
                           t.dependencies, t.priority, backlog_id_of(t.task_id))
                for t in plan.order()]

    def delegate_task(self, task: WorkerTask) -> None:
        """Queue a task for the workers and mark its backlog task in progress."""
        self.queue.append(task)
        if task.backlog_id is not None:
            self.backlog.update(task.backlog_id, status="in-progress")

    def review_results(self) -> bool:
        """True when every delegated task is done; the manager's review is kept as text."""
        tasks: dict[int, BacklogTask] = {t.id: t for t in self.backlog.all()}
        done = [t for t in self.queue if t.backlog_id in tasks
                and tasks[t.backlog_id].status == "done"]
        ok = bool(self.queue) and len(done) == len(self.queue)
        if self.config.enable_opus_review and self.queue:
            lines = "\n".join(f"- {t.task_id}: {tasks[t.backlog_id].status}"
                              for t in self.queue if t.backlog_id in tasks)
            self.last_review = self.engine.call_agent(
                "review", MANAGER, f"Review these results and summarise them:\n{lines}",
                self.engine._get_system_prompt(MANAGER))
        return ok
