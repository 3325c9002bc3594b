#!/usr/bin/env python3
"""The file-based orchestrator: parallel agents in their own worktrees, merged as they finish.

The manager plans tasks with dependencies. A task starts as soon as every task it depends on
is completed and merged, up to --max-workers at once, in a worktree on its own branch cut from
the feature branch at that moment (so it sees its dependencies' work). The orchestrator commits
what the agent changed, merges the branch into the feature branch (a conflict goes to the
manager, who resolves it with tools), and after the last task runs the integration pass: the
manager reviews the merged branch, the orchestrator runs the tests, the manager summarises.
Merging and the integration pass live in agent_team/integration.py.

    python scripts/orchestration/file_based_orchestrator.py --feature "..." --project-dir DIR
    python scripts/orchestration/file_based_orchestrator.py --demo

Everything the team does is visible live in .ai-agents/state/team-communication.json.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import click  # noqa: E402
from agent_team.cli import common_options, max_workers_option, run_main  # noqa: E402
from agent_team.errors import (  # noqa: E402
    EXIT_FAILED,
    EXIT_OK,
    GitError,
    StateError,
    UsageLimitExceeded,
)
from agent_team.git_workspace import CommitRefused  # noqa: E402
from agent_team.integration import INTEGRATION_SCHEMA, IntegrationMixin  # noqa: E402
from agent_team.orchestrator import BaseOrchestrator, fail_message  # noqa: E402
from agent_team.plan import PRIORITY_RANK  # noqa: E402
from agent_team.scheduler import Job, run_graph  # noqa: E402
from agent_team.state import utc_now  # noqa: E402

__all__ = ["INTEGRATION_SCHEMA", "FileBasedOrchestrator", "main"]


class FileBasedOrchestrator(IntegrationMixin, BaseOrchestrator):
    """Dependency-ordered parallel execution with per-task worktrees and merge-as-you-go.

    Merging, conflict resolution and the integration pass (`merge_task`, `resolve_conflict`,
    `manager_integrate`, `maybe_merge_into_base`) come from `IntegrationMixin`.
    """

    orchestrator_name = "file-based"

    def __init__(self, project_dir: str | Path, *, max_workers: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(project_dir, **kwargs)
        coordination = self.config.coordination
        if not coordination["parallel_execution"]:
            max_workers = 1
        self.max_workers = int(max_workers or coordination["max_workers"])
        self.integration_worktree: Path | None = None
        self._merge_lock = threading.Lock()
        self._fatal: StateError | None = None

    # -- the run ---------------------------------------------------------------------------

    def run(self, feature: str) -> dict[str, Any]:
        """Plan, execute in parallel, integrate; returns the summary (see report.py)."""
        return self.run_parallel(feature, self.max_workers)

    def run_parallel(self, feature: str, max_workers: int = 3) -> dict[str, Any]:
        with self.running(feature):
            self.report_stale_worktrees()
            try:
                tasks = self.manager_create_tasks(feature)
            except UsageLimitExceeded as exc:
                return self.stop_for_budget(exc)
            self.create_feature_branch()
            return self._execute_and_integrate(tasks, max_workers)

    def resume(self, max_workers: int | None = None) -> dict[str, Any]:
        """Continue the feature recorded in the state file after a crash or a stop.

        Completed and merged tasks are skipped; a task whose agent finished but whose merge
        did not happen is merged; every other task restarts from its branch's last commit.
        """
        with self.resuming() as state:
            self.git.prune_worktrees()
            self.clear_stale_locks()
            if not self.git.branch_exists(self.feature_branch):  # stopped while planning
                feature = state["current_feature"]
                try:
                    tasks = state["tasks"] or self.manager_create_tasks(
                        feature.get("description") or feature["title"])
                except UsageLimitExceeded as exc:
                    return self.stop_for_budget(exc)
                self.create_feature_branch()
                return self._execute_and_integrate(tasks, max_workers or self.max_workers)
            done = []
            for task in state["tasks"]:
                branch = self.task_branch(task)
                if task["status"] == "completed" and task.get("merged", False):
                    done.append(task["task_id"])
                elif (task["status"] == "in_progress" and task.get("result")
                      and task.get("commit") and self.git.branch_exists(branch)
                      and self.git.is_merged(branch, self.feature_branch)):
                    done.append(task["task_id"])  # merged just before the crash
                    merge = self.git.merge_commit_of(branch, self.feature_branch)
                    self._record_merge(task, branch, "merged", merge, [],
                                       "merged before the run was interrupted")
                    self.set_task(task["task_id"], status="completed", merged=True,
                                  merge_commit=merge, progress=100)
                elif not self._agent_already_finished(task):
                    self.set_task(task["task_id"], status="pending", error=None)
            self.log(f"{len(done)} of {len(state['tasks'])} tasks already done.")
            return self._execute_and_integrate(
                state["tasks"], max_workers or self.max_workers, completed=done
            )

    def clear_stale_locks(self) -> None:
        """Remove index locks a killed run's git left in this feature's worktrees."""
        root = self.feature_dir.resolve()
        for info in self.git.list_worktrees()[1:]:
            if root in info.path.parents:
                for lock in self.git.clear_stale_locks(info.path):
                    self.log(f"Removed {lock}, left by a git command of the interrupted run.")

    def _execute_and_integrate(
        self, tasks: list[dict[str, Any]], max_workers: int, completed: list[str] | None = None
    ) -> dict[str, Any]:
        self.integration_worktree = self._open_integration_worktree()
        self._fatal = None
        finished = False
        try:
            self.set_feature_status("in_progress")
            self.log(f"Running {len(tasks) - len(completed or [])} tasks with up to "
                     f"{max_workers} agents at once.")
            schedule = run_graph(
                [Job(t["task_id"], tuple(t["dependencies"]),
                     PRIORITY_RANK[t.get("priority", "medium")]) for t in tasks],
                self._run_job,
                max_workers=max_workers,
                on_event=self._on_schedule_event,
                should_stop=self.should_stop,
                completed=completed or (),
            )
            if self._fatal is not None:
                raise self._fatal
            self._record_schedule(schedule)
            if self.budget.tripped is not None:
                finished = True
                return self.stop_for_budget(self.budget.tripped)
            self.set_feature_status("integrating")
            integration = self.manager_integrate(tasks)
            ok = integration["success"]
            self.set_feature_status("completed" if ok else "failed", completed_at=utc_now())
            finished = True
        except UsageLimitExceeded as exc:  # during the integration pass
            finished = True
            return self.stop_for_budget(exc)
        finally:
            self.remove_own_worktree(self.integration_worktree, force=finished)
            self.integration_worktree = None
            self.remove_empty_dirs(self.feature_dir)
        return self.finish_run("completed" if ok else "failed", EXIT_OK if ok else EXIT_FAILED)

    def _open_integration_worktree(self) -> Path:
        """The feature branch's checkout for merges; an interrupted run's one is reused."""
        path = self.feature_dir / "integration"
        for info in self.git.list_worktrees():
            if info.path == path.resolve() and info.branch == self.feature_branch:
                if self.git.merge_in_progress(path):
                    self.git.abort_merge(path)
                self.git.reset_worktree(path, "HEAD")
                return path
        return self.git.add_worktree(path, self.feature_branch)

    def _run_job(self, job: Job) -> bool:
        """One task of the schedule; a state file that cannot be used stops the whole run."""
        if self._fatal is not None:
            return False
        try:
            return self.agent_execute_task(self._task(job.id))["status"] == "completed"
        except StateError as exc:
            self._fatal = self._fatal or exc
            raise

    def should_stop(self) -> bool:
        """Checked before each task starts; a reached budget or a state error ends the run."""
        return self.budget.tripped is not None or self._fatal is not None

    @property
    def feature_dir(self) -> Path:
        return self.worktree_root / self.feature_branch.split("/", 1)[1]

    def task_branch(self, task: dict[str, Any]) -> str:
        """`feature/<slug>-agents/<role>/<task>`: git cannot nest refs under `feature/<slug>`."""
        return f"{self.feature_branch}-agents/{task['assigned_to']}/{task['task_id']}"

    def _task(self, task_id: str) -> dict[str, Any]:
        return next(t for t in self.state.read()["tasks"] if t["task_id"] == task_id)

    def _on_schedule_event(self, event: str, task_id: str, detail: str) -> None:
        if event not in ("blocked", "skipped") or self._fatal is not None:
            return
        if self.budget.tripped is not None:  # not started because the run stopped
            self.set_task(task_id, status="pending", error="not started: the run stopped")
            return
        self.set_task(task_id, status=event, error=detail)
        self.log(f"{task_id} {event}: {detail}")

    def _record_schedule(self, schedule: Any) -> None:
        """Record errors that escaped a task (e.g. a worktree that could not be created)."""
        for task_id, error in schedule.errors.items():
            if self._task(task_id)["status"] == "in_progress":
                self.set_task(task_id, status="failed", error=error, completed_at=utc_now())

    # -- worktrees -------------------------------------------------------------------------

    def setup_worktrees(self, tasks: list[dict[str, Any]]) -> dict[str, Path]:
        """Create a worktree per task, branched from the feature branch as it is now."""
        worktrees = {}
        registered = {info.path: info for info in self.git.list_worktrees()}
        for task in tasks:
            path = self.feature_dir / "tasks" / task["task_id"]
            branch = self.task_branch(task)
            info = registered.get(path.resolve())
            if info is not None and info.branch == branch:  # left by an interrupted run
                try:
                    self.commit_task(task, path, "Work recovered from an interrupted run.")
                except CommitRefused as exc:
                    self.log(f"{task['task_id']}: {exc}")
                worktrees[task["task_id"]] = path
                continue
            if info is None and path.exists():  # no longer a worktree: keep its files
                aside = path.with_name(f"{path.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}")
                path.rename(aside)
                self.log(f"{path} is not a git worktree any more (deleted during an earlier "
                         f"run?); its files were moved to {aside}.")
            worktrees[task["task_id"]] = self.git.add_worktree(
                path, branch, start_point=self.feature_branch
            )
        return worktrees

    def report_stale_worktrees(self) -> None:
        """Tell the user about worktrees an earlier, crashed run left behind; delete nothing."""
        for line in self.git.prune_worktrees():
            self.log(f"Pruned worktree record: {line}")
        if not self.worktree_root.exists():
            return
        for info in self.git.stale_worktrees(self.worktree_root):
            state = []
            if info.dirty:
                state.append("uncommitted changes")
            if info.unmerged:
                state.append(f"{info.unmerged} unmerged commit(s)")
            message = (
                f"Stale worktree from an earlier run: {info.path} on {info.branch or info.head}"
                f" ({', '.join(state) or 'clean'}). Kept; remove it with "
                f"`git worktree remove {info.path}` once you no longer need it."
            )
            self.log(message)
            self._note("orchestrator", None, "stale_worktree", message)

    def _remove_worktree(self, path: Path) -> None:
        try:
            self.git.remove_worktree(path)
        except GitError as exc:  # dirty or locked: keep it, say so
            self.log(f"Kept worktree {path}: {exc}")

    # -- one task --------------------------------------------------------------------------

    def agent_execute_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """The whole life of one task: worktree, agent, commit, merge, cleanup."""
        if self._agent_already_finished(task):
            self.log(f"{task['task_id']}: agent work already committed; merging it.")
            branch = self.task_branch(task)
            return self._merge_and_record(task, branch, task["result"]["files_modified"])
        worktree = self.setup_worktrees([task])[task["task_id"]]
        return self.execute_task_in_worktree(task, worktree)

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        task_id, role = task["task_id"], task["assigned_to"]
        branch = self.task_branch(task)
        agent = self.agent_id(role, task_id)
        start = self.git.merge_base(branch, self.feature_branch)
        self.log(f"Executing {task_id} as {role} on {branch}")
        self.set_task(task_id, status="in_progress", started_at=utc_now(), branch=branch,
                      worktree=str(worktree), error=None)
        self.set_agent(agent, status="working", current_task=task_id, branch=branch,
                       worktree=str(worktree), turn=0)
        try:
            report, error = self._run_attempts(task, worktree)
        except UsageLimitExceeded as exc:
            commit, problem = self._save_work(task, worktree,
                                              f"Partial work; the run stopped: {exc}")
            self._remove_worktree(worktree)
            self.set_task(task_id, status="pending", commit=commit,
                          error=problem or f"stopped before finishing ({exc.limit}); work so "
                                           f"far is on {branch}")
            self.set_agent(agent, status="stopped")
            return {"task_id": task_id, "status": "stopped", "error": str(exc)}
        except StateError:  # the run stops; git keeps the work, the state cannot
            commit, problem = self._save_work(
                task, worktree, "Partial work; the run stopped: the team state file could not "
                                "be used.")
            self._remove_worktree(worktree)
            self.log(f"{task_id}: {problem or f'work so far is on {branch}'}")
            raise

        summary = report["summary"] if report else f"Partial work; the task failed: {error}"
        commit, problem = self._save_work(task, worktree, summary)
        if problem is not None:
            error = f"{error}; {problem}" if error else problem
        files = self.git.changed_files(start, branch)
        result = {
            "summary": summary,
            "completed_items": (report or {}).get("completed_items", []),
            "files_modified": files,
            "test_results": None,
            "blockers": (report or {}).get("blockers", []),
            "notes": (report or {}).get("notes", ""),
        }
        self._remove_worktree(worktree)
        if error is not None:
            self.set_task(task_id, status="failed", error=error, commit=commit, result=result,
                          completed_at=utc_now())
            self.set_agent(agent, status="failed")
            self.log(f"{task_id} failed: {error}" + (f" (work kept on {branch})" if commit else ""))
            return {"task_id": task_id, "status": "failed", "error": error}
        self.set_task(task_id, progress=90, commit=self.git.head_commit(branch), result=result)
        return self._merge_and_record(task, branch, files)

    def _run_attempts(
        self, task: dict[str, Any], worktree: Path
    ) -> tuple[dict[str, Any] | None, str | None]:
        """Run the agent up to max_task_attempts times; each retry sees the last error."""
        attempts = int(self.config.coordination["max_task_attempts"])
        current = dict(task)
        used = int(self._task(task["task_id"]).get("attempts", 0))
        report: dict[str, Any] | None = None
        error: str | None = None
        for attempt in range(1, attempts + 1):
            used += 1
            self.set_task(task["task_id"], attempts=used)
            try:
                report = self.run_task_agent(current, worktree).report
                error = None if report["status"] == "completed" else (
                    "; ".join(report.get("blockers") or []) or report["summary"])
            except (UsageLimitExceeded, StateError):
                raise
            except Exception as exc:  # this task fails; independent tasks go on
                report, error = None, fail_message(exc)
            if error is None or attempt == attempts:
                break
            self.log(f"{task['task_id']} attempt {attempt} failed ({error}); retrying.")
            current["last_error"] = error
        return report, error

    def _save_work(
        self, task: dict[str, Any], worktree: Path, summary: str
    ) -> tuple[str | None, str | None]:
        """Commit what the agent left: (new commit or None, why the work is not on its branch)."""
        if not self.git.is_worktree(worktree):
            return None, (
                f"the task's worktree {worktree} was deleted while the agent worked (by a "
                f"command it ran?); what it committed before is kept on {self.task_branch(task)}"
            )
        try:
            return self.commit_task(task, worktree, summary), None
        except CommitRefused as exc:
            return None, str(exc)

    def _agent_already_finished(self, task: dict[str, Any]) -> bool:
        """On resume: the agent finished and its commit is on the branch, only the merge is due."""
        branch = self.task_branch(task)
        return bool(
            task.get("status") == "in_progress" and task.get("result") and task.get("commit")
            and self.git.branch_exists(branch)
            and self.git.head_commit(branch) == task["commit"]
        )

    def _merge_and_record(
        self, task: dict[str, Any], branch: str, files: list[str]
    ) -> dict[str, Any]:
        task_id = task["task_id"]
        agent = self.agent_id(task["assigned_to"], task_id)
        merge = self.merge_task(task, branch)
        if merge["status"] in ("merged", "conflict_resolved"):
            self.set_task(task_id, status="completed", progress=100, merged=True,
                          merge_commit=merge["commit"], completed_at=utc_now())
            self.set_agent(agent, status="done")
            self.log(f"{task_id} complete and merged ({merge['status']}): {len(files)} file(s)")
            return {"task_id": task_id, "status": "completed", "commit": task.get("commit")}
        conflicts = f" (conflicts in {', '.join(merge['conflicts'])})" if merge["conflicts"] else ""
        error = f"merge into {self.feature_branch} failed{conflicts}: {merge['message']}"
        self.set_task(task_id, status="failed", merged=False, error=error,
                      completed_at=utc_now())
        self.set_agent(agent, status="failed")
        self.log(f"{task_id} failed: {error} (branch {branch} kept)")
        return {"task_id": task_id, "status": "failed", "error": error}


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
