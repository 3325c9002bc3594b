"""One job of the service, run as plain code over the core's team, run context and steps.

`run_job` is the service's front door onto the engine: `plan_feature` / `record_plan` for the
plan, the job store's queue and in-server lanes (`lanes.py`) for the tasks, each run by
`execute_task` and `merge_task`, then `integrate` and `finish`. What the service adds to a task's
agent goes in through `TaskExtras`: the `delegate` tool, a transcript and a per-task deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_team.agent_loop import AgentHooks
from agent_team.budget import BudgetGuard
from agent_team.errors import AgentTeamError, RunStopped, ToolError
from agent_team.jobs import BadTaskInput, TaskQueue
from agent_team.models import ChatModel, Message, Reply, ToolCall
from agent_team.records import set_feature_status
from agent_team.run_context import RunContext, StopToken
from agent_team.run_end import finish, stop
from agent_team.run_frame import (
    begin_feature,
    check_feature,
    locked_run,
    new_run,
    preflight_checks,
)
from agent_team.run_worktrees import (
    create_feature_branch,
    feature_dir,
    open_integration_worktree,
    remove_empty_dirs,
    remove_own_worktree,
)
from agent_team.settings import Settings
from agent_team.state import TeamState
from agent_team.steps_integrate import integrate
from agent_team.steps_plan import plan_feature, record_plan, task_branch
from agent_team.task_record import TaskRecord
from agent_team.team import Team, build_team, load_settings
from agent_team.toolbox import Tool, ToolResult, define_tool

from .layout import JobLayout, LiveLogs
from .records import ServiceJob, ServiceJobs

MAX_DEPTH_MESSAGE = "Max recursion depth reached"
MAX_SUB_REQUEST_CHARS = 8_000
#: Events kept in the job store for the live stream; tool calls and log lines go only to the
#: job's log files (they are many and say little on their own).
STORE_SKIPS = frozenset({"tool_call", "log"})


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
    stop: StopToken = field(default_factory=StopToken)
    cancelled: threading.Event = field(default_factory=threading.Event)


#: delegate(job run, planned task, worktree, store task id, sub_request) -> what the agent reads
Delegate = Callable[["JobRun", TaskRecord, Path, int, str], str]


@dataclass
class JobRun:
    """One job being run: its record, the team and run of the core, and what the lanes share."""

    job: ServiceJob
    jobs: ServiceJobs
    tree: TreeContext
    team: Team
    run: RunContext
    queue: TaskQueue
    delegate: Delegate
    labels: dict[str, str] = field(default_factory=dict)
    transcripts: dict[str, list[Message]] = field(default_factory=dict)
    diffs: dict[str, str] = field(default_factory=dict)
    delegations: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=lambda: {"api_calls": 0, "tokens": 0,
                                                           "cost_usd": 0.0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def label(self, task_id: Any) -> str | None:
        return self.labels.get(str(task_id or ""))


class ServiceHooks(AgentHooks):
    """Keeps the task's transcript and enforces the worker timeout around the core's hooks."""

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


def depth_refusal(depth: int, max_depth: int, enabled: bool) -> str | None:
    """Why a delegation from a job at `depth` is refused, or None when it may go ahead."""
    if not enabled:
        return "Recursion is disabled for this job: do the task yourself."
    if depth + 1 > max_depth:
        return (f"{MAX_DEPTH_MESSAGE} (this job is at depth {depth}, the limit is "
                f"{max_depth}): do the task yourself.")
    return None


def delegate_tool(job: JobRun, task: TaskRecord, worktree: Path, store_task: int) -> Tool:
    """The agent's way to hand part of its task to a child job (see `JobRunner.delegate`)."""

    def delegate(sub_request: str) -> str:
        refusal = depth_refusal(job.job.depth, job.job.settings.max_depth,
                                job.job.settings.enable_recursion)
        if refusal:
            raise ToolError(refusal)
        return job.delegate(job, task, worktree, store_task, sub_request)

    return define_tool(
        "delegate",
        "Hand a part of your task that is too large for you to a child team: a manager "
        "plans sub_request and workers build it on your branch; you get their merged "
        "result back (files and summaries) and then finish your task. Use it for work with "
        "several independent parts; do small tasks yourself.",
        {"sub_request": {"type": "string", "minLength": 1, "maxLength": MAX_SUB_REQUEST_CHARS}},
        delegate,
        required=["sub_request"],
    )


def team_settings(job: ServiceJob, project: Path, *, provider: str | None, model: str | None,
                  base_url: str | None) -> Settings:
    """The engine's settings of a job: the project's config file, then the job's settings."""
    settings = job.settings
    return load_settings(project, overrides={
        "api_provider": provider, "model": model, "base_url": base_url,
        "coordination": {
            "max_workers": settings.max_workers,
            "max_task_attempts": settings.max_retries + 1,
            "command_timeout_seconds": settings.default_timeout,
        },
        "limits": dict(settings.limits),
    })


def on_event(job: JobRun, event: dict[str, Any]) -> None:
    """Every engine event of the job: to the live logs, usage to the store, most to the
    store's event table for the stream."""
    kind = str(event.get("kind"))
    task_id = event.get("task_id")
    if kind == "model_call":
        usage = event.get("usage") or {}
        cost = event.get("cost_usd")
        with job.lock:
            totals = job.usage
            totals["api_calls"] = int(totals.get("api_calls", 0)) + 1
            totals["tokens"] = int(totals.get("tokens", 0)) + sum(
                int(v or 0) for v in usage.values())
            known = totals.get("cost_usd")
            totals["cost_usd"] = None if cost is None or known is None else known + cost
            snapshot = dict(totals)
        job.jobs.set_usage(job.job.job_id, snapshot)
    label = job.label(task_id)
    job.tree.logs.write(event, job_id=job.job.job_id, depth=job.job.depth, worker=label)
    if kind not in STORE_SKIPS:
        job.jobs.emit(job.job, kind, worker_id=f"worker_{label}" if label else None,
                      **{k: v for k, v in event.items()
                         if k not in ("kind", "ts", "run_id", "seq", "job_id", "depth")})


def record_tasks(job: JobRun, tasks: list[TaskRecord]) -> None:
    """The plan's tasks as tasks of the job in the store, in plan order, with labels."""
    store_ids: dict[str, int] = {}
    for index, task in enumerate(tasks, start=1):
        task_id = str(task["task_id"])
        label = f"{job.job.worker_prefix}{index}"
        job.labels[task_id] = label
        meta = {"task_id": task_id, "label": label, "description": task["description"],
                "dependencies": list(task["dependencies"])}
        deps = [store_ids[d] for d in task["dependencies"]]
        try:
            record = job.jobs.store.add_task(
                job.job.job_id, task["description"], role=task["assigned_to"],
                priority=task.get("priority", 5), dependencies=deps, metadata=meta)
        except BadTaskInput:
            record = job.jobs.store.add_task(
                job.job.job_id, task["description"], role=task["assigned_to"],
                dependencies=deps, metadata=meta)
        store_ids[task_id] = record.id


def open_job(job: ServiceJob, jobs: ServiceJobs, tree: TreeContext, project: Path,
             delegate: Delegate, *, provider: str | None, model: str | None,
             base_url: str | None) -> JobRun:
    """The team and the not yet begun run of a job; nothing is written to git."""
    logs = tree.logs

    def output(line: str) -> None:
        if not line.startswith("[Orchestrator] "):  # the same line arrives as a "log" event
            logs.write({"kind": "log", "message": line}, job_id=job.job_id, depth=job.depth,
                       worker=None)

    settings = team_settings(job, project, provider=provider, model=model, base_url=base_url)
    team = build_team(project, settings, name="service", model=tree.model, output=output)
    state_path = tree.layout.state / f"job_{job.job_id}.json"
    store = TeamState(state_path)
    store.create(f"job-{job.job_id}")
    run = new_run(team, run_id=job.job_id, store=store)
    if tree.budget is None:
        tree.budget = run.budget
    run.budget = tree.budget  # one budget and one stop token for the whole tree
    run.stop = tree.stop
    return JobRun(job=job, jobs=jobs, tree=tree, team=team, run=run,
                  queue=TaskQueue(jobs.store, lease_s=max(60.0, job.settings.default_timeout)),
                  delegate=delegate)


def run_job(job: JobRun) -> dict[str, Any]:
    """Plan, run the tasks from the store, integrate, finish; returns the core's summary.

    A child job runs under its root's run lock (it works in a worktree of the same
    repository); a stopped run (budget, cancel) ends through the core's `stop`.
    """
    from .lanes import close_unstarted, run_lanes

    team, run = job.team, job.run
    check_feature(team, run, job.job.request, branch=f"feature/job-{job.job.job_id}")
    preflight_checks(team)
    with locked_run(team, run, run_lock=job.job.parent_job_id is None):
        begin_feature(team, run, job.job.request)
        run.events.add_listener(lambda event: on_event(job, event))
        finished = False
        try:
            try:
                plan = plan_feature(team, run, job.job.request)
            except RunStopped:
                finished = True
                return stop(team, run)
            tasks = record_plan(run, plan, lambda t: task_branch(run, t))
            record_tasks(job, tasks)
            create_feature_branch(team, run)
            run.integration_worktree = open_integration_worktree(team, run)
            set_feature_status(run, "in_progress")
            run_lanes(job)
            close_unstarted(job)
            if run.stop.stopped:
                finished = True
                return stop(team, run)
            set_feature_status(run, "integrating")
            try:
                result = integrate(team, run, run.integration_worktree)
            except RunStopped:
                finished = True
                return stop(team, run)
            done = all(t["status"] == "completed" for t in run.store.read()["tasks"])
            set_feature_status(run, "completed" if done else "failed")
            finished = True
            return finish(team, run, "completed" if done else "failed", 0 if done else 1) | {
                "integration": {"success": result["success"]}}
        finally:
            remove_own_worktree(team, run, run.integration_worktree, force=finished)
            run.integration_worktree = None
            remove_empty_dirs(feature_dir(team, run))
