"""One attempt of a job task as the core sees it: a `Team` and a `RunContext`.

The job stores its effective settings (`Settings.to_dict()`); a worker rebuilds them with
`team.load_settings(..., stored=...)`, builds a team on its copy of the repository, and opens
a run whose store is the job store (`JobRunStore`). The core's task step then runs exactly as
in a feature run: the built-in tool loop or the role's coding-agent CLI, in the sandbox, with
the run's budget, recording usage through `agent_calls`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..agent_calls import ModelRequest, pending_request, perform
from ..budget import BudgetGuard
from ..events import EventLog
from ..models import ChatModel, Message, Reply, ToolSpec, create_model, split_key
from ..prompts import system_prompt, task_prompt
from ..roles import default_agent_types
from ..run_context import RunContext
from ..run_frame import new_run, preflight_checks
from ..sandbox import require_sandbox
from ..settings import Settings
from ..task_record import TaskRecord
from ..team import Team, build_team, load_settings
from .errors import LeaseLost
from .queue import Claim, TaskQueue
from .records import JobRecord, JobTask
from .run_store import JobRunStore, initial_document, role_name, task_key

GENERIC_ROLE_PROMPT = (
    "You are a software developer on a team. You get one well-defined task of a larger job; "
    "do exactly that task, completely, in the files of your worktree."
)
MAX_CONTEXT_CHARS = 6000
#: Keys of job settings written before jobs stored `Settings.to_dict()`.
LEGACY_COORDINATION = ("max_iterations", "command_timeout_seconds")
#: Sections a job never stores: where the store is (it may hold a password) is each worker's.
NOT_STORED = ("storage", "project_dir")


def stored_settings(settings: Settings, project_dir: Path) -> dict[str, Any]:
    """A team's settings as a job stores them: no store URL, the session file absolute."""
    data = {k: v for k, v in settings.to_dict().items() if k not in NOT_STORED}
    session = data.get("session")
    if session and not Path(session).is_absolute():
        data["session"] = str((project_dir / session).resolve())
    return data


def job_settings(job: JobRecord, project_dir: Path) -> Settings:
    """The job's effective settings, as stored when it was created (older shapes accepted)."""
    stored = {k: v for k, v in job.settings.items() if k not in NOT_STORED}
    coordination = dict(stored.get("coordination") or {})
    for key in LEGACY_COORDINATION:
        if key in stored:
            coordination.setdefault(key, stored.pop(key))
    if coordination:
        stored["coordination"] = coordination
    return load_settings(project_dir, stored=stored)


def agent_types_for(role: str, settings: Settings) -> dict[str, dict[str, Any]]:
    """The built-in roles, plus the task's own role when neither they nor the config know it."""
    types: dict[str, dict[str, Any]] = default_agent_types()
    configured = settings.agents.get(role) or {}
    if role not in types and "system" not in configured:
        types[role] = {"system": GENERIC_ROLE_PROMPT, "specialties": []}
    return types


class AttemptScript(ChatModel):
    """A scripted session seen by one attempt: `role:<task>-a<attempt>` when the session has
    that queue (tests of retries), else `role:<task>` as usual. Each attempt runs in a fresh
    process, so without it every attempt would replay the first one's turns."""

    def __init__(self, inner: ChatModel, task_id: str, fence: int) -> None:
        self.inner = inner
        self.provider, self.model = inner.provider, inner.model
        self.task_id, self.attempt = task_id, f"{task_id}-a{fence}"

    def complete(self, system: str, messages: Sequence[Message], *,
                 tools: Sequence[ToolSpec] = (), output_schema: Mapping[str, Any] | None = None,
                 key: str | None = None) -> Reply:
        role, task = split_key(key)
        remaining = getattr(self.inner, "remaining", None)
        if role is not None and task == self.task_id and callable(remaining) and (
                f"{role}:{self.attempt}" in remaining()):
            key = f"{role}:{self.attempt}"
        return self.inner.complete(system, messages, tools=tools, output_schema=output_schema,
                                   key=key)


class JobPrompts:
    """The team's seams for a job task: the core's prompts, plus the job's context files and
    metadata, which the state document has no place for."""

    def __init__(self, task: JobTask, worktree: Path) -> None:
        self.task, self.worktree = task, worktree
        self.team: Team | None = None
        self.run: RunContext | None = None

    def call_agent(self, agent_id: str, role: Any, prompt: str | None = None,
                   system_prompt: str | None = None) -> str:
        pending = pending_request()
        if pending is not None:
            team, run, request = pending
            return perform(team, run, request).text
        assert self.team is not None and self.run is not None
        name = str(role.get("assigned_to") if isinstance(role, Mapping) else role)
        request = ModelRequest(role=name, conversation=agent_id,
                               system=system_prompt or self._get_system_prompt(name),
                               messages=[Message.user(prompt or "")])
        return perform(self.team, self.run, request).text

    def _get_system_prompt(self, agent_id: str) -> str:
        assert self.team is not None
        return system_prompt(self.team, agent_id)

    def _build_task_prompt(self, task: TaskRecord) -> str:
        assert self.run is not None
        lines = [task_prompt(self.run, task)]
        for name in self.task.context_files:
            path = self.worktree / name
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")[:MAX_CONTEXT_CHARS]
                lines += ["", f"Context file {name}:", text]
            else:
                lines += ["", f"Context file {name} does not exist yet."]
        if self.task.metadata:
            lines += ["", f"Metadata: {json.dumps(self.task.metadata, default=str)[:2000]}"]
        return "\n".join(lines)


@dataclass
class Attempt:
    """The team, the run and the store of one claimed task."""

    team: Team
    run: RunContext
    store: JobRunStore
    task: TaskRecord

    def close(self) -> None:
        self.run.events.close()


def open_attempt(queue: TaskQueue, claim: Claim, job: JobRecord, *, repo_root: Path,
                 worktree: Path, start: str, log_path: Path,
                 model: ChatModel | None = None) -> Attempt:
    """Build the team and the run of `claim` (nothing runs yet; the sandbox is checked)."""
    task, fence = claim.task, claim.fence
    settings = job_settings(job, repo_root)
    role = role_name(task.role)
    prompts = JobPrompts(task, worktree)
    if model is None and settings.api_provider == "scripted" and settings.session:
        model = AttemptScript(create_model("scripted", session=settings.session),
                              task_key(task.id), fence)
    team = build_team(repo_root, settings, name="job-worker",
                      agent_types=agent_types_for(role, settings), model=model,
                      output=lambda line: None, seams=prompts)
    parents = [queue.store.get_task(d) for d in task.dependencies]
    run_id = f"job-{job.id}-task-{task.id}-a{fence}"
    store = JobRunStore(queue, claim, initial_document(job, task, parents, run_id=run_id,
                                                       fence=fence))
    run = new_run(team, run_id=run_id, store=store)
    run.events = EventLog(log_path, run_id=run_id)
    run.feature, run.feature_branch = job.goal, job.job_branch
    run.base_branch, run.base_commit = job.base_branch or "HEAD", job.base_commit or start
    run.budget = BudgetGuard(settings.limits, {**job.usage, "cost_usd": job.cost_usd})
    run.began = True
    prompts.team, prompts.run = team, run

    def on_lost() -> None:
        run.trip(LeaseLost(task.id, fence))  # the agent stops at its next turn

    store.on_lost = on_lost

    def on_retry(role: str, attempt: int, delay: float, error: Exception) -> None:
        run.events.emit("retry", role=role, attempt=attempt, delay_s=round(delay, 2),
                        error=str(error))

    team.models.add_retry_listener(on_retry)
    attempt = Attempt(team, run, store, store.own_task())
    try:
        preflight_checks(team)
        unconfined = require_sandbox(team.sandbox)
    except Exception:
        attempt.close()
        raise
    if unconfined:
        run.events.emit("sandbox_off", message=unconfined)
        queue.store.events.add("sandbox_off", unconfined, job_id=job.id, task_id=task.id,
                              worker_id=claim.worker_id)
    run.events.emit("run_started", feature=job.goal, branch=job.job_branch,
                    base_branch=run.base_branch, orchestrator=team.name,
                    provider=team.models.provider, resumed=fence > 1)
    return attempt
