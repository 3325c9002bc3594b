"""Errors of the job store and its workers, in the style of `agent_team.errors`."""

from __future__ import annotations

from typing import Any

from ..errors import AgentTeamError, RunStopped, UserError


class JobStoreError(UserError):
    """The job store cannot be opened, read or migrated (bad URL, newer schema, no driver)."""


class JobNotFound(UserError):
    """A job id that the store does not hold."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"there is no job {job_id!r} in the job store; list jobs with the "
                         "dashboard (claude_dashboard.py --once)")
        self.job_id = job_id


class TaskNotFound(UserError):
    """A task id that the store does not hold."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"there is no task {task_id!r} in the job store")
        self.task_id = task_id


class BadTaskInput(UserError):
    """A task or job was described wrongly (priority, dependency, expected output...)."""


class FenceRejected(AgentTeamError):
    """A worker wrote for an attempt that is no longer current: its lease was lost.

    The write is refused so a paused or cut-off worker can never overwrite or merge over the
    attempt that replaced it; its branch is kept for inspection.
    """

    def __init__(self, task_id: int, fence: int, *, current: int | None, status: str | None):
        super().__init__(
            f"task {task_id}: attempt {fence} lost its lease (current attempt "
            f"{current}, status {status}); its result was refused and its branch kept"
        )
        self.task_id = task_id
        self.fence = fence
        self.current = current
        self.status = status


class LeaseLost(RunStopped):
    """The attempt's lease went to another attempt: its agent stops at the next turn."""

    def __init__(self, task_id: int, fence: int) -> None:
        super().__init__(f"task {task_id}: attempt {fence} lost its lease to a later attempt; "
                         "its agent stopped and its branch is kept")
        self.task_id = task_id
        self.fence = fence


class WaitTimeout(AgentTeamError, TimeoutError):
    """`wait_and_collect` ran out of time; the results so far are on the exception."""

    def __init__(self, job_id: str, timeout_s: float, results: dict[int, dict[str, Any]],
                 *, pending: int, running: int) -> None:
        super().__init__(
            f"job {job_id} is not finished after {timeout_s:g}s: {len(results)} task(s) "
            f"finished, {running} running, {pending} pending. The partial results are on "
            "this error's `results`; wait again with wait_and_collect(job_id), or give more "
            "time with timeout=")
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.results = results
        self.pending = pending
        self.running = running
