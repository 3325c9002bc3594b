"""The sequential variant of the task step: every task on the feature branch, in one worktree.

Used by the simple orchestrator. A failed task's partial changes move off the feature branch
onto a branch of their own, so the next task starts from completed work only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .agent_calls import agent_entry
from .errors import CommitRefused, GitError, RunStopped
from .records import set_task, task_record
from .run_context import RunContext
from .state_schema import utc_now
from .steps_agent import run_task_agent
from .steps_task import commit_task, fail_message, result_record
from .task_record import TaskRecord
from .team import Team


def check_worktree(team: Team, worktree: Path, task_id: str, feature_branch: str) -> None:
    """Stop the run when an agent deleted the one worktree every task shares."""
    if not team.git.is_worktree(worktree):
        raise GitError(
            f"The feature worktree {worktree} was deleted while {task_id} ran (by a command of "
            f"its agent?). The run cannot go on: every task completed before is committed on "
            f"{feature_branch}.")


def keep_failed_work(team: Team, run: RunContext, task: TaskRecord, worktree: Path,
                     before: str, branch: str) -> str | None:
    """Move a failed task's partial changes off the feature branch onto `branch`."""
    check_worktree(team, worktree, task["task_id"], run.feature_branch)
    try:
        commit = commit_task(team, run, task, worktree, "Partial work of an unfinished task.",
                             branch)
    except CommitRefused as exc:  # saved on its own branch; the worktree is clean again
        team.git.reset_worktree(worktree, before)
        return exc.branch
    if commit is None:
        return None
    team.git.create_branch(branch, commit)
    team.git.reset_worktree(worktree, before)
    return branch


def execute_in_feature_worktree(team: Team, run: RunContext, task: TaskRecord,
                                worktree: Path, branch: str) -> dict[str, Any]:
    """Run one task's agent in the feature worktree and commit what it changed."""
    task_id, role = task["task_id"], task["assigned_to"]
    tasks = {t["task_id"]: t for t in run.store.read()["tasks"]}
    unmet = [d for d in task["dependencies"] if tasks[d]["status"] != "completed"]
    if unmet:
        reason = f"dependency {', '.join(unmet)} did not complete"
        set_task(run, task_id, status="blocked", error=reason)
        run.log(f"{task_id} blocked: {reason}")
        return {"task_id": task_id, "status": "blocked", "error": reason}

    run.log(f"Executing {task_id} as {role}...")
    before = team.git.head_commit(run.feature_branch)
    agent = agent_entry(role, task_id)
    set_task(run, task_id, status="in_progress", started_at=utc_now(), progress=0,
             attempts=task_record(run, task_id)["attempts"] + 1, branch=run.feature_branch,
             worktree=str(worktree),
             agent=(agent, {"status": "working", "current_task": task_id,
                            "branch": run.feature_branch, "worktree": str(worktree),
                            "turn": 0}))
    report: dict[str, Any] | None = None
    try:
        report = run_task_agent(team, run, task, worktree).report
        error = None if report["status"] == "completed" else (
            "; ".join(report.get("blockers") or []) or report["summary"])
    except RunStopped as exc:  # the run stops; keep what the agent did
        kept = keep_failed_work(team, run, task, worktree, before, branch)
        set_task(run, task_id, status="pending", branch=kept,
                 error=f"stopped before finishing ({exc})", agent=(agent, {"status": "stopped"}))
        return {"task_id": task_id, "status": "stopped", "error": str(exc)}
    except Exception as exc:  # the task fails; the run and the other tasks go on
        error = fail_message(exc)

    commit = kept = None
    if error is None and report is not None:
        check_worktree(team, worktree, task_id, run.feature_branch)
        try:
            commit = commit_task(team, run, task, worktree, report["summary"], branch)
        except CommitRefused as exc:  # the work is on its own branch, the worktree clean
            error, kept = str(exc), exc.branch
    if error is not None or report is None:
        kept = kept or keep_failed_work(team, run, task, worktree, before, branch)
        set_task(run, task_id, status="failed", error=error, completed_at=utc_now(), branch=kept,
                 agent=(agent, {"status": "failed"}))
        run.log(f"{task_id} failed: {error}" + (f" (work kept on {kept})" if kept else ""))
        return {"task_id": task_id, "status": "failed", "error": error}

    files = team.git.history.changed_files(before, commit) if commit else []
    set_task(run, task_id, status="completed", progress=100, commit=commit, merged=True,
             completed_at=utc_now(), result=result_record(report, report["summary"], files),
             agent=(agent, {"status": "done"}))
    run.log(f"{task_id} complete: {len(files)} file(s) changed in {(commit or '')[:10]}")
    return {"task_id": task_id, "status": "completed", "commit": commit, "files": files}
