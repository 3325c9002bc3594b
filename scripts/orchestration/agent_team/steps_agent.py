"""Running one agent on one task: its model, tools, hooks, and the escalation when it loops."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agent_calls import ModelRequest, RunModel, agent_entry, ask
from .agent_loop import AgentHooks, AgentResult, run_agent
from .cli_agents import run_cli_task, worker_spec
from .errors import AgentStuck, StuckEscalation
from .models import Message
from .prompts import system_for, task_prompt_for
from .records import note
from .roles import MANAGER
from .run_context import RunContext
from .stuck import StuckDetector, StuckHooks, guidance_prompt
from .task_record import PromptTask, TaskRecord
from .team import Team
from .toolbox import Tool, Toolbox
from .tools import Workspace, build_toolbox


@dataclass(frozen=True)
class TaskExtras:
    """What a front door adds to a task's agent: more tools (the service's `delegate`) and a
    wrapper around its hooks (transcripts, a per-task deadline). Empty for the plain runs."""

    tools: Sequence[Tool] = ()
    wrap_hooks: Callable[[AgentHooks], AgentHooks] | None = None


class ToolEvents(AgentHooks):
    """Each tool call goes to the event log only: the state file is written once per turn."""

    def __init__(self, run: RunContext, role: str, task_id: str) -> None:
        self.run, self.role, self.task_id = run, role, task_id

    def after_tool_call(self, turn: int, call: Any, result: Any) -> None:
        self.run.events.emit("tool_call", role=self.role, task_id=self.task_id, turn=turn,
                             tool=call.name, is_error=result.is_error)


def agent_hooks(team: Team, run: RunContext, role: str, task_id: str) -> AgentHooks:
    """Tool events plus stuck detection (a nudge first, then escalation)."""
    coordination = team.settings.coordination
    detector = StuckDetector(coordination.stuck_repeat_limit, coordination.stuck_idle_turns)

    def on_stuck(action: str, reason: str) -> None:
        run.events.emit("stuck", role=role, task_id=task_id, action=action, reason=reason)
        run.log(f"{agent_entry(role, task_id)} looks stuck ({action}): {reason}")
        note(run, role, task_id, f"stuck_{action}", reason)

    return StuckHooks(ToolEvents(run, role, task_id), detector, on_stuck=on_stuck)


def task_toolbox(team: Team, run: RunContext, role: str, task_id: str,
                 workspace: Path, extra_tools: Sequence[Tool] = ()) -> Toolbox:
    def on_update(status: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        note(run, role, task_id, status, message, details)

    return build_toolbox(
        Workspace(workspace),
        on_update=on_update,
        command_timeout=team.settings.coordination.command_timeout_seconds,
        sandbox=team.sandbox,
        extra_tools=extra_tools,
    )


def run_task_agent(team: Team, run: RunContext, task: TaskRecord,
                   workspace: Path, extras: TaskExtras | None = None) -> AgentResult:
    """Run the task's agent with tools confined to `workspace` until it finishes.

    An agent that keeps looping after a nudge is escalated: the manager is asked for
    guidance and the agent gets one more try with it; a second loop fails the task.
    """
    role = team.roles[task["assigned_to"]]
    task_id = task["task_id"]
    worker = worker_spec(team.settings.to_dict(), role.name)
    if worker is not None:  # the role's tasks run in a coding-agent CLI
        return run_cli_task(team, run, worker, task, workspace)
    extras = extras or TaskExtras()
    toolbox = task_toolbox(team, run, role.name, task_id, workspace, extras.tools)
    max_turns = role.max_turns or team.settings.coordination.max_iterations
    system = system_for(team, role.name)

    def attempt(view: TaskRecord) -> AgentResult:
        model = RunModel(team, run, role.name, task_id, task_id)
        hooks = agent_hooks(team, run, role.name, task_id)
        if extras.wrap_hooks is not None:
            hooks = extras.wrap_hooks(hooks)
        return run_agent(model, system, task_prompt_for(team, run, view), toolbox,
                         max_turns=max_turns, hooks=hooks)

    try:
        return attempt(task)
    except StuckEscalation as stuck:
        note(run, MANAGER, task_id, "stuck_guidance_requested", stuck.reason,
             {"transcript_tail": list(stuck.transcript_tail)})
        guidance = ask_manager_for_guidance(team, run, task, stuck)
        run.log(f"{task_id}: retrying once with the manager's guidance")
        retry: PromptTask = {**task, "additional_context": guidance, "last_error": stuck.reason}
    try:
        return attempt(retry)
    except StuckEscalation as again:
        note(run, role.name, task_id, "stuck_fail", again.reason)
        run.events.emit("stuck", role=role.name, task_id=task_id, action="fail",
                        reason=again.reason)
        raise AgentStuck(
            f"{task_id} got stuck again after the manager's guidance: {again.reason}"
        ) from again


def ask_manager_for_guidance(team: Team, run: RunContext, task: TaskRecord,
                             stuck: StuckEscalation) -> str:
    prompt = guidance_prompt(f"{task['task_id']} - {task['description']}", stuck)
    reply = ask(team, run, ModelRequest(
        role=MANAGER, conversation=f"guidance-{task['task_id']}",
        system=system_for(team, MANAGER), messages=[Message.user(prompt)],
        task_id=task["task_id"]))
    return reply.text.strip()
