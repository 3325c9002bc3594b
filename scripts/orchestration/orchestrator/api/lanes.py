"""The in-server workers of a job: lanes that claim the job's tasks from the job store's queue
and run each with the core's steps.

A lane is a thread, not a worker process, because a task's agent may call `delegate`: the
child job then runs in the same process while the parent agent's conversation waits in its
tool call, and the tree shares one budget and one stop token in memory. Everything else is the
store's: the claim (dependencies done, highest priority first), the lease (renewed while the
task runs), the fenced result, and blocking the dependents of a failed task.

A lane holds one of the tree's worker slots only while it runs a task; a task that delegates
lends its slot to the child job while it waits, so one worker is enough for any depth.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from agent_team.errors import AgentTeamError, RunStopped, StateError
from agent_team.jobs import Claim, FenceRejected, TaskQueue
from agent_team.records import set_task, task_record
from agent_team.run_worktrees import remove_task_worktree, task_worktree
from agent_team.steps_agent import TaskExtras
from agent_team.steps_merge import conclude_task, merge_task
from agent_team.steps_task import execute_task, fail_message, fail_task, with_extras

from .engine import JobRun, ServiceHooks, delegate_tool
from .results import safe_created, task_diff

POLL_S = 0.5
TOKEN_KEYS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def run_lanes(job: JobRun) -> None:
    """Run the job's tasks with `max_workers` lanes until none is left or the run stops."""
    wake = threading.Event()
    lanes = [threading.Thread(target=lane, args=(job, n, wake), daemon=True,
                              name=f"job-{job.job.job_id}-lane-{n}")
             for n in range(1, job.job.settings.max_workers + 1)]
    for thread in lanes:
        thread.start()
    for thread in lanes:
        thread.join()


def lane(job: JobRun, number: int, wake: threading.Event) -> None:
    store, run = job.jobs.store, job.run
    worker_id = store.workers.register(f"service-{job.job.job_id}-lane-{number}")
    try:
        while not run.stop.stopped:
            with job.tree.slots:
                claim = job.queue.claim(worker_id, job_id=job.job.job_id)
                if claim is not None:
                    store.workers.heartbeat(worker_id, status="busy",
                                           current_task_id=claim.task_id)
                    try:
                        run_claim(job, claim)
                    finally:
                        store.workers.heartbeat(worker_id, status="idle", finished_task=True)
                        wake.set()  # a finished task may make others ready
                    continue
            status = store.job_status(job.job.job_id)
            if status.pending == 0 and status.running == 0:
                break
            wake.wait(POLL_S)
            wake.clear()
    except Exception as exc:  # noqa: BLE001 - a broken lane must not hang the job
        run.log(f"Worker lane {number} stopped: {fail_message(exc)}")
        if isinstance(exc, StateError):
            run.trip(exc)
    finally:
        store.workers.heartbeat(worker_id, status="stopped")
        wake.set()


@contextlib.contextmanager
def keep_lease(queue: TaskQueue, claim: Claim) -> Iterator[None]:
    """Renew the claim's lease every third of its length while the body runs."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(claim.lease_s / 3):
            if not queue.renew(claim):
                return  # the task was cancelled or taken over; its result will be refused

    thread = threading.Thread(target=renew, daemon=True, name=f"lease-{claim.task_id}")
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def run_claim(job: JobRun, claim: Claim) -> None:
    """One claimed task: worktree, agent (`execute_task`), merge (`merge_task`), result."""
    team, run = job.team, job.run
    task_id = str(claim.task.metadata["task_id"])
    task = task_record(run, task_id)
    branch = str(task["branch"])
    with keep_lease(job.queue, claim):
        try:
            worktree = task_worktree(team, run, task, branch)
            start = team.git.head_commit(branch)
            transcript = job.transcripts.setdefault(task_id, [])
            timeout = job.job.settings.default_timeout
            extras = TaskExtras(
                tools=[delegate_tool(job, task, worktree, claim.task_id)],
                wrap_hooks=lambda inner: ServiceHooks(inner, transcript, timeout))
            outcome = execute_task(team, run, task, worktree, branch,
                                   runner=with_extras(extras))
            if outcome.status != "stopped" or team.git.is_worktree(worktree):
                remove_task_worktree(team, run, worktree)
            concluded: dict[str, Any] | None = None
            if outcome.status == "ready":
                merge = merge_task(team, run, {**task, "commit": outcome.commit}, branch)
                concluded = conclude_task(run, task, merge, outcome.files)
        except (RunStopped, StateError) as exc:
            if isinstance(exc, StateError):
                run.trip(exc)
            record(job, claim, ok=False, error=fail_message(exc), start=None, files=[])
            return
        except Exception as exc:  # noqa: BLE001 - recorded on its task, never lost
            fail_task(run, task_id, fail_message(exc))
            record(job, claim, ok=False, error=fail_message(exc), start=None, files=[])
            return
        job.diffs[task_id] = task_diff(team.git, start, team.git.head_commit(branch))
        ok = concluded is not None and concluded["status"] == "completed"
        error = None if ok else str((concluded or {}).get("error") or outcome.error
                                    or "stopped before finishing")
        record(job, claim, ok=ok, error=error, start=start, files=outcome.files)


def record(job: JobRun, claim: Claim, *, ok: bool, error: str | None, start: str | None,
           files: list[str]) -> None:
    """The task's result in the store, fenced by its claim (a cancelled task stays so)."""
    task_id = str(claim.task.metadata["task_id"])
    try:
        state: Mapping[str, Any] = task_record(job.run, task_id)
    except (StopIteration, AgentTeamError):
        state = {}
    usage = state.get("usage") or {}
    result: dict[str, Any] = {
        "summary": (state.get("result") or {}).get("summary") or error or "",
        "files_modified": list(files),
        "files_created": safe_created(job.team.git, start, list(files)) if start else [],
        "start_point": start,
        "tokens": sum(int(usage.get(k) or 0) for k in TOKEN_KEYS),
        "cost_usd": usage.get("cost_usd", 0.0) if usage.get("cost_known", True) else None,
    }
    fields: dict[str, Any] = {
        "branch": state.get("branch"), "commit": state.get("commit"),
        "usage": {k: int(usage.get(k) or 0) for k in TOKEN_KEYS},
        "cost_usd": float(result["cost_usd"] or 0.0),
    }
    try:
        if ok:
            job.queue.complete(claim, result, merge_commit=state.get("merge_commit"), **fields)
        else:
            job.queue.fail(claim, error or "failed", result=result, **fields)
    except FenceRejected:
        job.run.log(f"{task_id}: result not recorded, the task was cancelled meanwhile.")


def close_unstarted(job: JobRun) -> None:
    """After a stop, tasks that never started fail with the reason (their dependents are
    blocked by the store); after a cancel the store already cancelled them."""
    if not job.run.stop.stopped:
        return
    reason = f"not started: the run stopped ({job.run.stop.error})"
    while True:
        claim = job.queue.claim(f"service-{job.job.job_id}-closer", job_id=job.job.job_id)
        if claim is None:
            return
        task_id = str(claim.task.metadata["task_id"])
        with contextlib.suppress(AgentTeamError, StopIteration):
            set_task(job.run, task_id, status="pending", error=reason)
        with contextlib.suppress(FenceRejected):
            job.queue.fail(claim, reason)
