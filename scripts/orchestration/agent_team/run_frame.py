"""The frame of a run: checks before any write, the run lock, the feature's records in the
store, Ctrl-C, and an honest record when an error escapes.
"""

from __future__ import annotations

import contextlib
import copy
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import state_ops
from .budget import BudgetGuard
from .cli_agents import preflight, raise_on_problems
from .errors import (
    EXIT_FAILED,
    AgentTeamError,
    ConfigError,
    RunInterrupted,
)
from .events import EventLog, log_path
from .git_workspace import slugify
from .run_context import RunContext
from .run_lock import RunLock
from .sandbox import require_sandbox
from .state import TeamState
from .state_checks import (
    check_consistency,
    owned_branches,
    raise_if_inconsistent,
    task_branch_of,
)
from .state_schema import new_state, utc_now
from .steps_task import fail_message
from .store_interface import RunStore
from .team import Team

#: Paths the run writes inside the repository, kept out of the user's `git status`.
RUN_FILES = ("/.ai-agents/logs/", "/.ai-agents/reports/", "/.ai-agents/state/*.lock",
             "/.ai-agents/state/*.journal",
             "/.ai-agents/state/.*.tmp")


def new_run(team: Team, *, run_id: str | None = None,
            store: RunStore | None = None) -> RunContext:
    """A run not yet begun: usage of calls made before it begins is kept until it does."""
    store = store or TeamState.for_project(team.project_dir, create=False, must_exist=False)
    run = RunContext(store=store, events=EventLog(None, run_id=""),
                     budget=BudgetGuard(team.settings.limits), say=team.say)
    if run_id:
        run.run_id = run_id
    if team.progress is not None:
        run.events.add_listener(team.progress)
    return run


def preflight_checks(team: Team) -> None:
    """What must hold before a run writes anything: prices for a cost limit, agent CLIs."""
    team.models.check_prices_for_cost_limit()
    raise_on_problems(preflight(team.settings.to_dict()))


def check_feature(team: Team, run: RunContext, feature: str, *,
                  branch: str | None = None) -> None:
    """Refuse a run before anything is written: empty feature, taken branch, bad state.

    `branch` names the feature branch from outside (`feature/job-<id>` for a service job);
    by default it is `feature/<slug of the feature>`.
    """
    if not feature or not feature.strip():
        raise ConfigError("The feature description is empty. Pass --feature \"...\".")
    run.feature_branch = branch or f"feature/{slugify(feature)}"
    if team.git.branch_exists(run.feature_branch):
        raise ConfigError(
            f"Branch {run.feature_branch} already exists, probably from an earlier run of "
            "this feature. Nothing was changed. Delete or rename it "
            f"(git branch -m {run.feature_branch} {run.feature_branch}-old), "
            "or describe the feature differently."
        )
    run.store.read()


@contextlib.contextmanager
def locked_run(team: Team, run: RunContext, *, run_lock: bool = True) -> Iterator[None]:
    """Hide run files, hold the run lock and the store, catch Ctrl-C, close the run on error.

    `run_lock=False` is for a run nested in another run of the same repository (a service
    job's child job in its parent task's worktree): the outer run holds the lock for both.
    """
    unconfined = require_sandbox(team.sandbox)  # refuses (exit 2) when it is needed and broken
    for pattern in (team.worktree_root_pattern(), *RUN_FILES):
        team.git.exclude(pattern)
    lock = acquire_run_lock(team) if run_lock else None

    def on_retry(role: str, attempt: int, delay: float, error: Exception) -> None:
        run.events.emit("retry", role=role, attempt=attempt, delay_s=round(delay, 2),
                        error=str(error))
        run.log(f"{role}: API error ({error}); retry {attempt} in {delay:.1f}s")

    team.models.add_retry_listener(on_retry)
    try:
        with run.store.exclusive(), graceful_interrupt(run):
            try:
                if unconfined:
                    run.log(unconfined)
                    run.warnings.append(unconfined)
                    run.events.emit("sandbox_off", message=unconfined)
                yield
            except BaseException as exc:
                close_after_error(run, exc)
                raise
    finally:
        team.models.remove_retry_listener(on_retry)
        if team.recorder is not None:
            team.recorder.close()
        run.events.close()
        if lock is not None:
            lock.release()


@contextlib.contextmanager
def graceful_interrupt(run: RunContext) -> Iterator[None]:
    """First Ctrl-C: agents stop at their next turn and their work is committed (exit 130).

    A second Ctrl-C raises KeyboardInterrupt as usual. Only the main thread can own the
    signal, so library use from another thread keeps Python's default behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if run.stop.stopped:
            signal.default_int_handler(signum, frame)
        run.trip(RunInterrupted("Interrupted (Ctrl-C)."))
        run.log("Stopping: running agents end at their next turn and their work is "
                "committed. Press Ctrl-C again to abort at once.")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def acquire_run_lock(team: Team) -> RunLock:
    """Refuse to start while another orchestrator runs on this project (see run_lock.py:
    a lock on the git common directory itself, so deleting the lock file does not free it)."""
    return RunLock(team.git.common_dir, project=str(team.project_dir)).acquire()


def run_record(team: Team, run: RunContext, feature_id: str, now: str) -> dict[str, Any]:
    """The run's entry in `runs[]`, with the effective settings that rebuild it."""
    return {"run_id": run.run_id, "feature_id": feature_id, "orchestrator": team.name,
            "started_at": now, "status": "running", "settings": team.settings.to_dict()}


def begin_feature(team: Team, run: RunContext, feature: str) -> None:
    """Record the feature and a new run in the store; git is not touched yet.

    Tasks, agents, decisions, merges and usage describe one feature, so they start empty;
    earlier runs stay summarised in `runs`.
    """
    slug = run.feature_branch.split("/", 1)[1]
    run.feature = feature.strip()
    run.base_branch = team.git.current_branch() or "HEAD"
    run.base_commit = base_commit = team.git.head_commit()
    run.started = time.monotonic()
    now = utc_now()

    def apply(state: dict[str, Any]) -> None:
        state["current_feature"] = {
            "id": slug, "title": run.feature.splitlines()[0][:200],
            "description": run.feature, "branch": run.feature_branch,
            "base_branch": run.base_branch, "base_commit": base_commit,
            "branches": [run.feature_branch], "status": "planning",
            "orchestrator": team.name, "run_id": run.run_id, "started_at": now,
            "updated_at": now, "completed_at": None,
        }
        state["tasks"] = []
        state["agents"] = {}
        state["decisions"] = []
        state["integration"] = {"status": "not_started", "branch": run.feature_branch,
                                "merges": []}
        limits = state["usage"].get("limits")
        state["usage"] = new_state(state["project_name"])["usage"]
        if limits:
            state["usage"]["limits"] = limits
        add_pending_usage(run, state)
        close_dead_runs(state)
        state.setdefault("runs", []).append(run_record(team, run, slug, now))

    run.store.update(apply)
    run.began = True
    open_event_log(team, run, resumed=False)


def add_pending_usage(run: RunContext, state: dict[str, Any]) -> None:
    """Calls made before the run began (custom phases) count like every other call."""
    for pending in run.pending_usage:
        state_ops.add_usage_to(state, pending.role, pending.counts, cost_usd=pending.cost_usd)
    run.pending_usage.clear()


def close_dead_runs(state: dict[str, Any]) -> None:
    """Mark runs still recorded as running as crashed: this run holds the lock, so their
    processes ended without closing them (killed, or the machine went down)."""
    for entry in state.get("runs", []):
        if entry.get("status") == "running":
            entry.update(status="crashed", exit_code=None)


def check_resumable(team: Team, store: TeamState) -> dict[str, Any]:
    """The recorded feature, when it can be resumed; a clear error otherwise."""
    state = store.read()
    feature = state["current_feature"]
    if feature is None:
        raise ConfigError("Nothing to resume: the state file records no feature. Start a run "
                          "with --feature \"...\".")
    raise_if_inconsistent(store.path, check_consistency(  # before git is touched at all
        state, team.git, worktree_root=team.worktree_root,
        branch_of=lambda task: task_branch_of(feature["branch"], task)))
    if feature["status"] == "completed":
        raise ConfigError(f"Feature {feature['title']!r} is already completed on "
                          f"{feature['branch']}; there is nothing to resume.")
    if feature["status"] == "planning" or (
        feature["status"] in ("failed", "stopped") and not state["tasks"]
    ):
        owned = owned_branches(feature) or []  # a kill right after git created it
        if team.git.branch_exists(feature["branch"]) and feature["branch"] not in owned:
            raise ConfigError(
                f"The recorded feature is still being planned, yet branch {feature['branch']} "
                "already exists; it is not this run's. Rename it or start a new run with "
                "--feature.")
        return feature  # stopped while planning: the plan is asked for again
    if not team.git.branch_exists(feature["branch"]):
        raise ConfigError(
            f"The recorded feature branch {feature['branch']} does not exist (it was deleted, "
            "or planning never finished). Start a new run with --feature.")
    return feature


def stored_settings(store: TeamState) -> dict[str, Any] | None:
    """The effective settings of the last recorded run, to resume it with no flags."""
    if not store.path.exists():
        return None
    runs = store.read().get("runs") or []
    for entry in reversed(runs):
        if entry.get("settings"):
            return dict(entry["settings"])
    return None


def begin_resume(team: Team, run: RunContext, feature: dict[str, Any]) -> dict[str, Any]:
    """Record a new run of the recorded feature; budgets count what was already spent."""
    run.feature_branch = feature["branch"]
    run.base_branch = feature["base_branch"]
    run.feature = feature.get("description") or feature["title"]
    run.base_commit = feature.get("base_commit") or team.git.history.merge_base(
        run.feature_branch, run.base_branch)
    run.started = time.monotonic()
    now = utc_now()
    planned = team.git.branch_exists(run.feature_branch)

    def apply(state: dict[str, Any]) -> dict[str, Any]:
        current = state["current_feature"]
        current.update(status="in_progress" if planned else "planning", stop_reason=None,
                       run_id=run.run_id, updated_at=now, completed_at=None)
        add_pending_usage(run, state)
        close_dead_runs(state)
        state["runs"].append(run_record(team, run, current["id"], now))
        return copy.deepcopy(state)

    state = run.store.update(apply)
    run.budget = BudgetGuard(team.settings.limits, state["usage"])
    run.began = True
    open_event_log(team, run, resumed=True)
    run.log(f"Resuming {run.feature_branch}: {feature['title']}")
    return state


def open_event_log(team: Team, run: RunContext, *, resumed: bool) -> None:
    """Start this run's JSON-lines log under .ai-agents/logs/ and announce the run."""
    run.events.close()
    run.events = EventLog(log_path(team.project_dir, run.run_id), run_id=run.run_id)
    if team.progress is not None:
        run.events.add_listener(team.progress)
    if team.recorder is not None:
        team.recorder.set_feature(run.feature)
    run.events.emit("run_started", feature=run.feature, branch=run.feature_branch,
                    base_branch=run.base_branch, orchestrator=team.name,
                    provider=team.models.provider, resumed=resumed)


def close_after_error(run: RunContext, exc: BaseException) -> None:
    """Mark the feature and the run as failed (or stopped) after an error escaped."""
    if not run.began or run.finished:
        return
    stopped = isinstance(exc, (KeyboardInterrupt, RunInterrupted))
    code = 130 if stopped else int(getattr(exc, "exit_code", EXIT_FAILED))
    reason = "interrupted" if stopped else fail_message(exc)[:500]

    def apply(state: dict[str, Any]) -> None:
        feature = state.get("current_feature")
        if feature and feature.get("run_id") == run.run_id and feature["status"] not in (
            "completed", "failed", "stopped"
        ):
            feature.update(status="stopped" if stopped else "failed", stop_reason=reason,
                           updated_at=utc_now())
        for entry in state.get("runs", []):
            if entry["run_id"] == run.run_id and entry["status"] == "running":
                entry.update(status="stopped" if stopped else "failed", exit_code=code,
                             finished_at=utc_now())

    run.events.emit("run_finished", status="stopped" if stopped else "failed",
                    exit_code=code, error=reason)
    try:
        run.store.update(apply)
    except AgentTeamError as state_error:  # the state file itself is the problem
        if str(state_error) != str(exc):  # the same error is reported as the run's end
            run.log(f"Could not record the failed run in the state file: {state_error}")
