#!/usr/bin/env python3
"""The file-based orchestrator: parallel agents in their own worktrees, merged as they finish.

The manager plans tasks with dependencies. A task starts as soon as every task it depends on
is completed and merged, up to --max-workers at once, in a worktree on its own branch cut from
the feature branch at that moment (so it sees its dependencies' work). The orchestrator commits
what the agent changed, merges the branch into the feature branch (a conflict goes to the
manager, who resolves it with tools), and after the last task runs the integration pass: the
orchestrator runs the tests on the merged branch and the manager reviews it.

    python scripts/orchestration/file_based_orchestrator.py --feature "..." --project-dir DIR
    python scripts/orchestration/file_based_orchestrator.py --demo

Everything the team does is visible live in .ai-agents/state/team-communication.json.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from agent_team.cli import common_options, max_workers_option, run_main
from agent_team.crash_repair import repair_after_crash
from agent_team.errors import EXIT_FAILED, EXIT_OK, GitError, RunStopped, StateError
from agent_team.git_merge import MergeResult
from agent_team.orchestrator import BaseOrchestrator
from agent_team.records import set_feature_status, task_record
from agent_team.run_context import STOP_STATE
from agent_team.run_end import finish, stop
from agent_team.run_frame import (
    begin_resume,
    check_resumable,
    locked_run,
    new_run,
    preflight_checks,
)
from agent_team.run_worktrees import (
    clear_stale_locks,
    create_feature_branch,
    drain_pool,
    feature_dir,
    open_integration_worktree,
    open_pool,
    remove_empty_dirs,
    remove_own_worktree,
    remove_task_worktree,
    report_stale_worktrees,
    task_worktree,
)
from agent_team.state_schema import utc_now
from agent_team.steps_merge import conclude_task, merge_task, resolve_conflict
from agent_team.steps_schedule import resume_plan, run_schedule
from agent_team.steps_task import execute_task, fail_message, fail_task
from agent_team.task_record import TaskRecord

__all__ = ["FileBasedOrchestrator", "main"]


class FileBasedOrchestrator(BaseOrchestrator):
    """Dependency-ordered parallel execution with per-task worktrees and merge-as-you-go."""

    orchestrator_name = "file-based"

    def __init__(self, project_dir: str | Path, *, max_workers: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(project_dir, **kwargs)
        self.max_workers = 1 if not self.team.settings.coordination.parallel_execution else (
            max_workers or self.team.settings.max_workers)
        self._workspace_lock = threading.Lock()

    # -- the run ---------------------------------------------------------------------------

    def run(self, feature: str) -> dict[str, Any]:
        """Plan, execute in parallel, integrate; returns the summary (see report.py)."""
        self.close()
        with contextlib.ExitStack() as frame:
            run = self._start(feature, frame)
            report_stale_worktrees(self.team, run)
            result = self.run_parallel(feature, self.max_workers)
            if run.finished and isinstance(result, dict):
                return result
            return self._conclude()
        raise AssertionError("unreachable")

    def run_parallel(self, feature: str, max_workers: int = 3) -> dict[str, Any]:
        """Plan the feature, then run its tasks as their dependencies complete."""
        if not self.current.began:  # called directly rather than through run()
            return self.run(feature)
        if self.current.stop.stopped:
            return stop(self.team, self.current)
        tasks = self._plan_or_stop(feature)
        if tasks is None:
            return stop(self.team, self.current)
        return self._execute(tasks, max_workers)

    def resume(self, max_workers: int | None = None) -> dict[str, Any]:
        """Continue the feature recorded in the state file after a crash or a stop.

        Completed and merged tasks are skipped; a task whose agent finished but whose merge
        did not happen is merged; every other task restarts from its branch's last commit.
        """
        self.close()
        feature = check_resumable(self.team, self.state)
        preflight_checks(self.team)
        run = self.current = new_run(self.team) if self.current.began else self.current
        workers = max_workers or self.max_workers
        with locked_run(self.team, run):
            state = begin_resume(self.team, run, feature)
            for line in repair_after_crash(  # a kill inside `git worktree add` or `git branch`
                    self.git.common_dir, feature_dir(self.team, run), run.feature_branch):
                self.log(line)
            self.git.worktrees.prune()
            clear_stale_locks(self.team, run)
            if not self.git.branch_exists(run.feature_branch) or not state["tasks"]:  # planning
                tasks = state["tasks"] or self._plan_or_stop(run.feature)
                if tasks is None:
                    return stop(self.team, run)
                return self._execute(tasks, workers)
            done = resume_plan(self.team, run, state["tasks"], self.task_branch)
            self.log(f"{len(done)} of {len(state['tasks'])} tasks already done.")
            return self._execute(state["tasks"], workers, completed=done)

    def _plan_or_stop(self, feature: str) -> list[TaskRecord] | None:
        try:
            return self.manager_create_tasks(feature)
        except RunStopped:
            return None

    def _execute(self, tasks: list[TaskRecord], max_workers: int,
                 completed: list[str] | None = None) -> dict[str, Any]:
        """Run the schedule, then the integration pass; returns the summary."""
        run = self.current
        open_pool(self.team, run)  # task worktrees reused across tasks
        self._prepare_workspace()
        set_feature_status(run, "in_progress")
        self.log(f"Running {len(tasks) - len(completed or [])} tasks with up to "
                 f"{max_workers} agents at once.")
        run_schedule(self.team, run, tasks, self._run_one, max_workers=max_workers,
                     completed=completed or ())
        return self._conclude()

    def _conclude(self) -> dict[str, Any]:
        """Integrate and finish (or stop), then remove the run's own checkouts."""
        run = self.current
        finished = False
        try:
            if run.stop.stopped:
                if run.stop.kind == STOP_STATE:  # the store is unusable: nothing to report to
                    run.stop.check()
                finished = True
                return stop(self.team, run)
            self._prepare_workspace()
            set_feature_status(run, "integrating")
            try:
                integration = self.manager_integrate(run.store.read()["tasks"])
            except RunStopped:
                finished = True
                return stop(self.team, run)
            ok = bool(integration["success"])
            set_feature_status(run, "completed" if ok else "failed", completed_at=utc_now())
            finished = True
            return finish(self.team, run, "completed" if ok else "failed",
                          EXIT_OK if ok else EXIT_FAILED)
        finally:
            drain_pool(self.team, run)
            remove_own_worktree(self.team, run, run.integration_worktree, force=finished)
            run.integration_worktree = None
            remove_empty_dirs(feature_dir(self.team, run))

    def _prepare_workspace(self) -> None:
        """The feature branch (created when missing) and its integration checkout."""
        run = self.current
        with self._workspace_lock:  # a subclass's driver may start tasks in parallel
            if not self.git.branch_exists(run.feature_branch):
                create_feature_branch(self.team, run)
            if run.integration_worktree is None:
                run.integration_worktree = open_integration_worktree(self.team, run)

    def _run_one(self, task_id: str) -> bool:
        """One task of the schedule, through the `agent_execute_task` seam."""
        task = task_record(self.current, task_id)
        return self.agent_execute_task(task).get("status") == "completed"

    # -- one task --------------------------------------------------------------------------

    def agent_execute_task(self, task: TaskRecord) -> dict[str, Any]:
        """The whole life of one task: worktree, agent, commit, merge, cleanup."""
        if not self.current.began:
            self._ensure_begun(str(task.get("description") or task["task_id"]))
        self._prepare_workspace()
        branch = task.get("branch") or self.task_branch(task)
        task = {**task, "branch": branch}
        result = task.get("result")
        if result and self._already_finished(task):
            self.log(f"{task['task_id']}: agent work already committed; merging it.")
            return self._merge(task, branch, result["files_modified"])
        try:
            worktrees = self.setup_worktrees([task])
            worktree = worktrees.get(task["task_id"]) or worktrees.get(task["assigned_to"])
            if worktree is None:
                raise GitError(f"setup_worktrees returned no worktree for {task['task_id']} "
                               f"(keys: {', '.join(map(str, worktrees)) or 'none'})")
            outcome = self.execute_task_in_worktree(task, Path(worktree))
        except (RunStopped, StateError):
            raise
        except Exception as exc:  # an error in a seam is recorded on its task, never lost
            return fail_task(self.current, task["task_id"], fail_message(exc))
        if not isinstance(outcome, Mapping):
            return fail_task(self.current, task["task_id"],
                             f"execute_task_in_worktree returned {outcome!r}, not a result")
        return dict(outcome)

    def setup_worktrees(self, tasks: list[TaskRecord]) -> dict[str, Path]:
        """Create a worktree per task (keyed by task id), cut from the feature branch now."""
        return {task["task_id"]: task_worktree(self.team, self.current, task,
                                                task.get("branch") or self.task_branch(task))
                for task in tasks}

    def execute_task_in_worktree(self, task: TaskRecord, worktree: Path) -> dict[str, Any]:
        """Run the agent in `worktree`, commit, merge into the feature branch."""
        run = self.current
        branch = (self.git.worktrees.branch_of(worktree) or task.get("branch")
                  or self.task_branch(task))
        outcome = execute_task(self.team, run, task, worktree, branch)
        if outcome.status != "stopped" or self.git.is_worktree(worktree):
            remove_task_worktree(self.team, run, worktree)
        if outcome.status != "ready":
            return outcome.as_dict()
        return self._merge({**task, "commit": outcome.commit}, branch, outcome.files)

    def _merge(self, task: TaskRecord, branch: str, files: list[str]) -> dict[str, Any]:
        merge = self.merge_task(task, branch)
        return conclude_task(self.current, task, merge, files)

    def merge_task(self, task: TaskRecord, branch: str) -> dict[str, Any]:
        """Merge a finished task branch into the feature branch, one merge at a time."""
        return merge_task(self.team, self.current, task, branch, resolve=self.resolve_conflict)

    def resolve_conflict(self, task: TaskRecord, branch: str,
                         merge: MergeResult) -> dict[str, Any]:
        """Let the manager resolve a conflict with tools, or abort and keep the branch."""
        return resolve_conflict(self.team, self.current, task, branch, merge)

    def _already_finished(self, task: TaskRecord) -> bool:
        """On resume: the agent finished and its commit is on the branch; only the merge is due."""
        branch = task.get("branch") or self.task_branch(task)
        return bool(
            task.get("status") == "in_progress" and task.get("result") and task.get("commit")
            and self.git.branch_exists(branch) and self.git.head_commit(branch) == task["commit"]
        )


@click.command()
@common_options
@max_workers_option
@click.option("--resume", is_flag=True,
              help="Continue the feature recorded in the state file after a crash or a stop.")
def main(max_workers: int | None, resume: bool, **options: Any) -> None:
    """Plan a feature with a manager agent and build it with parallel agents."""
    run_main(
        options, FileBasedOrchestrator, "file-based-demo.json", max_workers=max_workers,
        resume=(lambda orchestrator: orchestrator.resume(max_workers)) if resume else None,
        show_history=True,
    )


if __name__ == "__main__":
    main()
