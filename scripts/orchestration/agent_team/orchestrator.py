"""What every orchestrator shares: setup, models per role, the manager's plan, prompts,
running one agent on one task, committing its work, running the tests, and the summary.

`SimpleOrchestrator` and `FileBasedOrchestrator` subclass `BaseOrchestrator`; so do users.
The method names are the seams the usage guide shows (`run`, `manager_create_tasks`,
`agent_execute_task`, `manager_integrate`, `call_agent`, `get_agent_types`,
`_build_task_prompt`, `_get_system_prompt`).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import filelock

from .agent_loop import AgentHooks, AgentResult, run_agent
from .budget import FREE_PROVIDERS, BudgetGuard, estimate_cost, price_for
from .config import Config, build_config
from .errors import (
    AgentStuck,
    ConfigError,
    ModelError,
    PlanError,
)
from .events import EventLog
from .git_workspace import GitWorkspace
from .lifecycle import RunLifecycle, fail_message

__all__ = ["BaseOrchestrator", "fail_message"]
from .models import MAX_TOKENS, ChatModel, Message, Reply, create_model, detect_provider
from .plan import Plan, parse_plan, plan_output_schema
from .process import hide_secrets_from_proc
from .progress import ProgressDisplay
from .recording import RecordingModel, SessionRecorder
from .redaction import redact
from .roles import MANAGER, Role, build_roles, default_agent_types, load_prompt, read_context
from .sandbox import SandboxPolicy
from .state import TeamState, utc_now
from .stuck import StuckDetector, StuckEscalation, StuckHooks, guidance_prompt
from .testrun import TestResults, detect_test_command, run_tests
from .tools import Workspace, build_toolbox

AGENT_EMAIL_DOMAIN = "agent-team.invalid"
LOCAL_HOSTS = ("localhost", "::1", "0.0.0.0")


class BaseOrchestrator(RunLifecycle):
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
        record: str | Path | None = None,
        progress: ProgressDisplay | None = None,
    ) -> None:
        self.project_dir = Path(project_dir).expanduser().resolve()
        hide_secrets_from_proc()  # agents' commands run as the user and could read it there
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
        self.git.guard.policy = self.sandbox_policy  # the user's hooks run in this sandbox
        self.output = output or (lambda line: print(line, flush=True))
        self.recorder = SessionRecorder(Path(record)) if record else None
        self.progress = progress
        self.events = EventLog(None, run_id="")
        if progress is not None:
            self.events.add_listener(progress)
        if model is not None and self.recorder is not None:
            model = RecordingModel(model, self.recorder)
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
                created = create_model(
                    provider,
                    model=spec.model or self.config["model"],
                    base_url=spec.base_url or self.config["base_url"],
                    session=self.config["session"],
                    max_tokens=spec.max_tokens,
                    temperature=spec.temperature,
                    retry=self.config["retry"],
                    timeout=self.config["retry"].get("request_timeout_seconds"),
                    on_retry=lambda n, delay, error: self._on_retry(role, n, delay, error),
                )
                if self.recorder is not None:
                    created = RecordingModel(created, self.recorder)
                self._models[key] = created
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
        started = time.monotonic()
        reply = model.complete(system_prompt, messages, output_schema=schema)
        self._call_options.last_stop_reason = reply.stop_reason
        self.record_usage(role, None, reply, model, duration_s=time.monotonic() - started)
        return reply.text

    def _on_retry(self, role: str, attempt: int, delay: float, error: Exception) -> None:
        self.events.emit("retry", role=role, attempt=attempt, delay_s=round(delay, 2),
                         error=str(error))
        self.log(f"{role}: API error ({error}); retry {attempt} in {delay:.1f}s")

    def ask_manager(self, agent_id: str, prompt: str) -> str:
        """A manager call whose API failure is reported, not raised: the run's results stand.

        Used for the integration review, which comes after every merge and the test run; a
        budget stop still propagates.
        """
        try:
            return self.call_agent(agent_id, MANAGER, prompt, self._get_system_prompt(MANAGER))
        except ModelError as exc:
            self.log(f"The manager's {agent_id} call failed: {exc}")
            return f"The manager's review failed: {redact(str(exc))}"

    def record_usage(
        self, role: str, task_id: str | None, reply: Reply, model: ChatModel, *,
        turn: int | None = None, duration_s: float | None = None,
        agent: tuple[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Add one call's real token counts (and cost estimate) to the state file.

        `agent` is (agent id, fields) for the agent's live entry, written in the same
        transaction: this runs once per model turn, so one state write serves both.
        """
        local = self.is_local(role)
        cost = estimate_cost(
            model.provider, reply.model or model.model, reply.usage,
            self.config["prices"], local=local,
        )
        counts = reply.usage.to_dict()
        self.budget.record(reply.usage, cost)
        self.events.emit(
            "model_call", role=role, task_id=task_id, turn=turn, usage=counts,
            stop_reason=reply.stop_reason, model=reply.model or model.model, cost_usd=cost,
            duration_s=None if duration_s is None else round(duration_s, 3),
        )

        def apply(state: dict[str, Any]) -> None:
            known = any(t["task_id"] == task_id for t in state["tasks"])
            TeamState.add_usage_to(
                state, role, counts, cost_usd=cost, task_id=task_id if known else None
            )
            if agent is not None:
                TeamState.set_agent_in(state, agent[0], **agent[1], updated_at=utc_now())

        self.state.update(apply)

    def is_local(self, role: str) -> bool:
        """Whether the role's model is served from this machine (a local server or proxy)."""
        spec = self.roles.get(role)
        url = (spec.base_url if spec else None) or self.config["base_url"] or os.environ.get(
            "OPENAI_BASE_URL", "")
        host = urlsplit(url).hostname or ""
        return host in LOCAL_HOSTS or host.startswith("127.")

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
            local = self.is_local(role)
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
            self.events.emit("plan_requested", attempt=attempt, max_attempts=attempts)
            self._call_options.last_stop_reason = None
            with self._structured_output(plan_output_schema(workers)):
                reply = self.call_agent("plan", MANAGER, prompt, system)
            was_cut = getattr(self._call_options, "last_stop_reason", None) == MAX_TOKENS
            try:
                return parse_plan(reply, workers, max_tasks=max_tasks)
            except PlanError as exc:
                errors = exc.errors
                if was_cut:
                    errors = [
                        "Your answer was cut off at the output token limit before the plan was "
                        "complete: return a shorter plan (fewer, larger tasks and one-sentence "
                        "descriptions).", *errors]
                self.events.emit("plan_rejected", attempt=attempt, errors=errors)
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
        self.events.emit("plan_accepted", tasks=len(tasks),
                         task_ids=[t["task_id"] for t in tasks],
                         roles=sorted({t["assigned_to"] for t in tasks}))
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
            self.events.emit("stuck", role=role, task_id=task_id, action=action, reason=reason)
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
            sandbox=self.sandbox_policy,
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
            self.events.emit("stuck", role=role.name, task_id=task_id, action="fail",
                             reason=again.reason)
            raise AgentStuck(
                f"{task_id} got stuck again after the manager's guidance: {again.reason}"
            ) from again

    @property
    def sandbox_policy(self) -> SandboxPolicy:
        """The config's sandbox section, for agents' commands, hooks and test runs."""
        return SandboxPolicy.from_config(self.config["sandbox"])

    def task_branch(self, task: Mapping[str, Any]) -> str:
        """`feature/<slug>-agents/<role>/<task>`: git cannot nest refs under `feature/<slug>`."""
        return f"{self.feature_branch}-agents/{task['assigned_to']}/{task['task_id']}"

    def commit_task(self, task: Mapping[str, Any], workspace: Path, summary: str) -> str | None:
        """Commit everything the agent changed, authored by its role.

        The repository's hooks run. When one refuses, the work is saved on
        `<task branch>-hook-refused` without them and CommitRefused is raised: the task fails
        with the hook's output, and nothing it refused reaches the feature branch.
        """
        role = task["assigned_to"]
        title = f"{task['task_id']}: {task['description']}"
        if len(title) > 72:
            title = title[:69] + "..."
        message = f"{title}\n\n{summary}\n\nRole: {role}\nTask: {task['task_id']}\n"
        sha = self.git.commit_all(
            workspace, message, author_name=role, author_email=self.agent_email(role),
            rescue_branch=f"{self.task_branch(task)}-hook-refused",
        )
        if sha is not None:
            self.events.emit("commit", task_id=task["task_id"], role=role, sha=sha,
                             files=self.git.changed_files(f"{sha}^", sha))
        return sha

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
            sandbox=self.sandbox_policy,
        )
        self.events.emit("test_run", command=results.command, exit_code=results.exit_code,
                         passed=results.passed, failed=results.failed,
                         timed_out=results.timed_out)
        self.log(f"Tests: {results.describe()}")
        return results

    def set_task(self, task_id: str, **fields: Any) -> None:
        task = self.state.update(lambda state: TeamState.set_task_in(state, task_id, **fields))
        if "status" in fields:
            self.events.emit("task_status", task_id=task_id, status=fields["status"],
                             error=fields.get("error"), role=(task or {}).get("assigned_to"))

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
        """A progress line: to the event log, and printed (by the display when there is one)."""
        self.events.emit("log", message=message)
        if self.progress is None:
            self.output(f"[Orchestrator] {redact(message)}")

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
        self.started = time.monotonic()

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.orchestrator.check_budget(self.role, self.system, messages)
        self.started = time.monotonic()

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.tokens += reply.usage.total_tokens
        self.orchestrator.record_usage(
            self.role, self.task_id, reply, self.model, turn=turn,
            duration_s=time.monotonic() - self.started,
            agent=(self.agent, {"turn": turn, "tokens": self.tokens}),
        )

    def after_tool_call(self, turn: int, call: Any, result: Any) -> None:
        self.orchestrator.events.emit("tool_call", role=self.role, task_id=self.task_id,
                                      turn=turn, tool=call.name, is_error=result.is_error)
        self.orchestrator.set_agent(self.agent, last_tool=call.name)
