"""A job's task results in the API's output format, built from the state file and git.

Files, diffs and commits come from git; usage and timings from the engine's state file;
which lane (scheduler thread) ran a task from the job's event listener.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from agent_team.errors import GitError
from agent_team.git_workspace import GitWorkspace

from .engine import JobContext
from .records import JobRegistry

TASK_STATUS = {
    "completed": "success",
    "failed": "failed",
    "blocked": "failed",
    "skipped": "failed",
    "in_progress": "running",
    "pending": "pending",
}


def seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def task_start_point(git: GitWorkspace, task: Mapping[str, Any], feature: str) -> str | None:
    """The commit the task's branch was cut from (before its own commits)."""
    commit = task.get("commit")
    if not commit:
        return None
    try:
        merge = task.get("merge_commit")
        other = f"{merge}^1" if merge and merge != commit else feature
        if merge == commit:  # fast-forward: the task's commits are first-parent history
            other = f"{commit}^"
        return git.merge_base(commit, other)
    except GitError:
        return None


def created_files(git: GitWorkspace, start: str | None, files: list[str]) -> list[str]:
    """Of the files a task changed, those that did not exist where its branch started."""
    if start is None:
        return list(files)
    existing = set(git.tracked_files(start))
    return [f for f in files if f not in existing]


def task_diff(git: GitWorkspace, start: str | None, commit: str | None) -> str:
    if not start or not commit:
        return ""
    try:
        return str(git.repo.git.diff(start, commit))
    except Exception as exc:  # noqa: BLE001 - a diff that cannot be made is reported, not fatal
        return f"(diff unavailable: {exc})"


def task_results(
    state: Mapping[str, Any], ctx: JobContext, registry: JobRegistry, git: GitWorkspace,
    feature_branch: str, *, cancelled: bool = False, live: bool = False,
) -> list[dict[str, Any]]:
    """Every task of the job, children's results nested under the task that delegated."""
    out = []
    for index, task in enumerate(state.get("tasks", []), start=1):
        task_id = str(task["task_id"])
        label = ctx.labels.get(task_id) or f"{ctx.record.worker_prefix}{index}"
        ctx.labels.setdefault(task_id, label)
        status = TASK_STATUS.get(str(task.get("status")), "failed")
        if cancelled and status in ("pending", "running"):
            status = "cancelled"
        result = task.get("result") or {}
        files = list(result.get("files_modified") or [])
        start = None if live else task_start_point(git, task, feature_branch)
        usage = task.get("usage") or {}
        tokens = sum(int(usage.get(k) or 0) for k in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"))
        started, finished = seconds(task.get("started_at")), seconds(task.get("completed_at"))
        entry: dict[str, Any] = {
            "worker_id": f"worker_{label}",
            "task_id": task_id,
            "description": str(task.get("description", "")),
            "role": str(task.get("assigned_to", "")),
            "status": status,
            "output": str(result.get("summary") or task.get("error") or ""),
            "files_created": created_files(git, start, files),
            "files_modified": files,
            "error": task.get("error"),
            "child_job_id": None,
            "child_results": None,
            "started_at": task.get("started_at"),
            "finished_at": task.get("completed_at"),
            "duration_s": round(finished - started, 3) if started and finished else None,
            "tokens": tokens,
            "cost_usd": usage.get("cost_usd", 0.0) if usage else 0.0,
            "branch": task.get("branch"),
            "commit": task.get("commit"),
            "dependencies": list(task.get("dependencies") or []),
            "lane": ctx.lanes.get(task_id),
            "start_point": start,
        }
        child_id = ctx.delegations.get(task_id)
        if child_id:
            child = registry.get(child_id)
            entry["child_job_id"] = child_id
            entry["child_results"] = child.tasks if child else []
            if status == "success" and child is not None and child.status == "completed":
                entry["status"] = "recursive_success"
        out.append(entry)
    return out


def public_task(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A task entry without the internal fields, children included."""
    hidden = ("dependencies", "lane", "start_point")
    data = {k: v for k, v in entry.items() if k not in hidden}
    if data.get("child_results"):
        data["child_results"] = [public_task(c) for c in data["child_results"]]
    return data
