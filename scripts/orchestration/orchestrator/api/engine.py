"""One job of the service run by the team workflow, with the service's additions.

`JobOrchestrator` is the file-based orchestrator (plan, parallel worktrees, merge as you go,
integration) with: a feature branch named after the job, the `delegate` tool that runs a child
job on the task's branch, a per-worker timeout, transcripts kept per task, tree-wide worker
slots and budget, and every event written to the job's live logs and event stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_team.agent_loop import AgentHooks, AgentResult, run_agent
from agent_team.budget import BudgetGuard
from agent_team.errors import AgentStuck, AgentTeamError, ConfigError, ToolError
from agent_team.models import ChatModel, Message, Reply, ToolCall
from agent_team.roles import MANAGER
from agent_team.stuck import StuckEscalation, guidance_prompt
from agent_team.tools import Tool, ToolResult, Workspace, build_toolbox, define_tool
from file_based_orchestrator import FileBasedOrchestrator

from .layout import JobLayout, LiveLogs
from .records import JobRecord, JobRegistry

MAX_DEPTH_MESSAGE = "Max recursion depth reached"
MAX_SUB_REQUEST_CHARS = 8_000


class WorkerTimeout(AgentTeamError):
    """A worker spent longer on its task than `default_timeout`."""


@dataclass
class TreeContext:
    """What every job of one tree shares: its directory, logs, worker slots, budget, stop."""

    layout: JobLayout
    logs: LiveLogs
    slots: threading.BoundedSemaphore
    model: ChatModel | None = None
    budget: BudgetGuard | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    orchestrators: list[JobOrchestrator] = field(default_factory=list)


Delegate = Callable[["JobOrchestrator", Mapping[str, Any], Path, str], str]


@dataclass
class JobContext:
    """One job's record and what the runner hands its orchestrator."""

    record: JobRecord
    registry: JobRegistry
    tree: TreeContext
    delegate: Delegate
    transcripts: dict[str, list[Message]] = field(default_factory=dict)
    lanes: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    delegations: dict[str, str] = field(default_factory=dict)
    on_progress: Callable[[], None] | None = None

    def label(self, task_id: str | None) -> str | None:
        return self.labels.get(task_id or "")


class _ServiceHooks(AgentHooks):
    """Keeps the transcript and enforces the worker timeout around the engine's own hooks."""

    def __init__(self, inner: AgentHooks, transcript: list[Message], timeout: float) -> None:
        self.inner = inner
        self.transcript = transcript
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.transcript[:] = list(messages)
        if time.monotonic() > self.deadline:
            raise WorkerTimeout(
                f"Worker timeout: the task took longer than {self.timeout:g} s "
                "(raise config.default_timeout for larger tasks)."
            )
        self.inner.before_model_call(turn, messages)

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.transcript.append(Message.assistant(reply.text, reply.tool_calls))
        self.inner.after_model_call(turn, reply)

    def after_tool_call(self, turn: int, call: ToolCall, result: ToolResult) -> None:
        self.transcript.append(Message.tool(call, result.content, is_error=result.is_error))
        self.inner.after_tool_call(turn, call, result)

    def extra_messages(self, turn: int) -> list[Message]:
        return self.inner.extra_messages(turn)


class JobOrchestrator(FileBasedOrchestrator):
    """The file-based workflow for one job of the service."""

    orchestrator_name = "service"

    def __init__(self, project_dir: Path, *, job: JobContext, **kwargs: Any) -> None:
        self.job = job
        super().__init__(project_dir, model=job.tree.model, output=self._output, **kwargs)

    # -- the run frame ---------------------------------------------------------------------

    def check_feature(self, feature: str) -> None:
        if not feature.strip():
            raise ConfigError("The request is empty.")
        self.feature_branch = f"feature/job-{self.job.record.job_id}"
        if self.git.branch_exists(self.feature_branch):
            raise ConfigError(f"Branch {self.feature_branch} already exists.")
        self.state.read()

    def acquire_run_lock(self) -> None:
        if self.job.record.parent_job_id is None:  # a child runs under its root's lock
            super().acquire_run_lock()

    def hide_run_files(self) -> None:
        super().hide_run_files()
        self.git.exclude("/.ai-agents/state/")  # a child's state never lands in a commit

    def begin_feature(self, feature: str) -> None:
        super().begin_feature(feature)
        tree = self.job.tree
        if tree.budget is None:
            tree.budget = self.budget
        else:
            self.budget = tree.budget  # one budget and one stop for the whole tree
        if tree.cancelled.is_set():
            self.budget.stop("Cancelled through the API.")

    def _open_event_log(self, feature: str, *, resumed: bool) -> None:
        super()._open_event_log(feature, resumed=resumed)
        self.events.add_listener(self._on_event)

    def _output(self, line: str) -> None:
        if line.startswith("[Orchestrator] "):  # the same line arrives as a "log" event
            return
        self.job.tree.logs.write({"kind": "log", "message": line}, job_id=self.job.record.job_id,
                                 depth=self.job.record.depth, worker=None)

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        job = self.job
        kind = event.get("kind")
        task_id = event.get("task_id")
        if kind == "plan_accepted":
            for index, tid in enumerate(event.get("task_ids") or [], start=1):
                job.labels[str(tid)] = f"{job.record.worker_prefix}{index}"
        if kind == "task_status" and event.get("status") == "in_progress" and task_id:
            job.lanes[str(task_id)] = threading.current_thread().name
        if kind == "model_call":
            usage = event.get("usage") or {}
            tokens = sum(int(v or 0) for v in usage.values())
            with job.registry._lock:
                totals = job.record.usage
                totals["api_calls"] = int(totals.get("api_calls", 0)) + 1
                totals["tokens"] = int(totals.get("tokens", 0)) + tokens
                cost = event.get("cost_usd")
                known = totals.get("cost_usd")
                totals["cost_usd"] = None if cost is None or known is None else known + cost
        job.tree.logs.write(event, job_id=job.record.job_id, depth=job.record.depth,
                            worker=job.label(task_id))
        if kind in ("plan_accepted", "task_status") and job.on_progress is not None:
            job.on_progress()
        job.registry.emit(job.record, str(kind), worker_id=_worker_id(job.label(task_id)),
                          **{k: v for k, v in event.items()
                             if k not in ("kind", "ts", "run_id", "seq", "job_id", "depth")})

    # -- one task --------------------------------------------------------------------------

    def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """Hold one of the tree's worker slots while the task runs."""
        with self.job.tree.slots:
            return super().agent_execute_task(task)

    def make_hooks(self, role: str, task_id: str, model: ChatModel) -> AgentHooks:
        transcript = self.job.transcripts.setdefault(task_id, [])
        return _ServiceHooks(super().make_hooks(role, task_id, model), transcript,
                             self.job.record.settings.default_timeout)

    def delegate_tool(self, task: Mapping[str, Any], workspace: Path) -> Tool:
        def delegate(sub_request: str) -> str:
            return self.job.delegate(self, task, workspace, sub_request)

        return define_tool(
            "delegate",
            "Hand a part of your task that is too large for you to a child team: a manager "
            "plans sub_request and workers build it on your branch; you get their merged "
            "result back (files and summaries) and then finish your task. Use it for work with "
            "several independent parts; do small tasks yourself.",
            {"sub_request": {"type": "string", "minLength": 1,
                             "maxLength": MAX_SUB_REQUEST_CHARS}},
            delegate,
            required=["sub_request"],
        )

    def run_task_agent(self, task: Mapping[str, Any], workspace: Path) -> AgentResult:
        """The engine's own agent run, with the `delegate` tool added to the toolbox."""
        role = self.roles[task["assigned_to"]]
        task_id = task["task_id"]
        model = self.model_for(role.name).for_agent(role.name, task_id)

        def on_update(status: str, message: str, details: dict[str, Any] | None = None) -> None:
            self._note(role.name, task_id, status, message, details)

        toolbox = build_toolbox(
            Workspace(workspace),
            on_update=on_update,
            command_timeout=min(float(self.config.coordination["command_timeout_seconds"]),
                                self.job.record.settings.default_timeout),
            extra_tools=[self.delegate_tool(task, workspace)],
        )
        max_turns = int(role.max_turns or self.config.coordination["max_iterations"])
        system = self._get_system_prompt(role.name)

        def attempt(view: Mapping[str, Any]) -> AgentResult:
            return run_agent(model, system, self._build_task_prompt(view), toolbox,
                             max_turns=max_turns,
                             hooks=self.make_hooks(role.name, task_id, model))

        try:
            return attempt(task)
        except StuckEscalation as stuck:
            guidance = self.call_agent(
                f"guidance-{task_id}", MANAGER,
                guidance_prompt(f"{task_id} - {task['description']}", stuck),
                self._get_system_prompt(MANAGER),
            ).strip()
            retry = {**task, "additional_context": guidance, "last_error": stuck.reason}
        try:
            return attempt(retry)
        except StuckEscalation as again:
            raise AgentStuck(
                f"{task_id} got stuck again after the manager's guidance: {again.reason}"
            ) from again


def _worker_id(label: str | None) -> str | None:
    return f"worker_{label}" if label else None


def depth_refusal(depth: int, max_depth: int, enabled: bool) -> str | None:
    """Why a delegation from a job at `depth` is refused, or None when it may go ahead."""
    if not enabled:
        return "Recursion is disabled for this job: do the task yourself."
    if depth + 1 > max_depth:
        return (f"{MAX_DEPTH_MESSAGE} (this job is at depth {depth}, the limit is "
                f"{max_depth}): do the task yourself.")
    return None


def refuse(message: str) -> None:
    """A tool error the agent reads; the run goes on."""
    raise ToolError(message)
