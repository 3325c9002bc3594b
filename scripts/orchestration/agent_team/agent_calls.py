"""Every model call of a run, one path: the seam, the stop token and budget, the call, usage.

The usage guide's seam is `call_agent(agent_id, role, prompt, system_prompt) -> str`, and a
subclass that overrides it must see every call the run makes: planning, each task agent's
turns, conflict resolution, the integration review. So each call is a `ModelRequest`; `ask`
makes it the pending request and calls the seam; the base `call_agent` performs the pending
request (with its tools and output schema) and leaves the full reply on it. An override that
raises a plain exception stops the run like a budget (exit 3, work kept).
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import state_ops
from .budget import estimate_cost
from .errors import AgentTeamError, UsageLimitExceeded
from .models import ChatModel, Message, Reply, ToolSpec, agent_key
from .run_context import PendingUsage, RunContext
from .state_schema import utc_now
from .team import Team


@dataclass
class ModelRequest:
    """One request of one agent. `conversation` names it for scripted sessions and logs."""

    role: str
    conversation: str
    system: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    output_schema: Mapping[str, Any] | None = None
    task_id: str | None = None
    turn: int | None = None
    reply: Reply | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """`role:conversation`, or `role` when the conversation is the role itself."""
        return agent_key(self.role, None if self.conversation == self.role else self.conversation)

    @property
    def prompt(self) -> str:
        """The newest message's text: what the seam's `prompt` argument shows."""
        return self.messages[-1].content if self.messages else ""

    @property
    def agent(self) -> str:
        """The key of the agent's live entry in the state file (`role@task`)."""
        return agent_entry(self.role, self.task_id)


def agent_entry(role: str, task_id: str | None) -> str:
    """The key of one agent's live entry: `role@task_id` (several may share a role)."""
    return f"{role}@{task_id}" if task_id else role


_pending: contextvars.ContextVar[tuple[Team, RunContext, ModelRequest] | None] = (
    contextvars.ContextVar("agent_team_pending_request", default=None))


def pending_request() -> tuple[Team, RunContext, ModelRequest] | None:
    """The request `ask` is making on this thread, for the base `call_agent`."""
    return _pending.get()


def ask(team: Team, run: RunContext, request: ModelRequest) -> Reply:
    """Make one model call through the team's `call_agent` seam (or directly without one)."""
    if team.seams is None:
        return perform(team, run, request)
    token = _pending.set((team, run, request))
    try:
        text = team.seams.call_agent(request.conversation, request.role, request.prompt,
                                     request.system)
    except AgentTeamError:
        raise
    except Exception as exc:  # a subclass's guard said no: a clean stop, not a crash
        raise run.trip(UsageLimitExceeded(
            f"call_agent refused the call for {request.key}: {type(exc).__name__}: {exc}",
            limit="call_agent")) from exc
    finally:
        _pending.reset(token)
    return request.reply if request.reply is not None else Reply(text=str(text))


def perform(team: Team, run: RunContext, request: ModelRequest) -> Reply:
    """The call itself: stop token and budget first, then the model, then the usage."""
    model = team.models.for_role(request.role)
    check_budget(team, run, request)
    started = time.monotonic()
    reply = model.complete(request.system, request.messages, tools=request.tools,
                           output_schema=request.output_schema, key=request.key)
    request.reply = reply
    record_usage(team, run, request, reply, model, duration_s=time.monotonic() - started)
    return reply


def check_budget(team: Team, run: RunContext, request: ModelRequest) -> None:
    """Refuse the call when the run is stopping or it would go over a limit."""
    run.check_stop()
    if not run.budget.active:
        return
    chars = len(request.system) + sum(
        len(m.content) + sum(len(json.dumps(c.arguments)) for c in m.tool_calls)
        for m in request.messages
    )
    try:
        run.budget.check(request_chars=chars, input_price=team.models.input_price(request.role))
    except UsageLimitExceeded as exc:
        raise run.trip(exc) from None


def record_usage(
    team: Team, run: RunContext, request: ModelRequest, reply: Reply, model: ChatModel,
    *, duration_s: float,
) -> None:
    """Count one call's real usage: budget, event log and, in one state write, the totals
    and the agent's live entry (turn and tokens)."""
    cost = estimate_cost(model.provider, reply.model or model.model, reply.usage,
                         team.settings.prices, local=team.models.is_local(request.role))
    counts = reply.usage.to_dict()
    run.budget.record(reply.usage, cost)
    run.events.emit(
        "model_call", role=request.role, task_id=request.task_id, turn=request.turn,
        usage=counts, stop_reason=reply.stop_reason, model=reply.model or model.model,
        cost_usd=cost, duration_s=round(duration_s, 3),
    )
    if not run.began:
        run.pending_usage.append(PendingUsage(request.role, counts, cost))
        return
    ops = [state_ops.usage_op(request.role, counts, cost_usd=cost, task_id=request.task_id,
                              if_known=True)]
    if request.turn is not None:
        ops.append({"op": "turn", "agent": request.agent, "turn": request.turn,
                    "tokens": reply.usage.total_tokens, "updated_at": utc_now()})
    run.store.record(*ops)


class RunModel(ChatModel):
    """The model as one agent of a run sees it: each turn is a `ModelRequest` through `ask`."""

    def __init__(self, team: Team, run: RunContext, role: str, conversation: str,
                 task_id: str | None) -> None:
        self.team, self.run = team, run
        self.role, self.conversation, self.task_id = role, conversation, task_id
        inner = team.models.for_role(role)
        self.provider, self.model = inner.provider, inner.model
        self.turns = 0

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Reply:
        self.turns += 1
        return ask(self.team, self.run, ModelRequest(
            role=self.role, conversation=self.conversation, system=system, messages=messages,
            tools=tools, output_schema=output_schema, task_id=self.task_id, turn=self.turns))
