"""Noticing an agent that goes round in circles, nudging it once, then escalating.

A model that repeats itself rarely stops on its own: it burns turns until `max_turns`. The
detector watches three signs, the hooks turn the first sign into a nudge and the second into
`StuckEscalation`, which the orchestrator answers with the manager's guidance.

Signs (`repeat_limit` and `idle_turns` come from the config's `stuck_*` keys):

- The same tool call (name and canonical JSON of its arguments) as the last `repeat_limit`
  calls in a row, counted across replies, whatever the results were.
- The same reply text (whitespace collapsed, non-empty) in `repeat_limit` turns in a row,
  none of which changed a file; saying "Continuing." while writing files is fine.
- `idle_turns` turns without a file change. Only a successful write_file or edit_file
  changes a file (run_command is not inspected); a turn that tries finish_task is neither
  counted as idle nor resets the count.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence

from .agent_loop import AgentHooks
from .errors import StuckEscalation
from .models import Message, Reply, ToolCall
from .toolbox import ToolResult

FILE_CHANGING_TOOLS = frozenset({"write_file", "edit_file"})
FINISH_TOOL = "finish_task"
TAIL_SIZE = 8
SNIPPET_CHARS = 160

OnStuck = Callable[[str, str], None]


def call_signature(call: ToolCall) -> str:
    """Name and canonical arguments, so key order and spacing do not hide a repeat."""
    if call.arguments_error is not None:
        return f"{call.name} <invalid arguments: {call.arguments_error}>"
    arguments = json.dumps(
        call.arguments, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str
    )
    return f"{call.name} {arguments}"


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class StuckDetector:
    """Counts repeats and idle turns of one agent; knows nothing of what to do about them."""

    def __init__(self, repeat_limit: int = 3, idle_turns: int = 8) -> None:
        if repeat_limit < 2 or idle_turns < 2:
            raise ValueError("repeat_limit and idle_turns must be at least 2")
        self.repeat_limit = repeat_limit
        self.idle_turns = idle_turns
        self._tail: deque[str] = deque(maxlen=TAIL_SIZE)
        self.reset()

    def reset(self) -> None:
        """Start counting afresh (after a nudge); the transcript tail is kept."""
        self._last_call: str | None = None
        self._call_streak = 0
        self._last_text: str | None = None
        self._text_streak = 0
        self._idle = 0
        self._text = ""
        self._changed = False
        self._finishing = False

    @property
    def tail(self) -> tuple[str, ...]:
        """The last few replies and calls, one compact line each, oldest first."""
        return tuple(self._tail)

    def record_reply(self, turn: int, reply: Reply) -> None:
        """Remember the reply's text; it is judged in `end_turn`, once the tools have run."""
        self._text = " ".join(reply.text.split())
        if self._text:
            self._tail.append(f"turn {turn} said: {_snippet(self._text)}")

    def record_call(self, turn: int, call: ToolCall, result: ToolResult) -> str | None:
        """Account one tool call; return a reason when the same call repeated too often."""
        signature = call_signature(call)
        outcome = f"error: {_snippet(result.content, 80)}" if result.is_error else "ok"
        self._tail.append(f"turn {turn} called {_snippet(signature)} -> {outcome}")
        if call.name in FILE_CHANGING_TOOLS and not result.is_error:
            self._changed = True
        if call.name == FINISH_TOOL:
            self._finishing = True
        self._call_streak = self._call_streak + 1 if signature == self._last_call else 1
        self._last_call = signature
        if self._call_streak >= self.repeat_limit:
            return (f"{_snippet(signature, 200)} was called {self._call_streak} times in a row "
                    "with the same arguments")
        return None

    def end_turn(self) -> str | None:
        """Close the current turn; return a reason for repeated text or too many idle turns."""
        text, changed, finishing = self._text, self._changed, self._finishing
        self._text, self._changed, self._finishing = "", False, False
        if changed or not text:
            self._last_text, self._text_streak = None, 0
        else:
            self._text_streak = self._text_streak + 1 if text == self._last_text else 1
            self._last_text = text
        if changed:
            self._idle = 0
        elif not finishing:
            self._idle += 1
        if self._text_streak >= self.repeat_limit:
            return (f"the same reply text came {self._text_streak} times in a row: "
                    f"\"{_snippet(text, 120)}\"")
        if self._idle >= self.idle_turns:
            return (f"{self._idle} turns went by without a file change "
                    "(no successful write_file or edit_file)")
        return None


def nudge_message(reason: str) -> str:
    """The one message a stuck agent gets before the manager is asked for guidance."""
    return (
        f"You seem to be stuck: {reason}. Doing the same again will not give a different "
        "result. Step back and try a different approach: re-read the task and the last "
        "results, look at other files, or make the change now with write_file or edit_file. "
        "If the task cannot be done, call finish_task with status \"blocked\" and say why."
    )


class StuckHooks(AgentHooks):
    """Stuck detection layered over another hooks object, which sees every call unchanged.

    The first sign yields a nudge (a user message before the next request) and resets the
    counters; the next sign raises `StuckEscalation`. Signs are acted on at the start of the
    next turn, so a reply that also finishes the task successfully is never interrupted.
    `on_stuck(action, reason)` is called with action "nudge" or "escalate" before either.
    """

    def __init__(
        self,
        inner: AgentHooks | None = None,
        detector: StuckDetector | None = None,
        *,
        on_stuck: OnStuck | None = None,
    ) -> None:
        self.inner = inner or AgentHooks()
        self.detector = detector or StuckDetector()
        self.on_stuck = on_stuck
        self.nudged = False
        self._pending: str | None = None

    def _note(self, reason: str | None) -> None:
        if reason is not None and self._pending is None:
            self._pending = reason

    def extra_messages(self, turn: int) -> list[Message]:
        messages = list(self.inner.extra_messages(turn))
        if turn > 1:
            self._note(self.detector.end_turn())
        reason, self._pending = self._pending, None
        if reason is None:
            return messages
        if self.nudged:
            if self.on_stuck is not None:
                self.on_stuck("escalate", reason)
            raise StuckEscalation(reason, self.detector.tail)
        self.nudged = True
        self.detector.reset()
        if self.on_stuck is not None:
            self.on_stuck("nudge", reason)
        return [*messages, Message.user(nudge_message(reason))]

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.inner.before_model_call(turn, messages)

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.inner.after_model_call(turn, reply)
        self.detector.record_reply(turn, reply)

    def after_tool_call(self, turn: int, call: ToolCall, result: ToolResult) -> None:
        self.inner.after_tool_call(turn, call, result)
        self._note(self.detector.record_call(turn, call, result))


def guidance_prompt(task: str, error: StuckEscalation) -> str:
    """What the manager is asked when an agent escalates: the task, the loop, its last steps."""
    steps = "\n".join(f"- {line}" for line in error.transcript_tail) or "- (none recorded)"
    return (
        f"An agent working on this task got stuck and a nudge did not help.\n\nTask:\n{task}"
        f"\n\nWhat it kept doing: {error.reason}.\n\nIts last steps:\n{steps}\n\n"
        "Reply with short, concrete guidance for a fresh attempt at the task: what to do "
        "differently, which files to look at or change, and what to avoid. Plain text only."
    )
