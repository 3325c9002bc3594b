"""Errors of the job store and its workers, in the style of `agent_team.errors`."""

from __future__ import annotations

from ..errors import AgentTeamError, UserError


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
