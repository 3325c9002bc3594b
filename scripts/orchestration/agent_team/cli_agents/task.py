"""One task run by a coding-agent CLI, with the same result and accounting as the tool loop.

The CLI edits the task's worktree; the orchestrator then commits what changed, merges and runs
the tests exactly as for a built-in agent. What the CLI says about its work goes only into
the task's notes; its own figures (turns, tokens, cost, session id) go into the task's
`worker` record, the usage totals and the budget. A cost it does not report stays unknown.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from .. import state_ops
from ..agent_calls import agent_entry
from ..agent_loop import AgentResult
from ..errors import CliAgentError, UsageLimitExceeded
from ..git_workspace import GitWorkspace
from ..models import Message
from ..prompts import task_prompt_for
from ..records import set_agent, set_task
from ..redaction import redact
from ..run_context import RunContext
from ..task_record import TaskRecord, WorkerRecord, WorkerState, tasks_of
from ..team import Team
from . import aider, claude_code, codex, generic
from .confine import confined
from .runner import Finished, Invocation, Wrapper, cli_environment, run_invocation
from .spec import (
    COMMAND,
    Backend,
    CliReport,
    CliRequest,
    WorkerSpec,
    require_executable,
)

NOTES_CAP_CHARS = 8000
RESUMABLE_STATES = ("running", "stopped", "timed_out")
CLI_INSTRUCTIONS = (
    "Make the changes in this directory (your working directory is the task's own git "
    "worktree) and check them. Do not commit or switch branches: the orchestrator commits "
    "your changes, merges them and runs the tests itself. End with a short account of what "
    "you changed and anything left undone."
)
CONTINUE_PROMPT = (
    "You were interrupted. Your earlier changes are in this directory. Continue the same task "
    "where you left off; do not commit. End with a short account of what you changed."
)

_BACKENDS: dict[str, Backend] = {b.kind: b for b in (claude_code.BACKEND, codex.BACKEND,
                                                     aider.BACKEND)}


def backend_for(spec: WorkerSpec) -> Backend:
    return generic.backend_for(spec) if spec.kind == COMMAND else _BACKENDS[spec.kind]


def cli_prompt(team: Team, run: RunContext, task: TaskRecord) -> str:
    """The task prompt of the tool loop, with the role's own text and no tool instructions."""
    role = team.roles.get(task["assigned_to"])
    lines = [line for line in task_prompt_for(team, run, task).splitlines()
             if "finish_task" not in line]
    intro = f"{role.system_prompt}\n\n" if role is not None else ""
    return f"{intro}{chr(10).join(lines).rstrip()}\n\n{CLI_INSTRUCTIONS}"


def _previous(run: RunContext, task_id: str) -> WorkerRecord | None:
    for entry in tasks_of(run.store.read()):
        if entry["task_id"] == task_id:
            return entry.get("worker")
    return None


def _litter(workdir: Path, patterns: Sequence[str]) -> set[str]:
    return {p.name for p in workdir.iterdir()
            if any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)}


def _remove_new_litter(workdir: Path, patterns: Sequence[str], before: set[str]) -> None:
    for name in _litter(workdir, patterns) - before:
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _undo_cli_commits(team: Team, workdir: Path, start: str | None) -> bool:
    """Move the branch back to where the task started, keeping the CLI's changes staged.

    Only the orchestrator commits; what a CLI committed on its own is re-committed by it,
    authored by the role, after the same checks as any other change.
    """
    if start is None:
        return False
    now = GitWorkspace(workdir).resolve("HEAD")
    if now is None or now == start:
        return False
    team.git.soft_reset(workdir, start)
    return True


def _record_usage(run: RunContext, spec: WorkerSpec, task_id: str, report: CliReport,
                  finished: Finished, turns: int | None) -> None:
    """Add what the CLI reported to the budget, the state totals and the event log."""
    counts = report.usage.to_dict()
    calls = report.api_calls
    run.budget.record(report.usage, report.cost_usd, calls=calls)
    run.events.emit("model_call", role=spec.role, task_id=task_id, turn=turns, usage=counts,
                     stop_reason=f"cli:{spec.kind}", model=spec.model, cost_usd=report.cost_usd,
                     duration_s=round(finished.duration, 3))
    run.store.update(lambda state: state_ops.add_usage_to(
        state, spec.role, counts, api_calls=calls, cost_usd=report.cost_usd, task_id=task_id))


def run_cli_task(team: Team, run: RunContext, spec: WorkerSpec, task: TaskRecord,
                 workspace: Path, *, wrap: Wrapper | None = None) -> AgentResult:
    """Run the role's CLI in `workspace` on `task`; the same AgentResult as the tool loop.

    Raises:
        UsageLimitExceeded: a budget (or Ctrl-C) stopped the run before or during the CLI.
        CliAgentError: the CLI timed out, exited non-zero or reported an error.
        ConfigError: the CLI is not installed.
    """
    backend = backend_for(spec)
    task_id = task["task_id"]
    executable = require_executable(spec, backend.program, backend.install)
    previous = _previous(run, task_id)
    resume_id = None
    if (backend.resumable and previous is not None and previous["backend"] == spec.kind
            and previous["state"] in RESUMABLE_STATES and previous.get("session_id")):
        resume_id = previous.get("session_id")
    session_id = resume_id or (str(uuid.uuid4()) if backend.chooses_session_id else None)
    prompt = CONTINUE_PROMPT if resume_id else cli_prompt(team, run, task)
    run.check_stop()
    try:  # the CLI's prices are not ours to guess: only counts are checked before it starts
        run.budget.check(request_chars=len(prompt))
    except UsageLimitExceeded as exc:
        raise run.trip(exc) from None
    agent = agent_entry(spec.role, task_id)
    record: WorkerRecord = {"backend": spec.kind, "state": "running", "session_id": session_id,
                            "resumed": resume_id is not None}
    set_task(run, task_id, worker=dict(record))
    set_agent(run, agent, last_tool=f"{backend.name} (running)")
    run.log(f"{task_id}: {backend.name} " + (f"resumes session {resume_id}" if resume_id
                                              else "starts") + f" in {workspace}")
    start = GitWorkspace(workspace).resolve("HEAD")
    before = _litter(workspace, backend.litter)
    with tempfile.TemporaryDirectory(prefix="agent-team-cli-") as scratch_dir:
        scratch = Path(scratch_dir)
        request = CliRequest(prompt=prompt, workdir=workspace, scratch=scratch,
                             session_id=session_id, resume_id=resume_id)
        invocation = Invocation(
            argv=tuple(backend.build(spec, executable, request)),
            env=cli_environment(spec.credentials if spec.credentials is not None
                                else backend.credentials(spec)),
            cwd=workspace,
        )
        try:
            finished = run_invocation(
                invocation, timeout=spec.timeout_seconds, scratch=scratch,
                wrap=wrap or confined(team.sandbox, scratch),
                should_stop=lambda: str(run.stop.error) if run.stop.stopped else None,
            )
        except OSError as exc:
            set_task(run, task_id, worker={**record, "state": "failed", "is_error": True})
            raise CliAgentError(f"{backend.name} could not be started ({executable[0]}): "
                                f"{exc.strerror or exc}", backend=spec.kind) from exc
    _remove_new_litter(workspace, backend.litter, before)
    committed_itself = _undo_cli_commits(team, workspace, start)
    report = backend.parse(finished.stdout, finished.stderr, finished.exit_code)
    ended_early = finished.timed_out or finished.stopped is not None
    if ended_early and not report.usage_known:
        report = CliReport(session_id=report.session_id)  # what it spent is unknown
    turns = report.turns
    _record_usage(run, spec, task_id, report, finished, turns)
    state: WorkerState = (
        "stopped" if finished.stopped is not None else "timed_out" if finished.timed_out
        else "failed" if report.is_error else "finished")
    record.update({"state": state, "session_id": report.session_id or session_id,
                   "turns": turns, "is_error": report.is_error,
                   "exit_code": None if ended_early else finished.exit_code,
                   "cost_usd": report.cost_usd, "duration_s": round(finished.duration, 3)})
    set_task(run, task_id, worker=record)
    set_agent(run, agent, turn=turns or 0, last_tool=f"{backend.name} ({state})")
    if finished.stopped is not None:
        raise run.stop.error or UsageLimitExceeded(finished.stopped, limit="stop")
    if finished.timed_out:
        raise CliAgentError(
            f"{backend.name} did not finish within {spec.timeout_seconds:g} s; its process "
            "tree was ended. Raise the role's worker.timeout_seconds or split the task.",
            backend=spec.kind, timed_out=True)
    if report.is_error:
        raise CliAgentError(redact(report.error or f"{backend.name} failed"),
                            backend=spec.kind, cli_exit_code=finished.exit_code)
    notes = redact(report.text.strip())[:NOTES_CAP_CHARS]
    if committed_itself:
        notes += "\n\n(The CLI made commits of its own; the orchestrator re-committed them.)"
    summary = (f"{backend.name} worked on {task_id}" + (f" in {turns} turns" if turns else "")
               + "; its own account is in the task's notes.")
    return AgentResult(
        report={"status": "completed", "summary": summary, "completed_items": [],
                "blockers": [], "notes": notes},
        turns=turns or 0,
        usage=report.usage,
        messages=(Message.user(prompt), Message.assistant(report.text)),
        tool_calls=0,
    )


__all__ = ["backend_for", "cli_prompt", "run_cli_task"]
