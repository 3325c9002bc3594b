"""ClaudeOrchestrator: one `co run` of the backlog from Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent_team.co.base import CoContext
from agent_team.co.notify import NotificationInterface
from agent_team.co.run_cmd import run_backlog
from agent_team.co.settings import CoSettings
from agent_team.co.storage import StorageInterface
from agent_team.models import ChatModel

from .worker import BaseWorker

__all__ = ["ClaudeOrchestrator"]


class ClaudeOrchestrator:
    """Runs the pending backlog like `co run`; `run()` is True when everything passed.

    Extensions plug in here: `worker` (a BaseWorker instead of the built-in agents),
    `notifiers` (NotificationInterface providers next to Slack), `storage` (where checkpoint
    records go), `model` (e.g. a ScriptedModel).
    """

    def __init__(self, config: CoSettings | None = None, working_dir: str | Path = ".", *,
                 worker: BaseWorker | None = None,
                 notifiers: Sequence[NotificationInterface] = (),
                 storage: StorageInterface | None = None, model: ChatModel | None = None,
                 workers: int | None = None, task_id: int | None = None) -> None:
        self.config = config or CoSettings()
        self.working_dir = Path(working_dir).resolve()
        self.worker = worker
        self.notifiers = list(notifiers)
        self.storage = storage
        self.model = model
        self.workers = workers
        self.task_id = task_id
        self.exit_code: int | None = None

    def run(self) -> bool:
        ctx = CoContext()
        ctx._settings = self.config
        self.exit_code = run_backlog(
            ctx, self.working_dir, workers=self.workers, verbose=False, progress=False,
            only=self.task_id, limits={},
            worker=self.worker.process_task if self.worker else None,
            notifiers=self.notifiers, model=self.model, storage=self.storage)
        return self.exit_code == 0

    def shutdown(self) -> None:
        """Nothing keeps running between runs: workers and their worktrees end with `run`."""
