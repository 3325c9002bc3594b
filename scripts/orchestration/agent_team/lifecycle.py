"""The life of one run: checks before any write, the run lock, the feature's records in the
state file, honest endings (completed, failed, stopped by a budget, crashed) and cleanup.

`RunLifecycle` is mixed into `BaseOrchestrator`; it relies on the orchestrator's `git`,
`state`, `config`, `budget` and `log`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock

from . import report as report_mod
from .budget import BudgetGuard
from .errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    AgentTeamError,
    ConfigError,
    GitError,
    StateLockedError,
    UsageLimitExceeded,
)
from .events import EventLog, log_path
from .git_workspace import slugify
from .sandbox import require_sandbox
from .state import new_state, utc_now

if TYPE_CHECKING:
    from .orchestrator import BaseOrchestrator

    _Base = BaseOrchestrator
else:
    _Base = object


def fail_message(exc: BaseException) -> str:
    """A one-line reason for a failure, with the exception type when it is not ours."""
    if isinstance(exc, AgentTeamError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class RunLifecycle(_Base):
    """Starting, resuming, stopping and finishing runs."""

    @contextlib.contextmanager
    def running(self, feature: str) -> Iterator[None]:
        """The frame of one run: checks before any write, the run lock, and an honest end.

        Whatever escapes the body (an invalid plan, a crash, Ctrl-C) marks the feature and the
        run record as failed in the state file before it propagates.
        """
        self.check_feature(feature)
        self.check_prices_for_cost_limit()
        with self._locked_run():
            self.begin_feature(feature)
            yield

    @contextlib.contextmanager
    def resuming(self) -> Iterator[dict[str, Any]]:
        """The frame of a resumed run: continue the feature recorded in the state file."""
        feature = self.check_resumable()
        self.check_prices_for_cost_limit()
        with self._locked_run():
            yield self.begin_resume(feature)

    @contextlib.contextmanager
    def _locked_run(self) -> Iterator[None]:
        sandbox_off = require_sandbox(self.sandbox_policy)  # refuses (exit 2) when broken
        self.hide_run_files()
        self.acquire_run_lock()
        try:
            with self.state.exclusive(), self._graceful_interrupt():
                try:
                    if sandbox_off:
                        self.log(sandbox_off)
                    yield
                except BaseException as exc:
                    self._close_run_after_error(exc)
                    raise
        finally:
            if self.recorder is not None:
                self.recorder.close()
            self.events.close()
            self.release_run_lock()

    @contextlib.contextmanager
    def _graceful_interrupt(self) -> Iterator[None]:
        """First Ctrl-C: agents stop at their next turn and their work is committed (exit 130).

        A second Ctrl-C raises KeyboardInterrupt as usual. Only the main thread can own the
        signal, so library use from another thread keeps Python's default behaviour.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_interrupt(signum: int, frame: Any) -> None:
            if self.budget.tripped is not None:
                signal.default_int_handler(signum, frame)
            self.budget.stop("Interrupted (Ctrl-C).")
            self.log("Stopping: running agents end at their next turn and their work is "
                     "committed. Press Ctrl-C again to abort at once.")

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def check_resumable(self) -> dict[str, Any]:
        """The recorded feature, when it can be resumed; a clear error otherwise."""
        feature = self.state.read()["current_feature"]
        if feature is None:
            raise ConfigError(
                "Nothing to resume: the state file records no feature. Start a run with "
                "--feature \"...\"."
            )
        if feature["status"] == "completed":
            raise ConfigError(
                f"Feature {feature['title']!r} is already completed on {feature['branch']}; "
                "there is nothing to resume."
            )
        if feature["status"] == "planning" or (
            feature["status"] in ("failed", "stopped") and not self.state.read()["tasks"]
        ):
            if self.git.branch_exists(feature["branch"]):
                raise ConfigError(
                    f"The recorded feature is still being planned, yet branch "
                    f"{feature['branch']} already exists; it is not this run's. Rename it or "
                    "start a new run with --feature."
                )
            return feature  # stopped while planning: the plan is asked for again
        if not self.git.branch_exists(feature["branch"]):
            raise ConfigError(
                f"The recorded feature branch {feature['branch']} does not exist (it was "
                "deleted, or planning never finished). Start a new run with --feature."
            )
        return feature

    def begin_resume(self, feature: dict[str, Any]) -> dict[str, Any]:
        """Record a new run of the recorded feature; budgets count what was already spent."""
        self.feature_branch = feature["branch"]
        self.base_branch = feature["base_branch"]
        self.base_commit = feature.get("base_commit") or self.git.merge_base(
            self.feature_branch, self.base_branch)
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.started = time.monotonic()
        now = utc_now()
        planned = self.git.branch_exists(self.feature_branch)

        def apply(state: dict[str, Any]) -> dict[str, Any]:
            current = state["current_feature"]
            current.update(status="in_progress" if planned else "planning", stop_reason=None,
                           run_id=self.run_id, updated_at=now, completed_at=None)
            self.close_dead_runs(state)
            state["runs"].append({
                "run_id": self.run_id, "feature_id": current["id"],
                "orchestrator": self.orchestrator_name, "started_at": now,
                "status": "running",
            })
            return copy.deepcopy(state)

        state = self.state.update(apply)
        self.budget = BudgetGuard(self.config.limits, state["usage"])
        self._open_event_log(feature["title"], resumed=True)
        self.log(f"Resuming {self.feature_branch}: {feature['title']}")
        return state

    def check_feature(self, feature: str) -> None:
        """Refuse a run before anything is written: empty feature, taken branch, bad state."""
        if not feature or not feature.strip():
            raise ConfigError("The feature description is empty. Pass --feature \"...\".")
        self.feature_branch = f"feature/{slugify(feature)}"
        if self.git.branch_exists(self.feature_branch):
            raise ConfigError(
                f"Branch {self.feature_branch} already exists, probably from an earlier run of "
                "this feature. Nothing was changed. Delete or rename it "
                f"(git branch -m {self.feature_branch} {self.feature_branch}-old), "
                "or describe the feature differently."
            )
        self.state.read()

    def hide_run_files(self) -> None:
        """Keep worktrees, logs, reports and lock files out of the user's `git status`."""
        for pattern in (
            self.worktree_root_pattern(), "/.ai-agents/logs/", "/.ai-agents/reports/",
            "/.ai-agents/state/*.lock", "/.ai-agents/state/.*.tmp",
        ):
            self.git.exclude(pattern)

    def acquire_run_lock(self) -> None:
        """Refuse to start while another orchestrator runs on this project.

        The lock file lives in the repository's git directory, so it never shows in the
        working tree; the operating system releases it when the process ends, even on a crash.
        """
        lock_path = Path(self.git.common_dir) / "agent-team-run.lock"
        lock = filelock.FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise StateLockedError(
                f"Another orchestrator is already running on {self.project_dir} (it holds "
                f"{lock_path}). Wait for it to finish, or watch it with "
                "`python scripts/orchestration/team.py status`; the lock is released "
                "automatically when that process ends."
            ) from None
        self._run_lock = lock

    def release_run_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def begin_feature(self, feature: str) -> None:
        """Record the feature and a new run in the state file; git is not touched yet.

        Tasks, agents, decisions, merges and usage describe one feature, so they start empty;
        earlier runs stay summarised in `runs`.
        """
        slug = self.feature_branch.split("/", 1)[1]
        self.base_branch = self.git.current_branch() or "HEAD"
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.started = time.monotonic()
        self.base_commit = base_commit = self.git.head_commit()
        now = utc_now()

        def apply(state: dict[str, Any]) -> None:
            state["current_feature"] = {
                "id": slug,
                "title": feature.strip().splitlines()[0][:200],
                "description": feature.strip(),
                "branch": self.feature_branch,
                "base_branch": self.base_branch,
                "base_commit": base_commit,
                "status": "planning",
                "orchestrator": self.orchestrator_name,
                "run_id": self.run_id,
                "started_at": now,
                "updated_at": now,
                "completed_at": None,
            }
            state["tasks"] = []
            state["agents"] = {}
            state["decisions"] = []
            state["integration"] = {"status": "not_started", "branch": self.feature_branch,
                                    "merges": []}
            limits = state["usage"].get("limits")
            state["usage"] = new_state(state["project_name"])["usage"]
            if limits:
                state["usage"]["limits"] = limits
            self.close_dead_runs(state)
            state.setdefault("runs", []).append({
                "run_id": self.run_id, "feature_id": slug,
                "orchestrator": self.orchestrator_name, "started_at": now,
                "status": "running",
            })

        self.state.update(apply)
        self.budget = BudgetGuard(self.config.limits)
        self._open_event_log(feature.strip(), resumed=False)

    @staticmethod
    def close_dead_runs(state: dict[str, Any]) -> None:
        """Mark runs still recorded as running as crashed.

        This run holds the run lock, so their processes ended without closing them (killed, or
        the machine went down).
        """
        for run in state.get("runs", []):
            if run.get("status") == "running":
                run.update(status="crashed", exit_code=None)

    def _open_event_log(self, feature: str, *, resumed: bool) -> None:
        """Start this run's JSON-lines log under .ai-agents/logs/ and announce the run."""
        self.events.close()
        self.events = EventLog(log_path(self.project_dir, self.run_id), run_id=self.run_id)
        if self.progress is not None:
            self.events.add_listener(self.progress)
        if self.recorder is not None:
            self.recorder.set_feature(feature)
        self.events.emit(
            "run_started", feature=feature, branch=self.feature_branch,
            base_branch=self.base_branch, orchestrator=self.orchestrator_name,
            provider=self.provider, resumed=resumed,
        )

    def _close_run_after_error(self, exc: BaseException) -> None:
        """Mark the feature and the run as failed (or stopped) after an error escaped."""
        stopped = isinstance(exc, KeyboardInterrupt)
        code = 130 if stopped else getattr(exc, "exit_code", EXIT_FAILED)
        reason = "interrupted" if stopped else fail_message(exc)[:500]

        def apply(state: dict[str, Any]) -> None:
            feature = state.get("current_feature")
            if feature and feature.get("run_id") == self.run_id and feature["status"] not in (
                "completed", "failed", "stopped"
            ):
                feature.update(status="stopped" if stopped else "failed",
                               stop_reason=reason, updated_at=utc_now())
            for run in state.get("runs", []):
                if run["run_id"] == self.run_id and run["status"] == "running":
                    run.update(status="stopped" if stopped else "failed", exit_code=code,
                               finished_at=utc_now())

        if not self.run_id:
            return
        self.events.emit("run_finished", status="stopped" if stopped else "failed",
                         exit_code=code, error=reason)
        try:
            self.state.update(apply)
        except AgentTeamError as state_error:  # the state file itself is the problem
            if str(state_error) != str(exc):  # the same error is reported as the run's end
                self.log(f"Could not record the failed run in the state file: {state_error}")

    def create_feature_branch(self) -> None:
        """Create `feature/<slug>` at the base commit."""
        self.git.create_branch(self.feature_branch, self.base_commit)
        self.log(f"Feature branch {self.feature_branch} created from {self.base_branch}.")

    def stop_for_budget(self, exc: UsageLimitExceeded) -> dict[str, Any]:
        """End the run because a budget was reached (exit 3) or the user pressed Ctrl-C (130).

        Either way work so far is committed on the task branches and --resume continues.
        """
        if exc.limit == "stop":
            self.set_feature_status("stopped", stop_reason="interrupted by the user")
            self._note("orchestrator", None, "stopped", "interrupted by the user")
            self.log("Stopped. Work so far is committed on the task branches; continue with "
                     "--resume.")
            return self.finish_run("stopped", EXIT_INTERRUPTED)
        reason = f"budget: {exc}"
        self.events.emit("budget_stop", limit=exc.limit, value=exc.value, maximum=exc.maximum)
        self.set_feature_status("stopped", stop_reason=reason)
        self._note("orchestrator", None, "stopped", reason,
                   {"limit": exc.limit, "value": exc.value, "maximum": exc.maximum})
        self.log(f"Stopped. {exc} Work so far is committed on the task branches; raise the "
                 "limit and continue with --resume.")
        return self.finish_run("stopped", EXIT_BUDGET)

    def remove_empty_dirs(self, root: Path) -> None:
        """Delete empty directories left under `root` (and `root` itself when empty)."""
        if not root.is_dir():
            return
        found = []
        for directory, subdirs, files in os.walk(root):
            if ".git" in files or ".git" in subdirs:  # a worktree that was kept: leave it be
                subdirs.clear()
                continue
            found.append(Path(directory))
        for directory in reversed(found):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()

    def remove_own_worktree(self, path: Path | None, *, force: bool) -> None:
        """Remove a worktree of the orchestrator's (feature or integration checkout).

        `force` is for a run that ended normally: all work is committed and what is left are
        files the test command wrote. After an error the worktree is kept when it has changes.
        """
        if path is None:
            return
        if not self.git.is_worktree(path):  # deleted (and maybe re-created) during the run
            self.git.prune_worktrees()
            if path.exists():
                self.log(f"Kept {path}: it is no longer a git worktree (deleted during the run?).")
            return
        if self.git.merge_in_progress(path):
            self.git.abort_merge(path)
        try:
            self.git.remove_worktree(path, force=force)
        except GitError as exc:
            self.log(f"Kept worktree {path}: {exc}")

    def worktree_root_pattern(self) -> str:
        root = str(self.config.coordination["worktree_root"]).strip("/")
        return f"/{root}/"

    @property
    def worktree_root(self) -> Path:
        return self.project_dir / str(self.config.coordination["worktree_root"])

    def set_feature_status(self, status: str, **fields: Any) -> None:
        def apply(state: dict[str, Any]) -> None:
            feature = state["current_feature"]
            if feature is None:
                return
            feature["status"] = status
            feature["updated_at"] = utc_now()
            feature.update(fields)

        self.state.update(apply)

    def finish_run(self, status: str, exit_code: int) -> dict[str, Any]:
        """Write the summary (console, Markdown, JSON) and close the run in the state file."""
        duration = time.monotonic() - self.started if self.started else 0.0
        snapshot = self.state.read()
        files = None
        if self.feature_branch and self.git.branch_exists(self.feature_branch):
            files = self.git.changed_files(self.base_commit, self.feature_branch)
        summary = report_mod.build_summary(snapshot, run_id=self.run_id,
                                           duration_seconds=duration, status=status,
                                           exit_code=exit_code, files_changed=files)
        paths = report_mod.write_reports(self.project_dir, self.run_id, summary)

        def apply(state: dict[str, Any]) -> None:
            for run in state.get("runs", []):
                if run["run_id"] == self.run_id:
                    run.update(status=status, exit_code=exit_code, finished_at=utc_now(),
                               report=str(paths["markdown"].relative_to(self.project_dir)),
                               summary=report_mod.compact(summary))

        self.state.update(apply)
        self.output(report_mod.render_console(summary))
        self.log(f"Report written to {paths['markdown']}")
        self.events.emit("run_finished", status=status, exit_code=exit_code)
        return summary
