"""The tool-use loop of one agent: ask the model, run its tool calls, repeat until finish_task.

Everything the orchestrator adds (budgets, stuck detection, guidance, progress records) plugs
in through `AgentHooks`, so this loop stays one short function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MaxTurnsExceeded
from .models import MAX_TOKENS, ChatModel, Message, Reply, ToolCall, Usage
from .toolbox import Toolbox, ToolResult

NO_TOOL_CALL_REMINDER = (
    "Your reply had no tool call. Keep working with the tools; when the task is done, or "
    "cannot be done, end it by calling finish_task with your report."
)
CUT_OFF_REMINDER = (
    "Your reply was cut off at the output token limit before it was complete. Use smaller "
    "steps: write large files in parts (write_file, then edit_file) and keep text short. "
    "End the task by calling finish_task with your report."
)
SKIPPED_AFTER_FINISH = "Not run: finish_task already ended the task earlier in this reply."
CUT_OFF_CALL = (
    "Not run: your reply was cut off at the output token limit while this call was being "
    "written, so its arguments may be incomplete. Send it again, smaller: write large files "
    "in parts (write_file, then edit_file)."
)


@dataclass(frozen=True)
class AgentResult:
    """A finished agent: its validated report and what it cost."""

    report: dict[str, Any]
    turns: int
    usage: Usage
    messages: tuple[Message, ...]
    tool_calls: int


class AgentHooks:
    """Points where the orchestrator watches or steers a running agent; all no-ops here."""

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        """Called before each request; raise UsageLimitExceeded to stop before spending."""

    def after_model_call(self, turn: int, reply: Reply) -> None:
        """Called with every reply, including its usage (the place to account tokens)."""

    def after_tool_call(self, turn: int, call: ToolCall, result: ToolResult) -> None:
        """Called after each tool call has run."""

    def extra_messages(self, turn: int) -> list[Message]:
        """Messages to append before the request of `turn` (a nudge, guidance)."""
        return []


def run_agent(
    model: ChatModel,
    system: str,
    prompt: str,
    toolbox: Toolbox,
    *,
    max_turns: int = 30,
    hooks: AgentHooks | None = None,
) -> AgentResult:
    """Run one agent until a successful finish_task; raise MaxTurnsExceeded after max_turns.

    A turn is one model request. Tool errors go back to the model as error results, and so
    does the last call of a reply cut at the output token limit, which is not run; model and
    hook exceptions propagate.
    """
    hooks = hooks or AgentHooks()
    messages: list[Message] = [Message.user(prompt)]
    usage = Usage()
    tool_calls = 0
    for turn in range(1, max_turns + 1):
        messages.extend(hooks.extra_messages(turn))
        hooks.before_model_call(turn, tuple(messages))
        reply = model.complete(system, tuple(messages), tools=toolbox.specs)
        usage += reply.usage
        hooks.after_model_call(turn, reply)
        messages.append(Message.assistant(reply.text, reply.tool_calls))
        if not reply.tool_calls:
            cut = reply.stop_reason == MAX_TOKENS
            messages.append(Message.user(CUT_OFF_REMINDER if cut else NO_TOOL_CALL_REMINDER))
            continue
        report: dict[str, Any] | None = None
        # A reply cut at the token limit ends inside its last call: never run half a call.
        cut_call = reply.tool_calls[-1] if reply.stop_reason == MAX_TOKENS else None
        for call in reply.tool_calls:
            if report is not None:
                messages.append(Message.tool(call, SKIPPED_AFTER_FINISH, is_error=True))
                continue
            if call is cut_call:
                messages.append(Message.tool(call, CUT_OFF_CALL, is_error=True))
                continue
            result = toolbox.call(call)
            tool_calls += 1
            messages.append(Message.tool(call, result.content, is_error=result.is_error))
            hooks.after_tool_call(turn, call, result)
            if result.finished:
                report = result.report or {}
        if report is not None:
            return AgentResult(report, turn, usage, tuple(messages), tool_calls)
    raise MaxTurnsExceeded(
        f"The agent used all {max_turns} turns without calling finish_task successfully. "
        "Split the task into smaller ones or raise max_turns.",
        turns=max_turns,
    )
