"""Run one claimed task: worktree, agent, commit, expected outputs, merge, result.

`execute_job_task` is the single seam between the job workers and the engine's task step:
everything that runs an agent on a task in a worktree is behind it, so it can be re-wired to
the core's shared `execute_task` step without touching the queue or the workers.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent_loop import AgentResult, run_agent
from ..budget import estimate_cost
from ..errors import AgentTeamError, ConfigError
from ..models import ChatModel, Message, Usage, create_model, detect_provider
from ..redaction import redact
from ..roles import MANAGER, build_roles, default_agent_types, load_prompt
from ..tools import Workspace, build_toolbox
from .errors import FenceRejected
from .queue import Claim, TaskQueue
from .records import JobRecord, TaskRecord
from .repo import JobRepository, MergeConflict, task_branch

LOGS = Path(".ai-agents") / "logs" / "jobs"
GENERIC_ROLE_PROMPT = (
    "You are a software developer on a team. You get one well-defined task of a larger job; "
    "do exactly that task, completely, in the files of your worktree."
)
MAX_CONTEXT_CHARS = 6000


@dataclass(frozen=True)
class TaskOutcome:
    """What happened to one attempt: completed, failed, or refused (its lease was lost)."""

    status: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def model_for_job(settings: Mapping[str, Any]) -> ChatModel:
    """The model a job's settings name (provider, model, base URL, session file)."""
    provider = settings.get("api_provider") or detect_provider()
    if provider is None:
        raise ConfigError(
            "no model provider for this job: set ANTHROPIC_API_KEY or OPENAI_API_KEY for the "
            "workers, or give the project a config with api_provider (scripted + session "
            "for offline runs)")
    return create_model(str(provider), model=settings.get("model"),
                        base_url=settings.get("base_url"), session=settings.get("session"))


def system_prompt(role: str, settings: Mapping[str, Any]) -> str:
    """The role's prompt (a known role or a generic developer) and the working rules."""
    roles = build_roles(default_agent_types(), settings.get("agents") or {})
    text = roles[role].system_prompt if role in roles else GENERIC_ROLE_PROMPT
    return text if role == MANAGER else f"{text}\n\n{load_prompt('worker-rules')}"


def task_prompt(job: JobRecord, task: TaskRecord, worktree: Path,
                parents: list[TaskRecord]) -> str:
    """What the agent is asked: the task, the job's goal, its files and the work it builds on."""
    lines = [f"Task {task.id} of job {job.id}: {task.prompt}", f"Job goal: {job.goal}"]
    for parent in parents:
        data = parent.result_data() or {}
        files = ", ".join(data.get("files_changed") or []) or "no files"
        lines.append(f"Builds on task {parent.id} (merged, in your tree): "
                     f"{data.get('summary') or parent.prompt} [{files}]")
    if task.expected_outputs:
        lines += ["", "Expected outputs (must exist when you finish):"]
        lines += [f"- {path}" for path in task.expected_outputs]
    for name in task.context_files:
        path = worktree / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")[:MAX_CONTEXT_CHARS]
            lines += ["", f"Context file {name}:", text]
        else:
            lines += ["", f"Context file {name} does not exist yet."]
    if task.metadata:
        lines += ["", f"Metadata: {json.dumps(task.metadata, default=str)[:2000]}"]
    lines += ["", "Make the changes with the tools, check them, then call finish_task."]
    return "\n".join(lines)


def _script_key(model: ChatModel, task: TaskRecord, fence: int) -> str:
    """The task id a model sees: `<id>-a<attempt>` when a scripted session has a queue for
    that attempt (tests of retries), else the task id."""
    remaining = getattr(model, "remaining", None)
    attempt_key = f"{task.id}-a{fence}"
    if callable(remaining) and f"{task.role}:{attempt_key}" in remaining():
        return attempt_key
    return str(task.id)


def _write_log(path: Path, messages: tuple[Message, ...] | list[Message], note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for message in messages:
            entry: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.tool_calls:
                entry["tool_calls"] = [{"name": c.name, "arguments": c.arguments}
                                       for c in message.tool_calls]
            handle.write(redact(json.dumps(entry, default=str)) + "\n")
        handle.write(redact(json.dumps({"outcome": note})) + "\n")


def execute_job_task(queue: TaskQueue, claim: Claim, *, work_dir: Path,
                     model: ChatModel | None = None) -> TaskOutcome:
    """Run `claim`'s task to the end and record it in the store, fenced by the claim.

    Never raises for the task's own failures (they are recorded); FenceRejected (another
    attempt owns the task now) comes back as status "refused" with the branch kept.
    """
    store = queue.store
    task, fence = claim.task, claim.fence
    job = store.get_job(task.job_id)
    started = time.monotonic()
    log_path = work_dir / LOGS / job.id / f"task-{task.id}-a{fence}.log"
    branch = task_branch(job, task, fence)
    repo: JobRepository | None = None
    worktree: Path | None = None
    messages: tuple[Message, ...] = ()
    usage = Usage()
    cost = 0.0
    fields: dict[str, Any] = {"branch": branch, "log_path": str(log_path)}

    def record_failure(error: str, result: dict[str, Any] | None = None) -> TaskOutcome:
        fields["duration_s"] = round(time.monotonic() - started, 3)
        fields["usage"] = usage.to_dict()
        fields["cost_usd"] = cost
        _write_log(log_path, messages, f"failed: {error}")
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
        worktree, start = repo.start_task(branch)
        parents = [store.get_task(d) for d in task.dependencies]
        base_model = model or model_for_job(job.settings)
        chosen = base_model.for_agent(task.role, _script_key(base_model, task, fence))
        toolbox = build_toolbox(
            Workspace(worktree),
            command_timeout=float(job.settings.get("command_timeout_seconds", 300)))
        agent: AgentResult = run_agent(
            chosen, system_prompt(task.role, job.settings),
            task_prompt(job, task, worktree, parents), toolbox,
            max_turns=int(job.settings.get("max_iterations", 30)))
        messages, usage = agent.messages, agent.usage
        cost = estimate_cost(chosen.provider, chosen.model, usage,
                             job.settings.get("prices") or {}) or 0.0
        report = agent.report
        summary = str(report.get("summary", "")).strip()
        if report.get("status", "completed") != "completed":
            blockers = "; ".join(report.get("blockers") or [])
            return record_failure(f"the agent reported {report.get('status')}: {summary}"
                                  + (f" ({blockers})" if blockers else ""), {"report": report})
        commit = repo.workspace.commit_all(
            worktree, f"Task {task.id}: {task.prompt[:60]}\n\n{summary}\n\nJob: {job.id}\n",
            author_name=task.role, author_email=f"{task.role}@agent-team.invalid")
        head = commit or start
        missing = [p for p in task.expected_outputs if not repo.has_file(head, p)]
        files = repo.workspace.changed_files(start, head)
        result = {"summary": summary, "files_changed": files, "commit": commit,
                  "branch": branch, "report": report, "usage": usage.to_dict(),
                  "cost_usd": cost, "log_path": str(log_path)}
        fields.update(commit=commit)
        if missing:
            return record_failure(
                f"expected output(s) missing on branch {branch}: {', '.join(missing)}", result)
        fields.update(usage=usage.to_dict(), cost_usd=cost)
        with queue.job_lock(claim) as conn:
            merge_commit = repo.merge_task(branch, f"Merge task {task.id}: {task.prompt[:60]}")
            result.update(merge_commit=merge_commit,
                          duration_s=round(time.monotonic() - started, 3))
            fields.update(merge_commit=merge_commit, duration_s=result["duration_s"])
            queue.complete(claim, result, conn=conn, **fields)
        _write_log(log_path, messages, f"completed: {summary}")
        return TaskOutcome("completed", result)
    except FenceRejected as exc:
        _write_log(log_path, messages, f"refused: {exc}")
        if repo is not None:
            with contextlib.suppress(Exception):
                repo.keep_branch(branch)
        return TaskOutcome("refused", error=str(exc))
    except MergeConflict as exc:
        return record_failure(str(exc))
    except AgentTeamError as exc:
        return record_failure(f"{type(exc).__name__}: {exc}")
    finally:
        if repo is not None and worktree is not None:
            with contextlib.suppress(AgentTeamError):
                repo.finish_task(worktree)
