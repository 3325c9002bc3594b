"""One run of a team: who it is, what it builds, what it may spend, and how it stops.

A `RunContext` is everything that belongs to one run and nothing that belongs to the team:
the run id (injectable, so a job worker can rebuild a run from what is stored), the feature
and its branches, the budget, the event log, the store, and one stop token. The steps in
`steps_*.py` take `(team, run)`; nothing else carries per-run state.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .budget import BudgetGuard
from .errors import AgentTeamError, RunInterrupted, StateError, UsageLimitExceeded
from .events import EventLog
from .redaction import redact
from .sanitize import for_log
from .store_interface import RunStore

if TYPE_CHECKING:
    from .worktree_pool import WorktreePool

#: Stop reasons, in the words the state file and the report use.
STOP_BUDGET = "budget"
STOP_USER = "user"
STOP_STATE = "state_error"
STOP_OTHER = "error"


def new_run_id() -> str:
    """A sortable, unique run id: `YYYYmmdd-HHMMSS-<6 hex>`."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def stop_kind(error: BaseException) -> str:
    """The stop reason an error stands for."""
    if isinstance(error, RunInterrupted):
        return STOP_USER
    if isinstance(error, UsageLimitExceeded):
        return STOP_BUDGET
    if isinstance(error, StateError):
        return STOP_STATE
    return STOP_OTHER


class StopToken:
    """The one way a run stops: the first reason wins; work starts only while it is clear.

    Agents check it before every model call, the scheduler before every task. The error it
    holds is what those checks raise, so a budget stop, a Ctrl-C and an unusable state file
    each end the run with their own exit code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: AgentTeamError | None = None

    def stop(self, error: AgentTeamError) -> None:
        with self._lock:
            if self._error is None:
                self._error = error

    @property
    def error(self) -> AgentTeamError | None:
        return self._error

    @property
    def stopped(self) -> bool:
        return self._error is not None

    @property
    def kind(self) -> str | None:
        return None if self._error is None else stop_kind(self._error)

    def check(self) -> None:
        """Raise the stop reason, if any."""
        if self._error is not None:
            raise self._error


@dataclass
class PendingUsage:
    """A model call made before the run began (a custom phase); recorded when it begins."""

    role: str
    counts: dict[str, int]
    cost_usd: float | None


@dataclass
class RunContext:
    """The state of one run. Created before the run begins; `begin` fills in the feature."""

    store: RunStore
    events: EventLog
    budget: BudgetGuard
    say: Callable[[str], None]
    run_id: str = field(default_factory=new_run_id)
    feature: str = ""
    feature_branch: str = ""
    base_branch: str = ""
    base_commit: str = ""
    started: float = field(default_factory=time.monotonic)
    stop: StopToken = field(default_factory=StopToken)
    began: bool = False
    finished: bool = False
    integration_worktree: Path | None = None
    #: The integration worktree was opened without its files (`checkout_integration`).
    integration_setup_pending: bool = False
    merge_lock: threading.Lock = field(default_factory=threading.Lock)
    pending_usage: list[PendingUsage] = field(default_factory=list)
    #: What the report must say about how the run ran (e.g. without the sandbox).
    warnings: list[str] = field(default_factory=list)
    #: Task worktrees reused across tasks (run_worktrees.open_pool); None: one fresh per task.
    pool: WorktreePool | None = None

    def log(self, message: str) -> None:
        """A progress line: to the event log, and to the console (masked)."""
        self.events.emit("log", message=message)
        self.say(f"[Orchestrator] {for_log(redact(message))}")

    def check_stop(self) -> None:
        """Raise the stop reason when the run was asked to stop."""
        self.stop.check()

    def trip(self, error: AgentTeamError) -> AgentTeamError:
        """Record a stop reason (the first one wins) and return the error to raise."""
        self.stop.stop(error)
        return self.stop.error or error

    @property
    def slug(self) -> str:
        return self.feature_branch.split("/", 1)[1] if "/" in self.feature_branch else ""
