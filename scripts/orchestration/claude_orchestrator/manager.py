"""OpusManager: plans the backlog's pending tasks, keeps the queue, reviews the results."""

from __future__ import annotations

from pathlib import Path

from agent_team.agent_calls import ModelRequest, ask
from agent_team.co.backlog import BacklogTask, open_backlog
from agent_team.co.base import CoContext
from agent_team.co.engine import co_team, manager_run
from agent_team.co.run_cmd import runnable
from agent_team.co.run_engine import (
    BacklogPlanCheck,
    WorkerTask,
    backlog_feature,
    backlog_id_of,
)
from agent_team.co.settings import CoSettings
from agent_team.models import ChatModel, Message
from agent_team.prompts import system_prompt
from agent_team.roles import MANAGER
from agent_team.steps_plan import plan_feature

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
        self.team = co_team(ctx, self.config, self.working_dir, model=model)
        self.run = manager_run(self.team)
        self.queue: list[WorkerTask] = []
        self.last_review = ""

    def analyze_and_plan(self) -> list[WorkerTask]:
        """The pending backlog tasks as the manager orders, assigns and splits them."""
        chosen, _ = runnable(self.backlog.all(), None)
        if not chosen:
            return []
        plan = plan_feature(self.team, self.run, backlog_feature(chosen, "plan"),
                            check=BacklogPlanCheck(chosen))
        return [WorkerTask(t["task_id"], t["description"], t["assigned_to"], self.working_dir,
                           tuple(t["dependencies"]), t.get("priority", "medium"),
                           backlog_id_of(t["task_id"]))
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
            self.last_review = ask(self.team, self.run, ModelRequest(
                role=MANAGER, conversation="review",
                system=system_prompt(self.team, MANAGER),
                messages=[Message.user(f"Review these results and summarise them:\n{lines}")],
            )).text
        return ok
