"""What every orchestrator shares: setup, models per role, the manager's plan, prompts,
running one agent on one task, committing its work, running the tests, and the summary.

`SimpleOrchestrator` and `FileBasedOrchestrator` subclass `BaseOrchestrator`; so do users.
The method names are the seams the usage guide shows (`run`, `manager_create_tasks`,
`agent_execute_task`, `manager_integrate`, `call_agent`, `get_agent_types`,
`_build_task_prompt`, `_get_system_prompt`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock

from . import report as report_mod
from .agent_loop import AgentHooks, AgentResult, run_agent
from .budget import FREE_PROVIDERS, BudgetGuard, estimate_cost, price_for
from .config import Config, build_config
from .errors import (
    EXIT_BUDGET,
    EXIT_FAILED,
    AgentStuck,
    AgentTeamError,
    ConfigError,
    GitError,
    PlanError,
    StateLockedError,
    UsageLimitExceeded,
)
from .git_workspace import GitWorkspace, slugify
from .models import ChatModel, Message, Reply, create_model, detect_provider
from .plan import Plan, parse_plan, plan_output_schema
from .roles import MANAGER, Role, build_roles, default_agent_types, load_prompt, read_context
from .state import TeamState, new_state, utc_now
from .stuck import StuckDetector, StuckEscalation, StuckHooks, guidance_prompt
from .testrun import TestResults, detect_test_command, run_tests
from .tools import Workspace, build_toolbox

AGENT_EMAIL_DOMAIN = "agent-team.invalid"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "0.0.0.0")


class BaseOrchestrator:
    """Shared machinery; subclasses decide where and in which order tasks run."""

    orchestrator_name = "base"

    def __init__(
        self,
        project_dir: str | Path,
        *,
        model: ChatModel | None = None,
        config: Config | None = None,
        config_path: str | Path | None = None,
        api_provider: str | None = None,
        model_name: str | None = None,
        base_url: str | None = None,
        session: str | Path | None = None,
        test_command: str | None = None,
        max_iterations: int | None = None,
        limits: Mapping[str, Any] | None = None,
        output: Callable[[str], None] | None = None,
    ) -> None:
        self.project_dir = Path(project_dir).expanduser().resolve()
        self.git = GitWorkspace(self.project_dir)
        self.config = config or build_config(
            project_dir=self.project_dir,
            config_path=Path(config_path) if config_path else None,
            overrides={
                "api_provider": api_provider,
                "model": model_name,
                "base_url": base_url,
                "session": str(session) if session else None,
                "test_command": test_command,
                "coordination": {"max_iterations": max_iterations},
                "limits": dict(limits or {}),
            },
        )
        self.output = output or (lambda line: print(line, flush=True))
        self._injected_model = model
        self.provider = self._resolve_provider(model)
        self.state = TeamState.for_project(self.project_dir, create=False, must_exist=False)
        self._models: dict[str, ChatModel] = {}
        self._models_lock = threading.Lock()
        self._roles: dict[str, Role] | None = None
        self._call_options = threading.local()
        self._run_lock: filelock.BaseFileLock | None = None
        self.run_id = ""
        self.feature_branch = ""
        self.base_branch = ""
        self.started = 0.0
        self.budget = BudgetGuard(self.config.limits)

    # -- configuration ---------------------------------------------------------------------

    def _resolve_provider(self, model: ChatModel | None) -> str:
        if model is not None:
            return model.provider
        provider = self.config["api_provider"] or detect_provider()
        if provider is None:
            raise ConfigError(
                "No model provider: set ANTHROPIC_API_KEY or OPENAI_API_KEY in the environment, "
                "or pass --api-provider (anthropic, openai, or scripted with --session FILE). "
                "To try the tool offline without a key, run with --demo."
            )
        return provider

    @property
    def roles(self) -> dict[str, Role]:
        if self._roles is None:
            self._roles = build_roles(self.get_agent_types(), self.config.agents)
        return self._roles

    def get_agent_types(self) -> dict[str, dict[str, Any]]:
        """Worker roles the manager can assign: {role: {"system": ..., "specialties": [...]}}.

        Override to build a team of your own; the manager is always added.
        """
        return default_agent_types()

    def model_for(self, role: str) -> ChatModel:
        """The model adapter for a role, built once and shared by that role's agents."""
        if self._injected_model is not None:
            return self._injected_model
        spec = self.roles[role] if role in self.roles else Role(role, "")
        provider = spec.provider or self.provider
        with self._models_lock:
            key = f"{provider}|{spec.model}|{spec.base_url}|{spec.max_tokens}|{spec.temperature}"
            if key not in self._models:
                self._models[key] = create_model(
                    provider,
                    model=spec.model or self.config["model"],
                    base_url=spec.base_url or self.config["base_url"],
                    session=self.config["session"],
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    retry=self.config["retry"],
                    on_retry=lambda n, delay, error: self.log(
                        f"{role}: API error ({error}); retry {n} in {delay:.1f}s"
                    ),
                )
                if provider == "scripted":
                    # One replay shared by all roles, so every queue is consumed once.
                    self._models = {k: self._models[key] for k in (key, "scripted")}
            if provider == "scripted" and "scripted" in self._models:
                return self._models["scripted"]
            return self._models[key]

    # -- model calls -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _structured_output(self, schema: Mapping[str, Any]) -> Iterator[None]:
        """Ask the next call_agent() on this thread for JSON matching `schema`."""
        self._call_options.output_schema = schema
        try:
            yield
        finally:
            self._call_options.output_schema = None

    def call_agent(self, agent_id: str, role: str, prompt: str, system_prompt: str) -> str:
        """One request to a role's model without tools; returns the reply text.

        Used for the manager's planning and integration, and for custom phases such as an
        architect review. `agent_id` names the conversation (scripted sessions key on it).
        """
        model = self.model_for(role).for_agent(role, None if agent_id == role else agent_id)
        schema = getattr(self._call_options, "output_schema", None)
        messages = [Message.user(prompt)]
        self.check_budget(role, system_prompt, messages)
        reply = model.complete(system_prompt, messages, output_schema=schema)
        self.record_usage(role, None, reply, model)
        return reply.text

    def record_usage(
        self, role: str, task_id: str | None, reply: Reply, model: ChatModel
    ) -> None:
        """Add one call's real token counts (and cost estimate) to the state file."""
        local = any(host in (self.config["base_url"] or "") for host in LOCAL_HOSTS)
        cost = estimate_cost(
            model.provider, reply.model or model.model, reply.usage,
            self.config["prices"], local=local,
        )
        counts = reply.usage.to_dict()
        self.budget.record(reply.usage, cost)

        def apply(state: dict[str, Any]) -> None:
            known = any(t["task_id"] == task_id for t in state["tasks"])
            TeamState.add_usage_to(
                state, role, counts, cost_usd=cost, task_id=task_id if known else None
            )

        self.state.update(apply)

    def check_budget(self, role: str, system: str, messages: Sequence[Message]) -> None:
        """Refuse the next request when it would go over a limit (UsageLimitExceeded)."""
        if not self.budget.active and self.budget.tripped is None:
            return
        chars = len(system) + sum(
            len(m.content) + sum(len(json.dumps(c.arguments)) for c in m.tool_calls)
            for m in messages
        )
        self.budget.check(request_chars=chars, input_price=self._input_price(role))

    def _input_price(self, role: str) -> float | None:
        model = self.model_for(role)
        prices = price_for(model.provider, model.model, self.config["prices"])
        return prices["input"] if prices else None

    def check_prices_for_cost_limit(self) -> None:
        """A cost limit needs a price for every model in use: refuse to start without one."""
        if self.config.limits.get("cost_limit_usd") is None:
            return
        for role in self.roles:
            model = self.model_for(role)
            local = any(host in (self.config["base_url"] or "") for host in LOCAL_HOSTS)
            if model.provider in FREE_PROVIDERS or local:
                continue
            if price_for(model.provider, model.model, self.config["prices"]) is None:
                raise ConfigError(
                    f"cost_limit_usd is set, but model {model.model!r} ({model.provider}) used "
                    f"by {role} has no price in the table, so its cost cannot be counted. Add "
                    f"\"prices\": {{\"{model.provider}/{model.model}\": {{\"input\": ..., "
                    "\"output\": ...}}} (USD per million tokens) to orchestrator-config.json."
                )

    # -- planning --------------------------------------------------------------------------

    def _build_plan_prompt(self, feature: str) -> str:
        workers = {name: role for name, role in self.roles.items() if name != MANAGER}
        team = "\n".join(
            f"- {name}: {', '.join(role.specialties) or 'general development'}"
            for name, role in workers.items()
        )
        files = self.git.tracked_files(limit=200)
        context = read_context(self.project_dir)
        return (
            f"Feature to build:\n{feature}\n\n"
            f"Your team (assign each task to one of these roles):\n{team}\n\n"
            f"Files in the repository ({len(files)} shown):\n"
            + "\n".join(f"- {f}" for f in files)
            + (f"\n\nProject context:\n{context}" if context else "")
            + "\n\nReturn the plan as one JSON object: {\"tasks\": [{\"task_id\", \"description\", "
            "\"assigned_to\", \"dependencies\", \"deliverables\", \"priority\"}], \"decisions\": "
            "[{\"decision\", \"rationale\", \"affected_agents\"}]}."
        )

    def plan_feature(self, feature: str) -> Plan:
        """Ask the manager for a plan; send invalid plans back with the exact errors."""
        workers = [name for name in self.roles if name != MANAGER]
        attempts = int(self.config.coordination["max_plan_attempts"])
        max_tasks = int(self.config.coordination["max_tasks"])
        base_prompt = prompt = self._build_plan_prompt(feature)
        system = self._get_system_prompt(MANAGER)
        errors: list[str] = []
        for attempt in range(1, attempts + 1):
            self.log(f"Calling manager for a plan (attempt {attempt}/{attempts})...")
            with self._structured_output(plan_output_schema(workers)):
                reply = self.call_agent("plan", MANAGER, prompt, system)
            try:
                return parse_plan(reply, workers, max_tasks=max_tasks)
            except PlanError as exc:
                errors = exc.errors
                self.log(f"Plan rejected: {'; '.join(errors)}")
                self._note("manager", None, "plan_rejected", "Plan rejected", {"errors": errors})
                prompt = (
                    f"{base_prompt}\n\nYour previous answer was:\n{reply[:8000]}\n\n"
                    "It cannot be used because:\n" + "\n".join(f"- {e}" for e in errors)
                    + "\n\nReturn a corrected plan as one JSON object."
                )
        raise PlanError(
            f"The manager's plan was still invalid after {attempts} attempt(s): "
            + "; ".join(errors),
            errors,
        )

    def manager_create_tasks(self, feature: str) -> list[dict[str, Any]]:
        """Plan the feature, write tasks and decisions to the state file, return the tasks."""
        plan = self.plan_feature(feature)
        tasks = [task.to_state() for task in plan.order()]

        def apply(state: dict[str, Any]) -> None:
            state["tasks"] = tasks
            now = utc_now()
            state["decisions"].extend(
                {
                    "decision": d.decision,
                    "rationale": d.rationale,
                    "affected_agents": list(d.affected_agents),
                    "made_by": MANAGER,
                    "timestamp": now,
                }
                for d in plan.decisions
            )

        self.state.update(apply)
        self.log(f"{len(tasks)} tasks created: " + ", ".join(
            f"{t['task_id']} ({t['assigned_to']})" for t in tasks
        ))
        return tasks

    # -- prompts ---------------------------------------------------------------------------

    def _get_system_prompt(self, agent_id: str) -> str:
        """The system prompt of a role: its own text, the working rules, the project context."""
        role = self.roles.get(agent_id)
        text = role.system_prompt if role else f"You are the team's {agent_id}."
        if agent_id != MANAGER:
            text += "\n\n" + load_prompt("worker-rules")
        context = read_context(self.project_dir)
        if context:
            text += f"\n\nProject context (from .ai-agents/context/):\n\n{context}"
        return text

    def _build_task_prompt(self, task: Mapping[str, Any]) -> str:
        """What the agent is asked to do, with its dependencies' real results and decisions."""
        state = self.state.read()
        by_id = {t["task_id"]: t for t in state["tasks"]}
        lines = [
            f"Task: {task['task_id']} - {task['description']}",
            f"Feature: {state['current_feature']['title']}" if state["current_feature"] else "",
            f"Branch: {task.get('branch') or self.feature_branch}",
        ]
        if task.get("deliverables"):
            lines += ["", "Deliverables:"] + [f"- {d}" for d in task["deliverables"]]
        deps = [by_id[d] for d in task.get("dependencies", []) if d in by_id]
        if deps:
            lines += ["", "Work already done by the tasks you depend on (it is in your tree):"]
            for dep in deps:
                result = dep.get("result") or {}
                files = ", ".join(result.get("files_modified", [])) or "no files"
                summary = result.get("summary") or dep["description"]
                lines.append(f"- {dep['task_id']} ({dep['assigned_to']}): {summary} [{files}]")
        if state["decisions"]:
            lines += ["", "Team decisions to follow:"]
            lines += [f"- {d['decision']} ({d.get('rationale', '')})" for d in state["decisions"]]
        if task.get("additional_context"):
            lines += ["", f"Guidance: {task['additional_context']}"]
        if task.get("last_error"):
            lines += ["", f"A previous attempt failed: {task['last_error']}"]
        lines += ["", "Make the changes with the tools, check them, then call finish_task."]
        return "\n".join(line for line in lines if line is not None)

    # -- running one agent -----------------------------------------------------------------

    def agent_email(self, role: str) -> str:
        return f"{role}@{AGENT_EMAIL_DOMAIN}"

    def make_hooks(self, role: str, task_id: str, model: ChatModel) -> AgentHooks:
        """Hooks that keep the state file's live view and usage up to date and catch loops."""
        coordination = self.config.coordination
        detector = StuckDetector(int(coordination["stuck_repeat_limit"]),
                                 int(coordination["stuck_idle_turns"]))

        def on_stuck(action: str, reason: str) -> None:
            self.log(f"{self.agent_id(role, task_id)} looks stuck ({action}): {reason}")
            self._note(role, task_id, f"stuck_{action}", reason)

        return StuckHooks(_StateHooks(self, role, task_id, model), detector, on_stuck=on_stuck)

    def run_task_agent(self, task: Mapping[str, Any], workspace: Path) -> AgentResult:
        """Run the task's agent with tools confined to `workspace` until it finishes.

        An agent that keeps looping after a nudge is escalated: the manager is asked for
        guidance and the agent gets one more try with it; a second loop fails the task.
        """
        role = self.roles[task["assigned_to"]]
        task_id = task["task_id"]
        model = self.model_for(role.name).for_agent(role.name, task_id)
        toolbox = build_toolbox(
            Workspace(workspace),
            on_update=lambda status, message, details=None: self._note(
                role.name, task_id, status, message, details
            ),
            command_timeout=float(self.config.coordination["command_timeout_seconds"]),
        )
        max_turns = int(role.max_turns or self.config.coordination["max_iterations"])
        system = self._get_system_prompt(role.name)

        def attempt(view: Mapping[str, Any]) -> AgentResult:
            return run_agent(model, system, self._build_task_prompt(view), toolbox,
                             max_turns=max_turns,
                             hooks=self.make_hooks(role.name, task_id, model))

        try:
            return attempt(task)
        except StuckEscalation as stuck:
            self._note(MANAGER, task_id, "stuck_guidance_requested", stuck.reason,
                       {"transcript_tail": list(stuck.transcript_tail)})
            guidance = self.call_agent(
                f"guidance-{task_id}", MANAGER,
                guidance_prompt(f"{task_id} - {task['description']}", stuck),
                self._get_system_prompt(MANAGER),
            ).strip()
            self.log(f"{task_id}: retrying once with the manager's guidance")
            retry = {**task, "additional_context": guidance, "last_error": stuck.reason}
        try:
            return attempt(retry)
        except StuckEscalation as again:
            self._note(role.name, task_id, "stuck_fail", again.reason)
            raise AgentStuck(
                f"{task_id} got stuck again after the manager's guidance: {again.reason}"
            ) from again

    def commit_task(self, task: Mapping[str, Any], workspace: Path, summary: str) -> str | None:
        """Commit everything the agent changed, authored by its role."""
        role = task["assigned_to"]
        title = f"{task['task_id']}: {task['description']}"
        if len(title) > 72:
            title = title[:69] + "..."
        message = f"{title}\n\n{summary}\n\nRole: {role}\nTask: {task['task_id']}\n"
        return self.git.commit_all(
            workspace, message, author_name=role, author_email=self.agent_email(role)
        )

    # -- tests and state helpers -----------------------------------------------------------

    def test_command(self, directory: Path) -> str | None:
        return self.config["test_command"] or detect_test_command(directory)

    def run_project_tests(self, directory: Path, *, ref: str | None = None) -> TestResults | None:
        command = self.test_command(directory)
        if command is None:
            self.log("No test command found; pass --test-command to run tests.")
            return None
        self.log(f"Running tests: {command}")
        results = run_tests(
            command, directory,
            timeout=float(self.config.coordination["test_timeout_seconds"]), ref=ref,
        )
        self.log(f"Tests: {results.describe()}")
        return results

    def set_task(self, task_id: str, **fields: Any) -> None:
        self.state.update(lambda state: TeamState.set_task_in(state, task_id, **fields))

    @staticmethod
    def agent_id(role: str, task_id: str | None) -> str:
        """The key of one agent's live entry: `role@task_id` (several may share a role)."""
        return f"{role}@{task_id}" if task_id else role

    def set_agent(self, agent_id: str, **fields: Any) -> None:
        fields.setdefault("updated_at", utc_now())
        self.state.update(lambda state: TeamState.set_agent_in(state, agent_id, **fields))

    def _note(
        self, agent: str, task_id: str | None, status: str, message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.state.update(
            lambda state: TeamState.append_update_to(
                state, agent, task_id, status, message, dict(details or {})
            )
        )

    def log(self, message: str) -> None:
        self.output(f"[Orchestrator] {message}")

    # -- run lifecycle ---------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, feature: str) -> Iterator[None]:
        """The frame of one run: checks before any write, the run lock, and an honest end.

        Whatever escapes the body (an invalid plan, a crash, Ctrl-C) marks the feature and the
        run record as failed in the state file before it propagates.
        """
        self.check_feature(feature)
        self.check_prices_for_cost_limit()
        with self._locked_run():
            self.begin_feature(feature)
            yield

    @contextlib.contextmanager
    def resuming(self) -> Iterator[dict[str, Any]]:
        """The frame of a resumed run: continue the feature recorded in the state file."""
        feature = self.check_resumable()
        self.check_prices_for_cost_limit()
        with self._locked_run():
            yield self.begin_resume(feature)

    @contextlib.contextmanager
    def _locked_run(self) -> Iterator[None]:
        self.hide_run_files()
        self.acquire_run_lock()
        try:
            yield
        except BaseException as exc:
            self._close_run_after_error(exc)
            raise
        finally:
            self.release_run_lock()

    def check_resumable(self) -> dict[str, Any]:
        """The recorded feature, when it can be resumed; a clear error otherwise."""
        feature = self.state.read()["current_feature"]
        if feature is None:
            raise ConfigError(
                "Nothing to resume: the state file records no feature. Start a run with "
                "--feature \"...\"."
            )
        if feature["status"] == "completed":
            raise ConfigError(
                f"Feature {feature['title']!r} is already completed on {feature['branch']}; "
                "there is nothing to resume."
            )
        if not self.git.branch_exists(feature["branch"]):
            raise ConfigError(
                f"The recorded feature branch {feature['branch']} does not exist (it was "
                "deleted, or planning never finished). Start a new run with --feature."
            )
        return feature

    def begin_resume(self, feature: dict[str, Any]) -> dict[str, Any]:
        """Record a new run of the recorded feature; budgets count what was already spent."""
        self.feature_branch = feature["branch"]
        self.base_branch = feature["base_branch"]
        self.base_commit = feature.get("base_commit") or self.git.merge_base(
            self.feature_branch, self.base_branch)
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.started = time.monotonic()
        now = utc_now()

        def apply(state: dict[str, Any]) -> dict[str, Any]:
            current = state["current_feature"]
            current.update(status="in_progress", stop_reason=None, run_id=self.run_id,
                           updated_at=now, completed_at=None)
            state["runs"].append({
                "run_id": self.run_id, "feature_id": current["id"],
                "orchestrator": self.orchestrator_name, "started_at": now,
                "status": "running",
            })
            return copy.deepcopy(state)

        state = self.state.update(apply)
        self.budget = BudgetGuard(self.config.limits, state["usage"])
        self.log(f"Resuming {self.feature_branch}: {feature['title']}")
        return state

    def check_feature(self, feature: str) -> None:
        """Refuse a run before anything is written: empty feature, taken branch, bad state."""
        if not feature or not feature.strip():
            raise ConfigError("The feature description is empty. Pass --feature \"...\".")
        self.feature_branch = f"feature/{slugify(feature)}"
        if self.git.branch_exists(self.feature_branch):
            raise ConfigError(
                f"Branch {self.feature_branch} already exists, probably from an earlier run of "
                "this feature. Nothing was changed. Delete or rename it "
                f"(git branch -m {self.feature_branch} {self.feature_branch}-old), "
                "or describe the feature differently."
            )
        self.state.read()

    def hide_run_files(self) -> None:
        """Keep worktrees, logs, reports and lock files out of the user's `git status`."""
        for pattern in (
            self.worktree_root_pattern(), "/.ai-agents/logs/", "/.ai-agents/reports/",
            "/.ai-agents/state/*.lock", "/.ai-agents/state/.*.tmp",
        ):
            self.git.exclude(pattern)

    def acquire_run_lock(self) -> None:
        """Refuse to start while another orchestrator runs on this project.

        The lock file lives in the repository's git directory, so it never shows in the
        working tree; the operating system releases it when the process ends, even on a crash.
        """
        lock_path = Path(self.git.common_dir) / "agent-team-run.lock"
        lock = filelock.FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise StateLockedError(
                f"Another orchestrator is already running on {self.project_dir} (it holds "
                f"{lock_path}). Wait for it to finish, or watch it with "
                "`python scripts/orchestration/team.py status`; the lock is released "
                "automatically when that process ends."
            ) from None
        self._run_lock = lock

    def release_run_lock(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def begin_feature(self, feature: str) -> None:
        """Record the feature and a new run in the state file; git is not touched yet.

        Tasks, agents, decisions, merges and usage describe one feature, so they start empty;
        earlier runs stay summarised in `runs`.
        """
        slug = self.feature_branch.split("/", 1)[1]
        self.base_branch = self.git.current_branch() or "HEAD"
        self.run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.started = time.monotonic()
        self.base_commit = base_commit = self.git.head_commit()
        now = utc_now()

        def apply(state: dict[str, Any]) -> None:
            state["current_feature"] = {
                "id": slug,
                "title": feature.strip().splitlines()[0][:200],
                "description": feature.strip(),
                "branch": self.feature_branch,
                "base_branch": self.base_branch,
                "base_commit": base_commit,
                "status": "planning",
                "orchestrator": self.orchestrator_name,
                "run_id": self.run_id,
                "started_at": now,
                "updated_at": now,
                "completed_at": None,
            }
            state["tasks"] = []
            state["agents"] = {}
            state["decisions"] = []
            state["integration"] = {"status": "not_started", "branch": self.feature_branch,
                                    "merges": []}
            limits = state["usage"].get("limits")
            state["usage"] = new_state(state["project_name"])["usage"]
            if limits:
                state["usage"]["limits"] = limits
            state.setdefault("runs", []).append({
                "run_id": self.run_id, "feature_id": slug,
                "orchestrator": self.orchestrator_name, "started_at": now,
                "status": "running",
            })

        self.state.update(apply)
        self.budget = BudgetGuard(self.config.limits)

    def _close_run_after_error(self, exc: BaseException) -> None:
        """Mark the feature and the run as failed (or stopped) after an error escaped."""
        stopped = isinstance(exc, KeyboardInterrupt)
        code = 130 if stopped else getattr(exc, "exit_code", EXIT_FAILED)
        reason = "interrupted" if stopped else fail_message(exc)[:500]

        def apply(state: dict[str, Any]) -> None:
            feature = state.get("current_feature")
            if feature and feature.get("run_id") == self.run_id and feature["status"] not in (
                "completed", "failed", "stopped"
            ):
                feature.update(status="stopped" if stopped else "failed",
                               stop_reason=reason, updated_at=utc_now())
            for run in state.get("runs", []):
                if run["run_id"] == self.run_id and run["status"] == "running":
                    run.update(status="stopped" if stopped else "failed", exit_code=code,
                               finished_at=utc_now())

        if not self.run_id:
            return
        try:
            self.state.update(apply)
        except AgentTeamError as state_error:  # the state file itself is the problem
            self.log(f"Could not record the failed run in the state file: {state_error}")

    def create_feature_branch(self) -> None:
        """Create `feature/<slug>` at the base commit."""
        self.git.create_branch(self.feature_branch, self.base_commit)
        self.log(f"Feature branch {self.feature_branch} created from {self.base_branch}.")

    def stop_for_budget(self, exc: UsageLimitExceeded) -> dict[str, Any]:
        """End the run because a budget was reached: record it, write the summary, exit 3."""
        reason = f"budget: {exc}"
        self.set_feature_status("stopped", stop_reason=reason)
        self._note("orchestrator", None, "stopped", reason,
                   {"limit": exc.limit, "value": exc.value, "maximum": exc.maximum})
        self.log(f"Stopped. {exc} Work so far is committed on the task branches; raise the "
                 "limit and continue with --resume.")
        return self.finish_run("stopped", EXIT_BUDGET)

    def remove_empty_dirs(self, root: Path) -> None:
        """Delete empty directories left under `root` (and `root` itself when empty)."""
        if not root.is_dir():
            return
        found = []
        for directory, subdirs, files in os.walk(root):
            if ".git" in files or ".git" in subdirs:  # a worktree that was kept: leave it be
                subdirs.clear()
                continue
            found.append(Path(directory))
        for directory in reversed(found):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()

    def remove_own_worktree(self, path: Path | None, *, force: bool) -> None:
        """Remove a worktree of the orchestrator's (feature or integration checkout).

        `force` is for a run that ended normally: all work is committed and what is left are
        files the test command wrote. After an error the worktree is kept when it has changes.
        """
        if path is None or not path.exists():
            return
        if self.git.merge_in_progress(path):
            self.git.abort_merge(path)
        try:
            self.git.remove_worktree(path, force=force)
        except GitError as exc:
            self.log(f"Kept worktree {path}: {exc}")

    def worktree_root_pattern(self) -> str:
        root = str(self.config.coordination["worktree_root"]).strip("/")
        return f"/{root}/"

    @property
    def worktree_root(self) -> Path:
        return self.project_dir / str(self.config.coordination["worktree_root"])

    def set_feature_status(self, status: str, **fields: Any) -> None:
        def apply(state: dict[str, Any]) -> None:
            feature = state["current_feature"]
            if feature is None:
                return
            feature["status"] = status
            feature["updated_at"] = utc_now()
            feature.update(fields)

        self.state.update(apply)

    def finish_run(self, status: str, exit_code: int) -> dict[str, Any]:
        """Write the summary (console, Markdown, JSON) and close the run in the state file."""
        duration = time.monotonic() - self.started if self.started else 0.0
        snapshot = self.state.read()
        summary = report_mod.build_summary(snapshot, run_id=self.run_id,
                                           duration_seconds=duration, status=status,
                                           exit_code=exit_code)
        paths = report_mod.write_reports(self.project_dir, self.run_id, summary)

        def apply(state: dict[str, Any]) -> None:
            for run in state.get("runs", []):
                if run["run_id"] == self.run_id:
                    run.update(status=status, exit_code=exit_code, finished_at=utc_now(),
                               report=str(paths["markdown"].relative_to(self.project_dir)),
                               summary=report_mod.compact(summary))

        self.state.update(apply)
        self.output(report_mod.render_console(summary))
        self.log(f"Report written to {paths['markdown']}")
        return summary


class _StateHooks(AgentHooks):
    """Mirror an agent's progress into the state file and account its usage."""

    def __init__(self, orchestrator: BaseOrchestrator, role: str, task_id: str,
                 model: ChatModel) -> None:
        self.orchestrator = orchestrator
        self.role = role
        self.task_id = task_id
        self.model = model
        self.agent = orchestrator.agent_id(role, task_id)
        self.system = orchestrator._get_system_prompt(role)
        self.tokens = 0

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.orchestrator.check_budget(self.role, self.system, messages)

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.orchestrator.record_usage(self.role, self.task_id, reply, self.model)
        self.tokens += reply.usage.total_tokens
        self.orchestrator.set_agent(self.agent, turn=turn, tokens=self.tokens)

    def after_tool_call(self, turn: int, call: Any, result: Any) -> None:
        self.orchestrator.set_agent(self.agent, last_tool=call.name)


def fail_message(exc: BaseException) -> str:
    """A one-line reason for a failed task, with the exception type when it is not ours."""
    if isinstance(exc, AgentTeamError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
