"""Run one claimed task on the core's task step, then merge it under the job's merge lock.

`execute_job_task` is the seam between the job workers and the engine: it opens the attempt
(`attempt.open_attempt`: a team from the job's stored settings and a run whose store is the
job store), calls the core's `steps_task.execute_task` in a worktree of the job's repository
on the attempt's own branch, checks the expected outputs on that branch, merges into the job
branch under `TaskQueue.merge_lock` (a conflict goes to the manager, as in a feature run:
`steps_merge.resolve_conflict`) and records the result, every write fenced by the claim.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..git_merge import MergeResult
from ..models import ChatModel
from ..steps_merge import resolve_conflict
from ..steps_task import execute_task, fail_message
from .attempt import Attempt, open_attempt
from .errors import FenceRejected
from .queue import Claim, TaskQueue
from .repo import JobRepository, MergeConflict, task_branch

LOGS = Path(".ai-agents") / "logs" / "jobs"


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one attempt: completed, failed, or refused (its lease was lost)."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def log_path_for(work_dir: Path, job_id: str, task_id: int, fence: int) -> Path:
    """The attempt's event log (JSON lines: model and tool calls, commits, merges)."""
    return work_dir / LOGS / job_id / f"task-{task_id}-a{fence}.jsonl"


def execute_job_task(queue: TaskQueue, claim: Claim, *, work_dir: Path,
                     model: ChatModel | None = None) -> TaskOutcome:
    """Run `claim`'s task to the end and record it in the store, fenced by the claim.

    Never raises for the task's own failures (they are recorded); FenceRejected (another
    attempt owns the task now) comes back as status "refused" with the branch kept.
    """
    task, fence = claim.task, claim.fence
    job = queue.store.get_job(task.job_id)
    started = time.monotonic()
    log_path = log_path_for(work_dir, job.id, task.id, fence)
    branch = task_branch(job, task, fence)
    fields: dict[str, Any] = {"branch": branch, "log_path": str(log_path)}
    repo: JobRepository | None = None
    worktree: Path | None = None
    attempt: Attempt | None = None

    def record_failure(error: str, result: dict[str, Any] | None = None) -> TaskOutcome:
        fields["duration_s"] = round(time.monotonic() - started, 3)
        if attempt is not None:
            attempt.run.events.emit("run_finished", status="failed", error=error[:500])
        if repo is not None:
            with contextlib.suppress(Exception):  # keeping the branch is best effort
                repo.keep_branch(branch)
        try:
            queue.fail(claim, error, result=result, **fields)
        except FenceRejected as exc:
            return TaskOutcome("refused", error=str(exc))
        return TaskOutcome("failed", result or {}, error)

    try:
        repo = JobRepository.prepare(job, work_dir, claim.worker_id)
        adopted = adopt_merged_attempt(queue, claim, repo)
        if adopted is not None:
            return adopted
        worktree, start = repo.start_task(branch)
        attempt = open_attempt(queue, claim, job, repo_root=repo.root, worktree=worktree,
                               start=start, log_path=log_path, model=model)
        repo.workspace = attempt.team.git  # one workspace: its lock, its sandboxed hooks
        outcome = execute_task(attempt.team, attempt.run, attempt.task, worktree, branch)
        usage, cost = attempt.store.usage()
        fields.update(usage=usage, cost_usd=cost)
        record = attempt.store.own_task()
        report: Mapping[str, Any] = record.get("result") or {}
        commit = outcome.commit if outcome.commit and outcome.commit != start else None
        fields["commit"] = commit
        result: dict[str, Any] = {
            "summary": str(report.get("summary") or ""), "files_changed": outcome.files,
            "commit": commit, "branch": branch, "report": report, "usage": usage,
            "cost_usd": cost, "log_path": str(log_path)}
        if outcome.status == "stopped":
            return record_failure(f"stopped: {outcome.error}; the work so far is on {branch}",
                                  result)
        if outcome.status != "ready":
            return record_failure(outcome.error or "the task failed", result)
        head = outcome.commit or start
        missing = [p for p in task.expected_outputs if not repo.has_file(head, p)]
        if missing:
            return record_failure(
                f"expected output(s) missing on branch {branch}: {', '.join(missing)}", result)
        merge_job_task(queue, claim, repo, attempt, branch, head, result, fields, started)
        attempt.run.events.emit("run_finished", status="completed", exit_code=0)
        return TaskOutcome("completed", result)
    except FenceRejected as exc:
        if repo is not None:
            with contextlib.suppress(Exception):
                repo.keep_branch(branch)
        return TaskOutcome("refused", error=str(exc))
    except MergeConflict as exc:
        return record_failure(str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded on the task, never lost
        return record_failure(fail_message(exc))
    finally:
        if attempt is not None:
            attempt.close()
        if repo is not None and worktree is not None:
            with contextlib.suppress(Exception):
                repo.finish_task(worktree)


def merge_job_task(queue: TaskQueue, claim: Claim, repo: JobRepository, attempt: Attempt,
                   branch: str, head: str, result: dict[str, Any], fields: dict[str, Any],
                   started: float) -> None:
    """Merge the attempt's branch into the job branch and record it, under the merge lock.

    Before merging, the attempt records which commit it merges (`record_merging`), so that
    if it dies between the merge and the result, the next attempt finds the commit on the
    job branch and records the task as done instead of running it again.
    """
    task = claim.task

    def resolve(path: Path, merge: MergeResult) -> tuple[str | None, str]:
        attempt.run.integration_worktree = path
        attempt.run.log(f"Merge conflict for task {task.id} in {', '.join(merge.conflicts)}; "
                        "asking the manager to resolve it.")
        entry = resolve_conflict(attempt.team, attempt.run, attempt.store.own_task(), branch, merge)
        queue.store.events.add("merge_" + entry["status"], entry["message"][:300],
                              job_id=task.job_id, task_id=task.id, worker_id=claim.worker_id)
        if entry["status"] == "conflict_resolved":
            return entry["commit"], ""
        return None, str(entry["message"])

    with queue.merge_lock(claim):
        queue.record_merging(claim, commit=head, branch=branch, result=result)
        merge_commit = repo.merge_task(branch, f"Merge task {task.id}: {task.prompt[:60]}",
                                       resolve=resolve)
        resolved = attempt.store.merges()
        if resolved:
            result["merge"] = {"status": resolved[-1]["status"],
                               "conflicts": resolved[-1]["conflicts"]}
        result.update(merge_commit=merge_commit, duration_s=round(time.monotonic() - started, 3))
        fields.update(merge_commit=merge_commit, duration_s=result["duration_s"])
        # The result is recorded only when the merge is in: a crash in between is found
        # by the next attempt (`adopt_merged_attempt`).
        with queue.job_lock(claim) as conn:
            queue.complete(claim, result, conn=conn, **fields)


def adopt_merged_attempt(queue: TaskQueue, claim: Claim,
                         repo: JobRepository) -> TaskOutcome | None:
    """Record the task as done when an earlier attempt already merged it, then died.

    That attempt recorded its commit before merging (`record_merging`); when the commit is
    on the job branch, running the task again would do the work twice.
    """
    task = claim.task
    if task.merge_attempt is None or task.merge_attempt >= claim.fence or not task.commit:
        return None
    repo.refresh()
    merged_by = repo.merged_by(task.commit)
    if merged_by is None:
        return None
    result = {**(task.result_data() or {}), "merge_commit": merged_by,
              "recovered_from_attempt": task.merge_attempt}
    with queue.job_lock(claim) as conn:
        queue.complete(claim, result, conn=conn, branch=task.branch,
                       commit=result.get("commit"), merge_commit=merged_by)
    queue.store.events.add(
        "recovered", f"attempt {task.merge_attempt} merged {task.commit[:12]} before it "
        "stopped; recorded as done, not run again", job_id=task.job_id, task_id=task.id,
        worker_id=claim.worker_id)
    return TaskOutcome("completed", result)
