"""The one shape of a task, from the manager's plan to the run's report.

A task is an entry of the state file's `tasks` list (`$defs/task` of
`schemas/team-communication.schema.json`), typed here key by key. It stays a plain dict: the
state file stores it as is and the usage guide's examples index it (`task["branch"]`,
`task.get("dependencies")`). `tests/test_task_record.py` keeps these types and the schema
in step.

This module alone has no `from __future__ import annotations`: with string annotations
Python 3.11 cannot see `Required`/`NotRequired` at run time, and `__required_keys__` (which
the tests compare with the schema) would list every key.
"""

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, NotRequired, Required, TypedDict

from .scheduler import Job

TaskStatus = Literal["pending", "in_progress", "completed", "failed", "blocked", "skipped"]
Priority = Literal["high", "medium", "low"]
WorkerState = Literal["running", "finished", "failed", "timed_out", "stopped"]

#: How the scheduler ranks ready tasks: higher first.
PRIORITY_RANK: dict[str, int] = {"high": 2, "medium": 1, "low": 0}


class UsageCounts(TypedDict):
    """Model calls and tokens spent on one task (`$defs/usage_counts`)."""

    api_calls: Required[int]
    input_tokens: Required[int]
    output_tokens: Required[int]
    cache_read_tokens: NotRequired[int]
    cache_write_tokens: NotRequired[int]
    cost_usd: NotRequired[float | None]
    cost_known: NotRequired[bool]


class SuiteResults(TypedDict):
    """A test command the orchestrator ran itself (`$defs/test_results`)."""

    command: Required[str]
    exit_code: Required[int | None]
    success: Required[bool]
    passed: NotRequired[int | None]
    failed: NotRequired[int | None]
    skipped: NotRequired[int | None]
    errors: NotRequired[int | None]
    framework: NotRequired[str | None]
    timed_out: NotRequired[bool]
    duration_seconds: NotRequired[float]
    output_tail: NotRequired[str]
    ran_at: NotRequired[str]
    ref: NotRequired[str | None]


class TaskResult(TypedDict):
    """What a finished task produced (`$defs/task_result`)."""

    completed_items: Required[list[str]]
    files_modified: Required[list[str]]
    blockers: Required[list[str]]
    summary: NotRequired[str]
    test_results: NotRequired[SuiteResults | None]
    notes: NotRequired[str]


class WorkerRecord(TypedDict):
    """The coding-agent CLI that ran a task, with the figures it reported itself."""

    backend: Required[str]
    state: Required[WorkerState]
    session_id: NotRequired[str | None]
    resumed: NotRequired[bool]
    turns: NotRequired[int | None]
    is_error: NotRequired[bool]
    exit_code: NotRequired[int | None]
    cost_usd: NotRequired[float | None]
    duration_s: NotRequired[float | None]


class TaskRecord(TypedDict):
    """One task: what the plan asked for and everything the run recorded about it."""

    task_id: Required[str]
    description: Required[str]
    assigned_to: Required[str]
    dependencies: Required[list[str]]
    status: Required[TaskStatus]
    deliverables: NotRequired[list[str]]
    priority: NotRequired[Priority]
    progress: NotRequired[int]
    attempts: NotRequired[int]
    branch: NotRequired[str | None]
    worktree: NotRequired[str | None]
    commit: NotRequired[str | None]
    merged: NotRequired[bool]
    merge_commit: NotRequired[str | None]
    started_at: NotRequired[str | None]
    completed_at: NotRequired[str | None]
    error: NotRequired[str | None]
    usage: NotRequired[UsageCounts]
    result: NotRequired[TaskResult | None]
    worker: NotRequired[WorkerRecord]


class PromptTask(TaskRecord, total=False):
    """A task as its agent's prompt sees it on a retry: the record plus notes never stored.

    `additional_context` is the guide's name for guidance given to a stuck agent.
    """

    additional_context: str
    last_error: str


def prompt_notes(task: TaskRecord) -> tuple[str, str]:
    """The guidance and the last error a retry added to `task` (see PromptTask), or ""."""
    notes: Mapping[str, object] = task
    return str(notes.get("additional_context") or ""), str(notes.get("last_error") or "")


def new_task(task_id: str, description: str, assigned_to: str,
             dependencies: Iterable[str] = (), deliverables: Iterable[str] = (),
             priority: Priority = "medium") -> TaskRecord:
    """A planned task that has not run yet, as the state file's `tasks` list holds it."""
    return {
        "task_id": task_id,
        "description": description,
        "assigned_to": assigned_to,
        "dependencies": list(dependencies),
        "deliverables": list(deliverables),
        "priority": priority,
        "status": "pending",
        "progress": 0,
        "attempts": 0,
        "result": None,
    }


def tasks_of(state: Mapping[str, Any]) -> list[TaskRecord]:
    """The `tasks` list of a state document (the file and the job store share its format)."""
    tasks: list[TaskRecord] = state.get("tasks", [])
    return tasks


def job_of(task: TaskRecord, known: Collection[str] | None = None) -> Job:
    """The scheduler's view of a task: id, dependencies, priority.

    With `known`, dependencies outside it are left out (a plan being validated, a report of
    the tasks that ran).
    """
    deps = task["dependencies"] if known is None else [
        d for d in task["dependencies"] if d in known]
    return Job(task["task_id"], tuple(deps), PRIORITY_RANK.get(task.get("priority", "medium"), 1))
