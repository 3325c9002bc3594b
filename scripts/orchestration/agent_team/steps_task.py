"""Step two: one task in its worktree. The agent works, the orchestrator commits.

`execute_task` runs the agent (with retries), commits what it changed as its role, records the
result, and says whether the branch is ready to merge. Merging is the next step
(`steps_merge.merge_task`), so a job worker can merge under its own lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent_calls import agent_entry
from .agent_loop import AgentResult
from .errors import AgentTeamError, CommitRefused, RunStopped, StateError
from .records import set_task, task_record
from .run_context import RunContext
from .state_schema import utc_now
from .steps_agent import TaskExtras, run_task_agent
from .task_record import PromptTask, TaskRecord, TaskResult
from .team import Team
from .worktree_setup import unsaved_submodule_files

AGENT_EMAIL_DOMAIN = "agent-team.invalid"

#: Who does a task in its worktree: the role's agent by default (`run_task_agent`), or a
#: front door's own worker (`co`'s BaseWorker); commit, retries and records stay the step's.
TaskAgent = Callable[[Team, RunContext, TaskRecord, Path], AgentResult]


def with_extras(extras: TaskExtras) -> TaskAgent:
    """The default agent with a front door's additions (more tools, wrapped hooks)."""

    def runner(team: Team, run: RunContext, task: TaskRecord,
               worktree: Path) -> AgentResult:
        return run_task_agent(team, run, task, worktree, extras)

    return runner


def agent_email(role: str) -> str:
    return f"{role}@{AGENT_EMAIL_DOMAIN}"


def fail_message(exc: BaseException) -> str:
    """A one-line reason for a failure, with the exception type when it is not ours."""
    if isinstance(exc, AgentTeamError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class TaskOutcome:
    """What one task's execution produced. `status`: ready (to merge), failed, or stopped."""

    task_id: str
    status: str
    branch: str
    error: str | None = None
    commit: str | None = None
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_id": self.task_id, "status": self.status}
        if self.error is not None:
            out["error"] = self.error
        if self.commit is not None:
            out["commit"] = self.commit
        return out


def commit_task(team: Team, run: RunContext, task: TaskRecord, workspace: Path,
                summary: str, branch: str) -> str | None:
    """Commit everything the agent changed, authored by its role.

    The repository's hooks run. When one refuses, the work is saved on `<branch>-hook-refused`
    without them and CommitRefused is raised: the task fails with the hook's output.
    """
    role = task["assigned_to"]
    title = f"{task['task_id']}: {task['description']}"
    if len(title) > 72:
        title = title[:69] + "..."
    message = f"{title}\n\n{summary}\n\nRole: {role}\nTask: {task['task_id']}\n"
    before = team.git.expected.get(workspace)  # its parent, when the orchestrator tracks it
    sha = team.git.commit_all(workspace, message, author_name=role,
                              author_email=agent_email(role),
                              rescue_branch=f"{branch}-hook-refused")
    if sha is not None:
        run.events.emit("commit", task_id=task["task_id"], role=role, sha=sha,
                        files=team.git.history.changed_files(before.head if before else f"{sha}^",
                                                     sha))
    return sha


def save_work(team: Team, run: RunContext, task: TaskRecord, worktree: Path,
              summary: str, branch: str) -> tuple[str | None, str | None]:
    """Commit what the agent left: (new commit or None, why the work is not on its branch)."""
    if not team.git.is_worktree(worktree):
        return None, (
            f"the task's worktree {worktree} was deleted while the agent worked (by a command "
            f"it ran?); what it committed before is kept on {branch}")
    unsaved = unsaved_submodule_files(worktree)
    try:
        commit = commit_task(team, run, task, worktree, summary, branch)
    except CommitRefused as exc:
        return None, str(exc)
    if unsaved:
        return commit, ("files written inside submodules are not part of this repository's "
                        "commits and were not saved: " + ", ".join(unsaved[:20]))
    return commit, None


def run_attempts(team: Team, run: RunContext, task: TaskRecord, worktree: Path,
                 runner: TaskAgent = run_task_agent,
                 ) -> tuple[dict[str, Any] | None, str | None]:
    """Run the agent up to max_task_attempts times; each retry sees the last error."""
    attempts = team.settings.coordination.max_task_attempts
    current: PromptTask = {**task}
    used = int(task_record(run, task["task_id"]).get("attempts", 0))
    report: dict[str, Any] | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        used += 1
        set_task(run, task["task_id"], attempts=used)
        try:
            report = runner(team, run, current, worktree).report
            error = None if report["status"] == "completed" else (
                "; ".join(report.get("blockers") or []) or report["summary"])
        except (RunStopped, StateError):
            raise
        except Exception as exc:  # this task fails; independent tasks go on
            report, error = None, fail_message(exc)
        if error is None or attempt == attempts:
            break
        run.log(f"{task['task_id']} attempt {attempt} failed ({error}); retrying.")
        current["last_error"] = error
    return report, error


def result_record(report: Mapping[str, Any] | None, summary: str,
                  files: list[str]) -> TaskResult:
    return {
        "summary": summary,
        "completed_items": (report or {}).get("completed_items", []),
        "files_modified": files,
        "test_results": None,
        "blockers": (report or {}).get("blockers", []),
        "notes": (report or {}).get("notes", ""),
    }


def task_start(team: Team, run: RunContext, branch: str) -> str:
    """Where the task's branch left the feature branch: its files are counted from there.

    A branch just cut from the feature branch's tip is that tip (read from the ref store);
    otherwise git finds the merge base."""
    tip = team.git.ref_commit(branch)
    if tip is not None and tip == team.git.ref_commit(run.feature_branch):
        return tip
    return team.git.history.merge_base(branch, run.feature_branch)


def execute_task(team: Team, run: RunContext, task: TaskRecord, worktree: Path,
                 branch: str, *, runner: TaskAgent = run_task_agent) -> TaskOutcome:
    """Run the task's agent in `worktree` (on `branch`) and commit its work there.

    `runner` does the work: the built-in agent (or the role's coding-agent CLI) by default; a
    front door passes its own, e.g. `with_extras(TaskExtras(...))` or a custom worker."""
    task_id, role = task["task_id"], task["assigned_to"]
    agent = agent_entry(role, task_id)
    start = task_start(team, run, branch)
    run.log(f"Executing {task_id} as {role} on {branch}")
    set_task(run, task_id, status="in_progress", started_at=utc_now(), branch=branch,
             worktree=str(worktree), error=None,
             agent=(agent, {"status": "working", "current_task": task_id, "branch": branch,
                            "worktree": str(worktree), "turn": 0}))
    try:
        report, error = run_attempts(team, run, task, worktree, runner)
    except RunStopped as exc:
        commit, problem = save_work(team, run, task, worktree,
                                    f"Partial work; the run stopped: {exc}", branch)
        set_task(run, task_id, status="pending", commit=commit,
                 error=problem or f"stopped before finishing ({exc}); work so far is on "
                                  f"{branch}", agent=(agent, {"status": "stopped"}))
        return TaskOutcome(task_id, "stopped", branch, str(exc), commit)
    except StateError:  # the run stops; git keeps the work, the state cannot
        commit, problem = save_work(team, run, task, worktree,
                                    "Partial work; the run stopped: the team state file could "
                                    "not be used.", branch)
        run.log(f"{task_id}: {problem or f'work so far is on {branch}'}")
        raise

    summary = report["summary"] if report else f"Partial work; the task failed: {error}"
    commit, problem = save_work(team, run, task, worktree, summary, branch)
    if problem is not None:
        error = f"{error}; {problem}" if error else problem
    head = commit or team.git.head_commit(branch)  # a new commit is the branch's tip
    files = team.git.history.changed_files(start, head)
    result = result_record(report, summary, files)
    if error is not None:
        set_task(run, task_id, status="failed", error=error, commit=commit, result=result,
                 completed_at=utc_now(), agent=(agent, {"status": "failed"}))
        run.log(f"{task_id} failed: {error}" + (f" (work kept on {branch})" if commit else ""))
        return TaskOutcome(task_id, "failed", branch, error, commit, files)
    set_task(run, task_id, progress=90, commit=head, result=result)
    return TaskOutcome(task_id, "ready", branch, None, head, files)


def fail_task(run: RunContext, task_id: str, error: str) -> dict[str, Any]:
    """Record an error that escaped a seam on its task, so it is never lost."""
    set_task(run, task_id, status="failed", error=error, completed_at=utc_now())
    run.log(f"{task_id} failed: {error}")
    return {"task_id": task_id, "status": "failed", "error": error}
