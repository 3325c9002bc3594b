"""A job's task results in the API's output format, read from the job store.

Each store task carries the planned task's id and worker label in its metadata and, once it
ended, its result JSON (summary, files from git, usage). A task that delegated has a child job
whose `parent_task_id` is that task: its results are nested under it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent_team.errors import GitError
from agent_team.git_workspace import GitWorkspace

from .records import iso

if TYPE_CHECKING:
    from .records import ServiceJob, ServiceJobs

#: The store's task status -> the API's.
TASK_STATUS = {
    "completed": "success",
    "failed": "failed",
    "blocked": "failed",
    "cancelled": "cancelled",
    "running": "running",
    "pending": "pending",
}
HIDDEN = ("dependencies", "lane", "start_point")


def seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def created_files(git: GitWorkspace, start: str | None, files: list[str]) -> list[str]:
    """Of the files a task changed, those that did not exist where its branch started."""
    if start is None:
        return list(files)
    existing = set(git.history.tracked_files(start))
    return [f for f in files if f not in existing]


def task_diff(git: GitWorkspace, start: str | None, commit: str | None) -> str:
    if not start or not commit:
        return ""
    try:
        return str(git.repo.git.diff(start, commit))
    except Exception as exc:  # noqa: BLE001 - a diff that cannot be made is reported, not fatal
        return f"(diff unavailable: {exc})"


def safe_created(git: GitWorkspace, start: str | None, files: list[str]) -> list[str]:
    try:
        return created_files(git, start, files)
    except GitError:
        return list(files)


def task_entries(jobs: ServiceJobs, job: ServiceJob, *, public: bool) -> list[dict[str, Any]]:
    """Every task of the job in plan order, children's results nested under the task that
    delegated to them."""
    children = {row.parent_task_id: row.id for row in jobs.child_rows(job.job_id)}
    out = []
    for task in jobs.tasks(job.job_id):
        meta = task.metadata or {}
        label = str(meta.get("label") or task.id)
        result = task.result_data() or {}
        status = TASK_STATUS.get(task.status, "failed")
        files = list(result.get("files_modified") or [])
        started, finished = task.started_at, task.finished_at
        entry: dict[str, Any] = {
            "worker_id": f"worker_{label}",
            "task_id": str(meta.get("task_id") or task.id),
            "description": str(meta.get("description") or task.prompt),
            "role": task.role,
            "status": status,
            "output": str(result.get("summary") or task.error or ""),
            "files_created": list(result.get("files_created") or []),
            "files_modified": files,
            "error": task.error,
            "child_job_id": None,
            "child_results": None,
            "started_at": iso(started),
            "finished_at": iso(finished) if task.status not in ("running", "pending") else None,
            "duration_s": task.duration_s,
            "tokens": int(result.get("tokens") or 0),
            "cost_usd": result.get("cost_usd", 0.0),
            "branch": task.branch,
            "commit": task.commit,
            "dependencies": list(meta.get("dependencies") or []),
            "lane": task.worker_id,
            "start_point": result.get("start_point"),
        }
        child_id = children.get(task.id)
        if child_id:
            child = jobs.get(child_id)
            entry["child_job_id"] = child_id
            entry["child_results"] = child.tasks if child else []
            if status == "success" and child is not None and child.status == "completed":
                entry["status"] = "recursive_success"
        out.append(public_task(entry) if public else entry)
    return out


def public_task(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A task entry without the internal fields, children included."""
    data = {k: v for k, v in entry.items() if k not in HIDDEN}
    if data.get("child_results"):
        data["child_results"] = [public_task(c) for c in data["child_results"]]
    return data
