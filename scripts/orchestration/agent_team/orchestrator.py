"""The facade every orchestrator shares: the usage guide's seams over the team and its runs.

A `BaseOrchestrator` builds a `Team` (frozen) and, per run, a `RunContext`; its methods are the
seams the guide shows (`run`, `manager_create_tasks`, `agent_execute_task`,
`manager_integrate`, `call_agent`, `get_agent_types`, `_build_task_prompt`,
`_get_system_prompt`, ...) and each delegates to a plain step function in `steps_*.py`.
Subclass it and override any seam; the steps call the overrides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .agent_calls import ModelRequest, pending_request, perform
from .git_workspace import GitWorkspace
from .models import ChatModel, Message
from .plan import Plan
from .progress import ProgressDisplay
from .prompts import system_prompt, task_prompt
from .roles import MANAGER, default_agent_types
from .run_context import RunContext
from .run_frame import begin_feature, check_feature, locked_run, new_run, preflight_checks
from .settings import Settings
from .state import TeamState
from .steps_integrate import integrate
from .steps_plan import plan_feature, plan_prompt, record_plan, task_branch
from .task_record import TaskRecord
from .team import Team, build_team, load_settings

__all__ = ["BaseOrchestrator"]


class BaseOrchestrator:
    """Shared seams; subclasses decide where and in which order tasks run."""

    orchestrator_name = "base"

    def __init__(
        self,
        project_dir: str | Path,
        *,
        model: ChatModel | None = None,
        settings: Settings | None = None,
        config_path: str | Path | None = None,
        api_provider: str | None = None,
        model_name: str | None = None,
        base_url: str | None = None,
        session: str | Path | None = None,
        test_command: str | None = None,
        max_iterations: int | None = None,
        limits: Mapping[str, Any] | None = None,
        output: Callable[[str], None] | None = None,
        record: str | Path | None = None,
        progress: ProgressDisplay | None = None,
        stored_settings: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> None:
        root = Path(project_dir).expanduser().resolve()
        if settings is None:
            settings = load_settings(root, config_path=Path(config_path) if config_path else None,
                                     stored=stored_settings, overrides={
                "api_provider": api_provider, "model": model_name, "base_url": base_url,
                "session": str(session) if session else None, "test_command": test_command,
                "coordination": {"max_iterations": max_iterations},
                "limits": dict(limits or {}),
            })
        self.project_dir = root
        self.team: Team = build_team(
            root, settings, name=self.orchestrator_name, agent_types=self.get_agent_types(),
            model=model, output=output, progress=progress, record=record, seams=self)
        self.current: RunContext = new_run(self.team, run_id=run_id)
        self._responses: dict[str, list[str]] = {}
        self._frame: contextlib.ExitStack | None = None

    # -- what a subclass reads -------------------------------------------------------------

    @property
    def git(self) -> GitWorkspace:
        return self.team.git

    @property
    def state(self) -> TeamState:
        """The state file (a facade's runs always keep theirs there)."""
        store = self.current.store
        assert isinstance(store, TeamState)
        return store

    @property
    def feature_branch(self) -> str:
        return self.current.feature_branch

    @property
    def integration_worktree(self) -> Path | None:
        return self.current.integration_worktree

    def log(self, message: str) -> None:
        """A progress line, to the event log and the console."""
        self.current.log(message)

    # -- roles and prompts -----------------------------------------------------------------

    def get_agent_types(self) -> dict[str, dict[str, Any]]:
        """Worker roles the manager can assign: {role: {"system": ..., "specialties": [...]}}.

        Override to build a team of your own; the manager is always added.
        """
        return default_agent_types()

    def _get_system_prompt(self, agent_id: str) -> str:
        """The system prompt of a role: its own text, the working rules, the project context."""
        return system_prompt(self.team, agent_id)

    def _build_task_prompt(self, task: TaskRecord) -> str:
        """What the agent is asked to do, with its dependencies' real results and decisions."""
        return task_prompt(self.current, task)

    # -- model calls -----------------------------------------------------------------------

    def call_agent(self, agent_id: str, role: str | TaskRecord, prompt: str | None = None,
                   system_prompt: str | None = None) -> str:
        """One model call; returns the reply text. Every call of the run passes here.

        `call_agent(agent_id, role, prompt, system_prompt)` is one request without tools
        (custom phases such as an architect review). `call_agent(agent_id, task)` asks the
        task's role about the task. Override it to count, filter or refuse calls: raising a
        plain exception stops the run cleanly, like a budget.
        """
        pending = pending_request()
        if pending is not None and pending[2].conversation == agent_id:
            team, run, request = pending
            return perform(team, run, request).text
        if not isinstance(role, str):  # the guide's two-argument form: (agent_id, task)
            task = role
            role = task.get("assigned_to") or agent_id
            prompt = self._build_task_prompt(task) if prompt is None else prompt
        system = system_prompt if system_prompt is not None else self._get_system_prompt(role)
        request = ModelRequest(role=role, conversation=agent_id, system=system,
                               messages=[Message.user(prompt or "")])
        return perform(self.team, self.current, request).text

    def _is_repetitive(self, response: str, agent_id: str) -> bool:
        """Whether `agent_id` gave this response before (the guide's loop check)."""
        seen = self._responses.setdefault(agent_id, [])
        repeated = response.strip() in seen
        seen.append(response.strip())
        return repeated

    def manager_resolve(self, task: TaskRecord, response: str) -> str:
        """The manager's guidance for an agent that repeats itself on `task`."""
        description = task.get("description", "") if isinstance(task, Mapping) else str(task)
        task_id = task.get("task_id", "task") if isinstance(task, Mapping) else "task"
        prompt = (f"An agent working on {task_id} - {description} keeps answering:\n\n"
                  f"{response[:4000]}\n\nGive it short, concrete guidance to make progress.")
        return self.call_agent(f"guidance-{task_id}", MANAGER, prompt,
                               self._get_system_prompt(MANAGER)).strip()

    # -- planning and integration ----------------------------------------------------------

    def _build_plan_prompt(self, feature: str) -> str:
        """What the manager is asked when it plans `feature`."""
        return plan_prompt(self.team, feature)

    def plan_feature(self, feature: str) -> Plan:
        """The manager's validated plan for `feature` (nothing recorded)."""
        return plan_feature(self.team, self.current, feature,
                            prompt=self._build_plan_prompt(feature))

    def manager_create_tasks(self, feature: str) -> list[TaskRecord]:
        """Plan the feature, write tasks and decisions to the state file, return the tasks."""
        self._ensure_begun(feature)
        plan = self.plan_feature(feature)
        return record_plan(self.current, plan, self.task_branch)

    def manager_integrate(self, tasks: list[TaskRecord]) -> dict[str, Any]:
        """Run the tests on the merged branch, review it, record the verdict."""
        worktree = self.current.integration_worktree
        if worktree is None:
            raise RuntimeError("manager_integrate needs the run's integration worktree")
        return integrate(self.team, self.current, worktree)

    def task_branch(self, task: TaskRecord) -> str:
        return task_branch(self.current, task)

    def _dependencies_satisfied(self, task: TaskRecord,
                                results: list[dict[str, Any]]) -> bool:
        """Whether every dependency of `task` is among `results` as completed."""
        done = {r.get("task_id") for r in results if r and r.get("status") == "completed"}
        return all(dep in done for dep in task.get("dependencies") or [])

    # -- runs ------------------------------------------------------------------------------

    def _ensure_begun(self, feature: str) -> None:
        """A seam called outside `run()` (a subclass's own driver) begins the run itself; it
        ends with `close()`, or when `run()` is called next."""
        if not self.current.began:
            self._frame = contextlib.ExitStack()
            self._start(feature, self._frame)

    def _start(self, feature: str, frame: contextlib.ExitStack) -> RunContext:
        """Checks, the run lock and the feature's records: the beginning of every run."""
        run = self.current
        if run.began:
            run = self.current = new_run(self.team)
        check_feature(self.team, run, feature)
        preflight_checks(self.team)
        frame.enter_context(locked_run(self.team, run))
        begin_feature(self.team, run, feature)
        return run

    def close(self) -> None:
        """End a run that a subclass's own driver began (releases the run lock)."""
        frame, self._frame = self._frame, None
        if frame is not None:
            frame.close()
