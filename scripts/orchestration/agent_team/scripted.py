"""A model that replays a session file: offline demos, tests, and replays of recorded runs.

A session file is JSON::

    {
      "format": "agent-team-session",
      "version": 1,
      "agents": {
        "manager:plan": [ {"text": "{...plan json...}"} ],
        "backend-dev:TASK-001": [
          {"tool_calls": [{"name": "write_file", "arguments": {"path": "a.py", "content": "..."}}]},
          {"tool_calls": [{"name": "finish_task", "arguments": {"summary": "..."}}]}
        ],
        "qa-tester": [ ... ]
      }
    }

Each agent takes its turns from the queue named `role:task_id` when the file has one, else from
the queue named `role`, else from `*`. Queues are consumed in order and independently, so agents
running in parallel replay deterministically whatever the thread timing. A turn may also carry
`usage` (token counts to report), `stop_reason`, and `delay` (seconds to wait, to simulate
latency). A turn with `error` raises that error instead of replying (status and message), which
lets tests inject provider faults; its exit code follows the status as with the real adapters
(401, 403 and 404 are bad input). A tool call may carry `arguments_error` (what a recording
keeps of arguments that were not a JSON object), so it replays as the same error result.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, ScriptExhausted
from .models import (
    END_TURN,
    TOOL_USE,
    ChatModel,
    Message,
    Reply,
    ToolCall,
    ToolSpec,
    Usage,
    split_key,
)
from .retry import api_error

SESSION_FORMAT = "agent-team-session"
SESSION_VERSION = 1
WILDCARD = "*"


@dataclass(frozen=True)
class ScriptedCall:
    """One request the scripted model received, kept for assertions."""

    key: str
    role: str | None
    task_id: str | None
    system: str
    messages: tuple[Message, ...]
    tool_names: tuple[str, ...]
    output_schema: Mapping[str, Any] | None
    started: float
    finished: float


class _Script:
    """The queues and the call log of one scripted model."""

    def __init__(self, agents: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.turns = {key: list(turns) for key, turns in agents.items()}
        self.used = {key: 0 for key in agents}
        self.calls: list[ScriptedCall] = []
        self.lock = threading.Lock()

    def next_turn(self, role: str | None, task_id: str | None) -> tuple[str, dict[str, Any]]:
        candidates = []
        if role is not None and task_id is not None:
            candidates.append(f"{role}:{task_id}")
        if role is not None:
            candidates.append(role)
        candidates.append(WILDCARD)
        with self.lock:
            for key in candidates:
                if key in self.turns:
                    index = self.used[key]
                    if index >= len(self.turns[key]):
                        raise ScriptExhausted(
                            f"The scripted session has no turn {index + 1} for {key!r} "
                            f"(it holds {len(self.turns[key])}). The run asked the model more "
                            "often than the session expected: re-record the session or add turns."
                        )
                    self.used[key] = index + 1
                    return key, dict(self.turns[key][index])
        raise ScriptExhausted(
            f"The scripted session has no turns for role {role!r}"
            + (f" and task {task_id!r}" if task_id else "")
            + f" (looked for {', '.join(map(repr, candidates))}). Available: "
            + (", ".join(sorted(self.turns)) or "none")
            + "."
        )


def _turn_problem(turn: Mapping[str, Any]) -> str | None:
    """What is wrong with one turn of a session file, or None; checked when the file loads."""
    calls = turn.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            return "tool_calls must be a list"
        for i, call in enumerate(calls):
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return f"tool_calls[{i}] needs a \"name\" string"
            if not isinstance(call.get("arguments", {}), (dict, type(None))):
                return f"tool_calls[{i}].arguments must be an object"
            if not isinstance(call.get("arguments_error", ""), (str, type(None))):
                return f"tool_calls[{i}].arguments_error must be a string"
    if "error" in turn and not isinstance(turn["error"], (dict, type(None))):
        return "error must be an object such as {\"status\": 529, \"message\": \"overloaded\"}"
    if not isinstance(turn.get("usage", {}), (dict, type(None))):
        return "usage must be an object of token counts"
    delay = turn.get("delay", 0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float, type(None))) or (
        delay is not None and delay < 0
    ):
        return "delay must be a non-negative number of seconds"
    return None


class ScriptedModel(ChatModel):
    """Replays scripted turns keyed by role and task; records every call it receives."""

    provider = "scripted"

    def __init__(
        self,
        script: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
        *,
        model: str = "scripted",
    ) -> None:
        if isinstance(script, (str, bytes)):
            raise TypeError("ScriptedModel takes a list of turns or a mapping of queues")
        agents = {WILDCARD: list(script)} if isinstance(script, Sequence) else dict(script)
        self._script = _Script(agents)
        self.model = model

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedModel:
        """Load a session file, with an actionable error when it is missing or malformed."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Session file {path} does not exist. Check --session.") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Session file {path} could not be read as JSON: {exc}.") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "session") -> ScriptedModel:
        if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
            raise ConfigError(
                f"{source} is not a session file: expected a JSON object with an \"agents\" "
                "object mapping 'role' or 'role:task_id' to a list of turns."
            )
        if data.get("format", SESSION_FORMAT) != SESSION_FORMAT:
            raise ConfigError(f"{source}: unknown format {data.get('format')!r}.")
        if data.get("version", SESSION_VERSION) != SESSION_VERSION:
            raise ConfigError(
                f"{source}: session version {data.get('version')!r} is not supported "
                f"(supported: {SESSION_VERSION})."
            )
        for key, turns in data["agents"].items():
            if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
                raise ConfigError(f"{source}: agents[{key!r}] must be a list of turn objects.")
            for index, turn in enumerate(turns):
                problem = _turn_problem(turn)
                if problem:
                    raise ConfigError(f"{source}: agents[{key!r}][{index}]: {problem}.")
        return cls(data["agents"], model=str(data.get("model", "scripted")))

    # -- ChatModel -------------------------------------------------------------------------

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Reply:
        started = time.monotonic()
        role, task_id = split_key(key)
        key, turn = self._script.next_turn(role, task_id)
        delay = float(turn.get("delay", 0) or 0)
        if delay > 0:
            time.sleep(delay)
        finished = time.monotonic()
        with self._script.lock:
            self._script.calls.append(
                ScriptedCall(
                    key=key,
                    role=role,
                    task_id=task_id,
                    system=system,
                    messages=tuple(messages),
                    tool_names=tuple(t.name for t in tools),
                    output_schema=output_schema,
                    started=started,
                    finished=finished,
                )
            )
            call_number = len(self._script.calls)
        if "error" in turn:
            error = turn["error"] or {}
            raise api_error(
                str(error.get("message", "scripted error")),
                status=error.get("status"),
                retryable=bool(error.get("retryable", False)),
            )
        text = turn.get("text", "")
        if not isinstance(text, str):
            text = json.dumps(text)
        calls = tuple(
            ToolCall(
                id=str(raw.get("id") or f"call_{call_number}_{i}"),
                name=str(raw["name"]),
                arguments=dict(raw.get("arguments") or {}),
                arguments_error=raw.get("arguments_error") or None,
            )
            for i, raw in enumerate(turn.get("tool_calls") or [])
        )
        return Reply(
            text=text,
            tool_calls=calls,
            stop_reason=str(turn.get("stop_reason") or (TOOL_USE if calls else END_TURN)),
            usage=Usage.from_dict(turn.get("usage")),
            model=self.model,
        )

    # -- Inspection --------------------------------------------------------------------------

    @property
    def calls(self) -> list[ScriptedCall]:
        """Every request received so far, in arrival order."""
        with self._script.lock:
            return list(self._script.calls)

    def remaining(self) -> dict[str, int]:
        """Unused turns per queue."""
        with self._script.lock:
            return {
                key: len(turns) - self._script.used[key]
                for key, turns in self._script.turns.items()
                if len(turns) - self._script.used[key] > 0
            }

    def assert_complete(self) -> None:
        """Raise AssertionError when scripted turns were left unused."""
        left = self.remaining()
        if left:
            detail = ", ".join(f"{key}: {n}" for key, n in sorted(left.items()))
            raise AssertionError(f"scripted turns left unused: {detail}")
