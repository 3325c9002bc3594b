"""One `co run` over the engine's steps: plan, execute, merge, integrate, finish.

The manager plans the chosen backlog tasks (`T<id>`, or `T<id>.<n>` for a split); a plan
that names anything else goes back to the manager like any invalid plan. The scheduler runs a
task the moment its dependencies are merged; each runs in its own worktree through
`execute_task` (the role's agent, or a custom `BaseWorker`), and is merged after an automatic
checkpoint. Nothing here subclasses an orchestrator: the seams `co` needs (a worker timeout,
the optional review) sit in `CoSeams`, the team's `call_agent`.
"""

from __future__ import annotations

import contextlib
import copy
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent_calls import pending_request, perform
from ..agent_loop import AgentResult
from ..errors import EXIT_FAILED, EXIT_OK, AgentTeamError, PlanError, RunStopped
from ..models import Usage
from ..plan import Plan
from ..prompts import system_prompt, task_prompt
from ..records import set_feature_status, task_record
from ..roles import MANAGER
from ..run_context import STOP_STATE, RunContext
from ..run_end import finish, stop
from ..run_frame import begin_feature, check_feature, locked_run, preflight_checks
from ..run_worktrees import (
    create_feature_branch,
    feature_dir,
    open_integration_worktree,
    remove_empty_dirs,
    remove_own_worktree,
    remove_task_worktree,
    report_stale_worktrees,
    task_worktree,
)
from ..state_schema import utc_now
from ..steps_agent import run_task_agent
from ..steps_integrate import integrate
from ..steps_merge import conclude_task, merge_task
from ..steps_plan import plan_feature, record_plan, task_branch
from ..steps_schedule import run_schedule
from ..steps_task import TaskAgent, execute_task
from ..task_record import TaskRecord, tasks_of
from ..team import Team
from .backlog import BacklogTask

PLAN_ID = re.compile(r"T(\d+)(?:\.\d+)?")
SKIPPED_REVIEW = ('{"summary": "Manager review skipped (monitoring.enable_opus_review is '
                  'false); the tests ran.", "decisions": []}')


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
    """The text the manager plans from: a title line, then every chosen task."""
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


class BacklogPlanCheck:
    """The backlog's rules for the manager's plan: ids name chosen tasks, and the backlog's
    own dependencies hold between their plan tasks. Passed to `plan_feature(check=...)`."""

    def __init__(self, tasks: Sequence[BacklogTask]) -> None:
        self.deps = {t.id: set(t.dependencies) for t in tasks}

    def __call__(self, plan: Plan) -> Plan:
        wanted = sorted(self.deps)
        wrong = [t["task_id"] for t in plan.tasks
                 if backlog_id_of(t["task_id"]) not in self.deps]
        if wrong:
            raise PlanError("The manager's plan does not match the backlog.", [
                f"Task id {w} is not T<id> or T<id>.<n> of a backlog task of this run "
                f"({', '.join(f'T{i}' for i in wanted)})." for w in wrong])
        groups: dict[int, list[str]] = {}
        for task in plan.tasks:
            groups.setdefault(backlog_id_of(task["task_id"]) or 0, []).append(task["task_id"])
        fixed = []
        for task in plan.tasks:
            number = backlog_id_of(task["task_id"]) or 0
            extra = [tid for dep in self.deps.get(number, ()) for tid in groups.get(dep, [])]
            amended = copy.deepcopy(task)
            amended["dependencies"] = list(dict.fromkeys([*task["dependencies"], *extra]))
            fixed.append(amended)
        result = Plan(tuple(fixed), plan.decisions)
        try:
            result.order()
        except ValueError as exc:
            raise PlanError("The plan contradicts the backlog's dependencies.",
                            [f"{exc} (the backlog's own dependencies were added)."]) from None
        return result


class CoSeams:
    """`co`'s `call_agent` seam: `execution.worker_timeout` before every turn of a task's
    agent, and no model call for the review when `monitoring.enable_opus_review` is off."""

    def __init__(self, *, worker_timeout: float, review: bool) -> None:
        self.worker_timeout = worker_timeout
        self.review = review
        self.team: Team | None = None
        self.run: RunContext | None = None
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def bind(self, team: Team, run: RunContext) -> None:
        self.team, self.run = team, run

    def task_started(self, task_id: str) -> None:
        with self._lock:
            self._started[task_id] = time.monotonic()

    def call_agent(self, agent_id: str, role: Any, prompt: str | None = None,
                   system_prompt: str | None = None) -> str:
        pending = pending_request()
        if pending is None:
            raise AgentTeamError("co's call_agent serves the steps' requests only.")
        team, run, request = pending
        if request.conversation == "integration" and not self.review:
            return SKIPPED_REVIEW
        started = self._started.get(request.task_id or "")
        if request.role != MANAGER and started is not None and (
                time.monotonic() - started > self.worker_timeout):
            raise WorkerError(f"{request.task_id} ran longer than execution.worker_timeout "
                              f"({self.worker_timeout:g} s); its work so far is committed "
                              "on its branch")
        return perform(team, run, request).text

    def _get_system_prompt(self, agent_id: str) -> str:
        assert self.team is not None
        return system_prompt(self.team, agent_id)

    def _build_task_prompt(self, task: TaskRecord) -> str:
        assert self.run is not None
        return task_prompt(self.run, task)


def worker_agent(worker: WorkerFunction) -> TaskAgent:
    """A custom worker as the task step's agent: the step still commits, records, merges."""

    def run(team: Team, run: RunContext, task: TaskRecord,
            workspace: Path) -> AgentResult:
        item = WorkerTask(task["task_id"], task["description"], task["assigned_to"],
                          workspace, tuple(task.get("dependencies") or ()),
                          str(task.get("priority", "medium")), backlog_id_of(task["task_id"]),
                          "in_progress")
        done = worker(item)
        status = "completed" if done.status in ("completed", "done") else "failed"
        report = {"status": status,
                  "summary": str(done.result.get("summary")
                                 or f"{done.task_id} processed by the worker"),
                  "completed_items": list(done.result.get("completed_items") or []),
                  "blockers": [] if status == "completed" else [
                      done.error or "the worker failed"],
                  "notes": str(done.result.get("notes") or "")}
        return AgentResult(report=report, turns=0, usage=Usage(), messages=(), tool_calls=0)

    return run


@dataclass
class BacklogRun:
    """What one `co run` needs besides the team: its tasks, worker, checkpoints, listeners."""

    chosen: Sequence[BacklogTask]
    feature: str
    max_workers: int
    seams: CoSeams
    worker: WorkerFunction | None = None
    before_merge: Callable[[TaskRecord, str], None] | None = None
    listeners: Sequence[Callable[[Mapping[str, Any]], None]] = ()

    def agent(self) -> TaskAgent:
        inner = worker_agent(self.worker) if self.worker is not None else run_task_agent

        def timed(team: Team, run: RunContext, task: TaskRecord,
                  workspace: Path) -> AgentResult:
            self.seams.task_started(task["task_id"])
            return inner(team, run, task, workspace)

        return timed


def run_backlog_tasks(team: Team, run: RunContext, spec: BacklogRun) -> dict[str, Any]:
    """The whole run in its frame (checks, run lock, records); returns the summary."""
    spec.seams.bind(team, run)
    with contextlib.ExitStack() as frame:
        check_feature(team, run, spec.feature)
        preflight_checks(team)
        frame.enter_context(locked_run(team, run))
        begin_feature(team, run, spec.feature)
        for listener in spec.listeners:
            run.events.add_listener(listener)
        report_stale_worktrees(team, run)
        try:
            plan = plan_feature(team, run, spec.feature, check=BacklogPlanCheck(spec.chosen))
        except RunStopped:
            return stop(team, run)
        tasks = record_plan(run, plan, lambda task: task_branch(run, task))
        create_feature_branch(team, run)
        run.integration_worktree = open_integration_worktree(team, run)
        set_feature_status(run, "in_progress")
        agent = spec.agent()
        run_schedule(team, run, tasks, lambda task_id: execute_one(team, run, spec, agent,
                                                                   task_id),
                     max_workers=spec.max_workers)
        return conclude(team, run)
    raise AssertionError("unreachable")


def execute_one(team: Team, run: RunContext, spec: BacklogRun, agent: TaskAgent,
                task_id: str) -> bool:
    """One plan task: worktree, agent, commit, checkpoint, merge; True when merged."""
    task = task_record(run, task_id)
    branch = task.get("branch") or task_branch(run, task)
    worktree = task_worktree(team, run, task, branch)
    outcome = execute_task(team, run, task, worktree, branch, runner=agent)
    if outcome.status != "stopped" or team.git.is_worktree(worktree):
        remove_task_worktree(team, run, worktree)
    if outcome.status != "ready":
        return False
    if spec.before_merge is not None:
        spec.before_merge(task, branch)
    merge = merge_task(team, run, {**task, "commit": outcome.commit}, branch)
    return conclude_task(run, task, merge, outcome.files)["status"] == "completed"


def conclude(team: Team, run: RunContext) -> dict[str, Any]:
    """Integrate and finish (or stop), then remove the run's own checkouts."""
    finished = False
    try:
        if run.stop.stopped:
            if run.stop.kind == STOP_STATE:
                run.stop.check()
            finished = True
            return stop(team, run)
        set_feature_status(run, "integrating")
        assert run.integration_worktree is not None
        try:
            integration = integrate(team, run, run.integration_worktree)
        except RunStopped:
            finished = True
            return stop(team, run)
        ok = bool(integration["success"])
        set_feature_status(run, "completed" if ok else "failed", completed_at=utc_now())
        finished = True
        return finish(team, run, "completed" if ok else "failed",
                      EXIT_OK if ok else EXIT_FAILED)
    finally:
        remove_own_worktree(team, run, run.integration_worktree, force=finished)
        run.integration_worktree = None
        remove_empty_dirs(feature_dir(team, run))


def record_results(backlog: Any, state: Mapping[str, Any], run_id: str,
                   exit_code: int) -> dict[int, str]:
    """Write each plan task's outcome back to its backlog task; returns id -> new status."""
    by_backlog: dict[int, list[TaskRecord]] = {}
    for task in tasks_of(state):
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
