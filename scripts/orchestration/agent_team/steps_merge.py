"""Step three: merge a finished task branch into the feature branch, one merge at a time.

A conflict goes to the manager, who resolves it with the file tools (and `keep_side` for binary
files); when that fails the merge is aborted and the branch kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .agent_calls import RunModel, agent_entry
from .agent_loop import run_agent
from .errors import AgentTeamError, GitError, ToolError
from .git_merge import MergeResult
from .prompts import system_for
from .records import set_task
from .roles import MANAGER
from .run_context import RunContext
from .state_schema import utc_now
from .steps_agent import agent_hooks
from .steps_task import agent_email, fail_message
from .task_record import TaskRecord
from .team import Team
from .toolbox import Tool, define_tool
from .tools import Workspace, build_toolbox

#: resolve(task, branch, merge) -> merge entry; the facades pass their overridable seam.
Resolver = Callable[[TaskRecord, str, MergeResult], dict[str, Any]]


def merge_task(team: Team, run: RunContext, task: TaskRecord, branch: str,
               resolve: Resolver | None = None) -> dict[str, Any]:
    """Merge `branch` into the feature branch in the integration worktree."""
    worktree = run.integration_worktree
    if worktree is None:
        raise GitError("No integration worktree is open for this run.")
    title = f"Merge {task['task_id']} ({task['assigned_to']}): {task['description']}"
    message = (title if len(title) <= 72 else title[:69] + "...") + f"\n\nBranch: {branch}\n"
    with run.merge_lock:
        try:
            result = team.git.merges.merge(worktree, branch, message, author_name=MANAGER,
                                    author_email=agent_email(MANAGER))
        except GitError as exc:
            return record_merge(run, task, branch, "failed", None, [], str(exc))
        if result.status in ("merged", "up_to_date"):
            return record_merge(run, task, branch, "merged", result.commit, [], "")
        run.log(f"Merge conflict for {task['task_id']} in {', '.join(result.conflicts)}; "
                "asking the manager to resolve it.")
        if resolve is None:
            return resolve_conflict(team, run, task, branch, result)
        return resolve(task, branch, result)


def conflict_prompt(team: Team, run: RunContext, task: TaskRecord, branch: str,
                    merge: MergeResult, worktree: Path) -> str:
    sides = []
    for path in merge.conflicts:
        side = team.git.merges.conflict_sides(worktree, path)
        if side.get("binary"):
            sides.append(f"### {path}\n(binary file: settle it with keep_side, choosing "
                         "'ours' or 'theirs', or report the conflict as blocked)")
            continue
        sides.append(
            f"### {path}\n--- feature branch (ours) ---\n{side.get('ours') or '(absent)'}\n"
            f"--- {branch} (theirs) ---\n{side.get('theirs') or '(absent)'}\n"
            f"--- common base ---\n{side.get('base') or '(absent)'}"
        )
    return (
        f"Merging {branch} (task {task['task_id']} by {task['assigned_to']}: "
        f"{task['description']}) into {run.feature_branch} conflicted.\n\n"
        "Your workspace is the feature branch with the merge in progress; the conflicted "
        "files contain conflict markers. Write each file so that it keeps the intent of "
        "both sides, with no conflict markers left, then call finish_task with status "
        "completed. To take one side of a file whole, call keep_side. If the two sides "
        "cannot be reconciled, call finish_task with status blocked and explain why.\n\n"
        + "\n\n".join(sides)
    )


def resolve_conflict(team: Team, run: RunContext, task: TaskRecord, branch: str,
                     merge: MergeResult) -> dict[str, Any]:
    """Let the manager resolve a conflict with the file tools, or abort and keep the branch."""
    worktree = run.integration_worktree
    assert worktree is not None
    prompt = conflict_prompt(team, run, task, branch, merge, worktree)
    toolbox = build_toolbox(
        Workspace(worktree),
        command_timeout=team.settings.coordination.command_timeout_seconds,
        extra_tools=[keep_side_tool(team, worktree, merge.conflicts)],
        sandbox=team.sandbox,
    )
    message = (f"Merge {task['task_id']} ({task['assigned_to']}), conflicts resolved by "
               f"manager\n\nBranch: {branch}\nConflicts: {', '.join(merge.conflicts)}\n")
    try:
        report = run_agent(
            RunModel(team, run, MANAGER, "merge", task["task_id"]),
            system_for(team, MANAGER), prompt, toolbox,
            max_turns=team.settings.coordination.max_iterations,
            hooks=agent_hooks(team, run, MANAGER, task["task_id"]),
        ).report
        if report["status"] != "completed":
            raise AgentTeamError(f"the manager could not resolve it: {report['summary']}")
        commit = team.git.merges.conclude(worktree, message, author_name=MANAGER,
                                         author_email=agent_email(MANAGER))
    except Exception as exc:  # resolution failed: undo the merge, keep the branch
        team.git.merges.abort(worktree)
        return record_merge(run, task, branch, "conflict_unresolved", None, merge.conflicts,
                            fail_message(exc))
    return record_merge(run, task, branch, "conflict_resolved", commit, merge.conflicts,
                        report["summary"])


def keep_side_tool(team: Team, worktree: Path, conflicts: list[str]) -> Tool:
    """The manager's way to settle a conflicted file, binary ones included: one side whole."""

    def keep_side(path: str, side: str) -> str:
        if path not in conflicts:
            raise ToolError(f"{path} is not a conflicted file; those are: "
                            f"{', '.join(conflicts)}.")
        try:
            team.git.merges.take_side(worktree, path, "ours" if side == "ours" else "theirs")
        except GitError as exc:
            raise ToolError(f"Could not keep the {side} side of {path}: {exc}") from None
        where = "the feature branch" if side == "ours" else "the task branch"
        return f"{path}: kept the {side} version ({where}) whole."

    return define_tool(
        "keep_side",
        "Settle one conflicted file by keeping one side whole: 'ours' is the feature "
        "branch, 'theirs' the task branch being merged. The way to settle a binary file.",
        {"path": {"type": "string", "minLength": 1},
         "side": {"type": "string", "enum": ["ours", "theirs"]}},
        keep_side,
        required=["path", "side"],
    )


def record_merge(run: RunContext, task: TaskRecord, branch: str, status: str,
                 commit: str | None, conflicts: list[str], message: str) -> dict[str, Any]:
    entry = {
        "task_id": task["task_id"], "branch": branch, "into": run.feature_branch,
        "status": status, "commit": commit, "conflicts": list(conflicts),
        "message": message, "timestamp": utc_now(),
    }
    run.store.record({"op": "merge", "entry": entry})
    run.events.emit("merge", task_id=task["task_id"], status=status,
                    conflicts=list(conflicts), commit=commit)
    return entry


def conclude_task(run: RunContext, task: TaskRecord, merge: Mapping[str, Any],
                  files: list[str]) -> dict[str, Any]:
    """Mark the task completed when its merge went in, failed (branch kept) when not."""
    task_id = task["task_id"]
    agent = agent_entry(task["assigned_to"], task_id)
    if merge["status"] in ("merged", "conflict_resolved"):
        set_task(run, task_id, status="completed", progress=100, merged=True,
                 merge_commit=merge["commit"], completed_at=utc_now(),
                 agent=(agent, {"status": "done"}))
        run.log(f"{task_id} complete and merged ({merge['status']}): {len(files)} file(s)")
        return {"task_id": task_id, "status": "completed", "commit": task.get("commit")}
    conflicts = f" (conflicts in {', '.join(merge['conflicts'])})" if merge["conflicts"] else ""
    error = f"merge into {run.feature_branch} failed{conflicts}: {merge['message']}"
    set_task(run, task_id, status="failed", merged=False, error=error, completed_at=utc_now(),
             agent=(agent, {"status": "failed"}))
    run.log(f"{task_id} failed: {error} (branch {merge['branch']} kept)")
    return {"task_id": task_id, "status": "failed", "error": error}
