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

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402
from agent_team.cli import common_options, run_main  # noqa: E402
from agent_team.errors import EXIT_FAILED, EXIT_OK, GitError, UsageLimitExceeded  # noqa: E402
from agent_team.git_workspace import CommitRefused  # noqa: E402
from agent_team.orchestrator import BaseOrchestrator, fail_message  # noqa: E402
from agent_team.state import utc_now  # noqa: E402


class SimpleOrchestrator(BaseOrchestrator):
    """Plan, then run tasks one by one on a single feature branch."""

    orchestrator_name = "simple"

    def run(self, feature: str) -> dict[str, Any]:
        """Run the feature end to end and return the summary."""
        with self.running(feature):
            try:
                tasks = self.manager_create_tasks(feature)
            except UsageLimitExceeded as exc:
                return self.stop_for_budget(exc)
            self.create_feature_branch()
            self.worktree = self.git.add_worktree(
                self.worktree_root / self.feature_branch.split("/", 1)[1] / "feature",
                self.feature_branch,
            )
            finished = False
            try:
                self.set_feature_status("in_progress")
                for task in tasks:
                    if self.agent_execute_task(task)["status"] == "stopped":
                        finished = True
                        return self.stop_for_budget(self.budget.tripped)
                self.set_feature_status("integrating")
                integration = self.manager_integrate(tasks)
                ok = integration["success"]
                self.set_feature_status("completed" if ok else "failed", completed_at=utc_now())
                finished = True
            finally:
                self.remove_own_worktree(self.worktree, force=finished)
                self.remove_empty_dirs(self.worktree.parent)
            return self.finish_run("completed" if ok else "failed",
                                   EXIT_OK if ok else EXIT_FAILED)

    def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """Run one task's agent in the feature worktree and commit what it changed."""
        task_id, role = task["task_id"], task["assigned_to"]
        state_tasks = {t["task_id"]: t for t in self.state.read()["tasks"]}
        unmet = [d for d in task["dependencies"] if state_tasks[d]["status"] != "completed"]
        if unmet:
            reason = f"dependency {', '.join(unmet)} did not complete"
            self.set_task(task_id, status="blocked", error=reason)
            self.log(f"{task_id} blocked: {reason}")
            return {"task_id": task_id, "status": "blocked", "error": reason}

        self.log(f"Executing {task_id} as {role}...")
        before = self.git.head_commit(self.feature_branch)
        self.set_task(task_id, status="in_progress", started_at=utc_now(), progress=0,
                      attempts=state_tasks[task_id]["attempts"] + 1,
                      branch=self.feature_branch, worktree=str(self.worktree))
        agent = self.agent_id(role, task_id)
        self.set_agent(agent, status="working", current_task=task_id,
                       branch=self.feature_branch, worktree=str(self.worktree), turn=0)
        try:
            result = self.run_task_agent(task, self.worktree)
            report = result.report
            error = None if report["status"] == "completed" else (
                "; ".join(report.get("blockers") or []) or report["summary"])
        except UsageLimitExceeded as exc:  # the run stops; keep what the agent did
            kept = self.keep_failed_work(task, before)
            self.set_task(task_id, status="pending", branch=kept,
                          error=f"stopped before finishing ({exc.limit})")
            self.set_agent(agent, status="stopped")
            return {"task_id": task_id, "status": "stopped", "error": str(exc)}
        except Exception as exc:  # the task fails; the run and the other tasks go on
            report, error = None, fail_message(exc)

        commit = kept = None
        if error is None:
            self.check_worktree(task_id)
            try:
                commit = self.commit_task(task, self.worktree, report["summary"])
            except CommitRefused as exc:  # the work is on its own branch, the worktree clean
                error, kept = str(exc), exc.branch
        if error is not None:
            kept = kept or self.keep_failed_work(task, before)
            self.set_task(task_id, status="failed", error=error, completed_at=utc_now(),
                          branch=kept)
            self.set_agent(agent, status="failed")
            self.log(f"{task_id} failed: {error}" + (f" (work kept on {kept})" if kept else ""))
            return {"task_id": task_id, "status": "failed", "error": error}

        files = self.git.changed_files(before, commit) if commit else []
        self.set_task(
            task_id, status="completed", progress=100, commit=commit, merged=True,
            completed_at=utc_now(),
            result={
                "summary": report["summary"],
                "completed_items": report.get("completed_items", []),
                "files_modified": files,
                "test_results": None,
                "blockers": report.get("blockers", []),
                "notes": report.get("notes", ""),
            },
        )
        self.set_agent(agent, status="done")
        self.log(f"{task_id} complete: {len(files)} file(s) changed in {(commit or '')[:10]}")
        return {"task_id": task_id, "status": "completed", "commit": commit, "files": files}

    def keep_failed_work(self, task: dict[str, Any], before: str) -> str | None:
        """Move a failed task's partial changes off the feature branch onto their own branch."""
        branch = self.task_branch(task)
        self.check_worktree(task["task_id"])
        try:
            commit = self.commit_task(task, self.worktree, "Partial work of an unfinished task.")
        except CommitRefused as exc:  # saved on its own branch; the worktree is clean again
            self.git.reset_worktree(self.worktree, before)
            return exc.branch
        if commit is None:
            return None
        self.git.create_branch(branch, commit)
        self.git.reset_worktree(self.worktree, before)
        return branch

    def task_branch(self, task: dict[str, Any]) -> str:
        return f"{self.feature_branch}-agents/{task['assigned_to']}/{task['task_id']}"

    def check_worktree(self, task_id: str) -> None:
        """Stop the run when an agent deleted the one worktree every task shares."""
        if not self.git.is_worktree(self.worktree):
            raise GitError(
                f"The feature worktree {self.worktree} was deleted while {task_id} ran (by a "
                f"command of its agent?). The run cannot go on: every task completed before is "
                f"committed on {self.feature_branch}."
            )

    def manager_integrate(self, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the tests on the feature branch, then ask the manager for the summary."""
        results = self.run_project_tests(self.worktree, ref=self.feature_branch)
        state = self.state.read()
        lines = [f"- {t['task_id']} ({t['assigned_to']}): {t['status']}"
                 + (f", files: {', '.join(t['result']['files_modified'])}" if t.get("result")
                    else f", error: {t.get('error')}")
                 for t in state["tasks"]]
        prompt = (
            f"Feature: {state['current_feature']['title']}\n\nTask results:\n"
            + "\n".join(lines)
            + f"\n\nTest run by the orchestrator: {results.describe() if results else 'none'}"
            + "\n\nWrite a short integration summary for the reviewer: what was built, what "
            "is missing or failed, and what to check before merging."
        )
        summary = self.ask_manager("integration", prompt)
        all_done = all(t["status"] == "completed" for t in state["tasks"])
        success = all_done and results is not None and results.success

        def apply(state: dict[str, Any]) -> None:
            state["integration"].update(
                status="completed" if success else "failed",
                test_results=results.to_dict() if results else None,
                summary=summary.strip(), completed_at=utc_now(),
            )

        self.state.update(apply)
        return {"success": success, "summary": summary, "tests": results}


@click.command()
@common_options
def main(**options: Any) -> None:
    """Plan a feature with a manager agent and build it task by task on one branch."""
    run_main(options, SimpleOrchestrator, "simple-demo.json")


if __name__ == "__main__":
    main()
