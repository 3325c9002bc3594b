#!/usr/bin/env python3
"""The simple orchestrator: the whole idea in one readable file.

The manager plans; each task runs in dependency order, one at a time, on one feature branch
checked out in its own worktree (the user's checkout is never touched); the orchestrator
commits each task's changes as that role, runs the tests itself, and prints a summary.

    python scripts/orchestration/simple_orchestrator.py --feature "..." --project-dir DIR
    python scripts/orchestration/simple_orchestrator.py --demo

For parallel agents, one branch per task and merging, use file_based_orchestrator.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

import click
from agent_team.cli import common_options, run_main
from agent_team.errors import EXIT_FAILED, EXIT_OK, RunStopped
from agent_team.orchestrator import BaseOrchestrator
from agent_team.records import set_feature_status
from agent_team.run_end import finish, stop
from agent_team.run_worktrees import (
    create_feature_branch,
    feature_dir,
    prepared,
    remove_empty_dirs,
    remove_own_worktree,
)
from agent_team.state_schema import utc_now
from agent_team.steps_sequential import execute_in_feature_worktree
from agent_team.task_record import TaskRecord


class SimpleOrchestrator(BaseOrchestrator):
    """Plan, then run tasks one by one on a single feature branch."""

    orchestrator_name = "simple"

    def run(self, feature: str) -> dict[str, Any]:
        """Run the feature end to end and return the summary."""
        self.close()
        with contextlib.ExitStack() as frame:
            run = self._start(feature, frame)
            try:
                tasks = self.manager_create_tasks(feature)
            except RunStopped:
                return stop(self.team, run)
            create_feature_branch(self.team, run)
            run.integration_worktree = prepared(self.team, run, self.git.worktrees.add(
                feature_dir(self.team, run) / "feature", run.feature_branch))
            finished = False
            try:
                set_feature_status(run, "in_progress")
                for task in tasks:
                    if self.agent_execute_task(task)["status"] == "stopped":
                        finished = True
                        return stop(self.team, run)
                set_feature_status(run, "integrating")
                try:
                    ok = bool(self.manager_integrate(tasks)["success"])
                except RunStopped:
                    finished = True
                    return stop(self.team, run)
                set_feature_status(run, "completed" if ok else "failed", completed_at=utc_now())
                finished = True
            finally:
                remove_own_worktree(self.team, run, run.integration_worktree, force=finished)
                remove_empty_dirs(feature_dir(self.team, run))
            return finish(self.team, run, "completed" if ok else "failed",
                          EXIT_OK if ok else EXIT_FAILED)
        raise AssertionError("unreachable")

    def agent_execute_task(self, task: TaskRecord) -> dict[str, Any]:
        """Run one task's agent in the feature worktree and commit what it changed."""
        worktree = self.current.integration_worktree
        assert worktree is not None
        return execute_in_feature_worktree(self.team, self.current, task, worktree,
                                           self.task_branch(task))


@click.command()
@common_options
def main(**options: Any) -> None:
    """Plan a feature with a manager agent and build it task by task on one branch."""
    run_main(options, SimpleOrchestrator, "simple-demo.json")


if __name__ == "__main__":
    main()
