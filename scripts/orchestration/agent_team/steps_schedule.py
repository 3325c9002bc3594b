"""Running a plan's tasks in dependency order with the pure scheduler, and what resume skips.

`run_schedule` adapts the scheduler (`run_graph`, which knows nothing of git or stores) to a
run: the stop token decides whether a task may start, and every task the scheduler did not
finish (blocked, skipped, or failed by an escaped error) gets its reason recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from .errors import StateError
from .records import set_task, task_record
from .run_context import STOP_STATE, RunContext
from .scheduler import Job, ScheduleResult, run_graph
from .state_schema import utc_now
from .steps_merge import record_merge
from .task_record import TaskRecord, job_of
from .team import Team


def run_schedule(team: Team, run: RunContext, tasks: list[TaskRecord],
                 execute: Callable[[str], bool], *, max_workers: int,
                 completed: Iterable[str] = ()) -> ScheduleResult:
    """Execute every task as soon as its dependencies completed; stop when the run stops."""

    def attempt(job: Job) -> bool:
        if run.stop.stopped:
            return False
        try:
            return execute(job.id)
        except StateError as exc:  # the store cannot be used: the whole run stops
            run.trip(exc)
            raise

    def on_event(event: str, task_id: str, detail: str) -> None:
        if event not in ("blocked", "skipped") or run.stop.kind == STOP_STATE:
            return
        if run.stop.stopped:  # not started because the run stopped
            set_task(run, task_id, status="pending", error="not started: the run stopped")
            return
        set_task(run, task_id, status=event, error=detail)
        run.log(f"{task_id} {event}: {detail}")

    schedule = run_graph([job_of(t) for t in tasks], attempt, max_workers=max_workers,
                         on_event=on_event, should_stop=lambda: run.stop.stopped,
                         completed=completed)
    if run.stop.kind == STOP_STATE:
        run.stop.check()
    for task_id, error in schedule.errors.items():  # errors that escaped a task
        record = task_record(run, task_id)
        if record["status"] in ("in_progress", "pending") and not record.get("error"):
            set_task(run, task_id, status="failed", error=error, completed_at=utc_now())
    for message in schedule.callback_errors:
        run.log(f"Scheduler callback failed: {message}")
    return schedule


def resume_plan(team: Team, run: RunContext, tasks: list[TaskRecord],
                branch_of: Callable[[TaskRecord], str]) -> list[str]:
    """Ids of tasks already done; merges git made before a crash are recorded, and every
    other unfinished task goes back to pending."""
    done = []
    for task in tasks:
        branch = task.get("branch") or branch_of(task)
        if task["status"] == "completed" and task.get("merged", False):
            if on_feature_branch(team, run, task):
                done.append(task["task_id"])
                continue
            run.log(f"{task['task_id']} is recorded as merged, but its commit "
                    f"{task.get('commit')} is not on {run.feature_branch}; running it again.")
            set_task(run, task["task_id"], status="pending", merged=False, merge_commit=None,
                     error=None)
        elif (task["status"] == "in_progress" and task.get("result") and task.get("commit")
              and team.git.branch_exists(branch)
              and team.git.history.is_merged(branch, run.feature_branch)):
            done.append(task["task_id"])  # merged just before the crash
            merge = team.git.history.merge_commit_of(branch, run.feature_branch)
            record_merge(run, task, branch, "merged", merge, [],
                         "merged before the run was interrupted")
            set_task(run, task["task_id"], status="completed", merged=True,
                     merge_commit=merge, progress=100)
        elif not (task["status"] == "in_progress" and task.get("result") and task.get("commit")
                  and team.git.branch_exists(branch)
                  and team.git.head_commit(branch) == task["commit"]):
            set_task(run, task["task_id"], status="pending", error=None)
    return done


def on_feature_branch(team: Team, run: RunContext, task: TaskRecord) -> bool:
    """Whether a merged task's commit is really in the feature branch (a task that changed
    nothing has no commit and counts as merged)."""
    commit = task.get("commit")
    if not commit:
        return True
    if team.git.resolve(commit) is None:
        return False
    return team.git.history.is_merged(commit, run.feature_branch)
