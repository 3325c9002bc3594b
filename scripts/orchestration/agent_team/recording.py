"""Record a run's model exchanges as a session file that `ScriptedModel` replays.

`RecordingModel` wraps any `ChatModel`. Every exchange becomes one turn of the session format
(see `scripted.py`) under the queue `ScriptedModel` will look in first: `role:task_id` for an
agent bound to a task, `role` for one bound to a role only, `*` for an unbound model. Tool-call
ids are kept, so a replay rebuilds the same conversation. Each turn also carries a `request`
summary the replay ignores: the model, how many messages were sent, the tool names, whether
structured output was asked for, a sha256 of the (redacted) system prompt and messages, so a
replay can tell when its requests drifted from the recorded ones, and the newest user or tool
message, truncated.

Write policy: when the recorder has a path it rewrites the whole session atomically (temp file,
`os.replace`) after every exchange, at most every `flush_interval` seconds (0: every time).
A run that crashes, even by SIGKILL, therefore leaves a valid session holding every exchange
that completed, marked `"complete": false`; `close()` writes the final file with
`"complete": true`. Each queue is written up to its first exchange still in flight, so a
partial session never has a hole. Only the returned `Reply` and the error are recorded, never
request headers, and every string passes through `redact_value` before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .fsutil import write_atomic
from .models import ChatModel, Message, Reply, ToolCall, ToolSpec
from .redaction import redact, redact_value
from .scripted import SESSION_FORMAT, SESSION_VERSION, WILDCARD
from .state_schema import utc_now

__all__ = [
    "LAST_MESSAGE_CHARS",
    "RecordingModel",
    "SessionRecorder",
    "error_turn",
    "reply_turn",
    "request_digest",
    "request_summary",
]

#: How much of the newest user or tool message a turn's request summary keeps.
LAST_MESSAGE_CHARS = 500


def _call_dict(call: ToolCall) -> dict[str, Any]:
    data: dict[str, Any] = {"id": call.id, "name": call.name, "arguments": dict(call.arguments)}
    if call.arguments_error is not None:
        data["arguments_error"] = call.arguments_error
    return data


def _message_dict(message: Message) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": [_call_dict(c) for c in message.tool_calls],
        "tool_call_id": message.tool_call_id,
        "name": message.name,
        "is_error": message.is_error,
    }


def request_digest(system: str, messages: Sequence[Message]) -> str:
    """sha256 of the redacted system prompt and messages in a canonical JSON form.

    Redacted first, so a digest never depends on a secret and a replay, which only ever sees
    redacted replies, computes the same value for the same conversation.
    """
    canonical = json.dumps(
        redact_value({"system": system, "messages": [_message_dict(m) for m in messages]}),
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def request_summary(
    model: str,
    system: str,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec] = (),
    output_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What was asked, in brief: enough to recognise a request and detect drift, no secrets."""
    summary: dict[str, Any] = {
        "model": model,
        "messages": len(messages),
        "tools": [t.name for t in tools],
        "output_schema": output_schema is not None,
        "sha256": request_digest(system, messages),
    }
    last = next((m for m in reversed(messages) if m.role in ("user", "tool")), None)
    if last is not None:
        content = redact(last.content)
        if len(content) > LAST_MESSAGE_CHARS:
            content = content[:LAST_MESSAGE_CHARS] + f"... [{len(content)} chars]"
        summary["last_message"] = {"role": last.role, "content": content}
        if last.role == "tool":
            summary["last_message"].update(name=last.name, is_error=last.is_error)
    return summary


def reply_turn(reply: Reply, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A session turn that makes `ScriptedModel` return `reply` again (ids included)."""
    turn: dict[str, Any] = {
        "text": reply.text,
        "tool_calls": [_call_dict(c) for c in reply.tool_calls],
        "stop_reason": reply.stop_reason,
        "usage": reply.usage.to_dict(),
    }
    if request is not None:
        turn["request"] = dict(request)
    return turn


def error_turn(exc: BaseException, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A session turn that makes `ScriptedModel` raise the provider error again."""
    turn: dict[str, Any] = {
        "error": {
            "status": getattr(exc, "status", None),
            "message": str(exc) or type(exc).__name__,
            "retryable": bool(getattr(exc, "retryable", False)),
            "type": type(exc).__name__,
        }
    }
    if request is not None:
        turn["request"] = dict(request)
    return turn


class _Slot:
    """One exchange's place in its queue, reserved when the request starts."""

    __slots__ = ("turn",)

    def __init__(self) -> None:
        self.turn: dict[str, Any] | None = None


class SessionRecorder:
    """The queues of recorded turns shared by every view of one recording, and the file.

    Slots are reserved in request order, because that is the order in which `ScriptedModel`
    hands turns out; they are filled when the reply (or error) arrives.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        flush_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.flush_interval = flush_interval
        self.recorded_at = utc_now()
        self.feature: str | None = None
        self.provider: str | None = None
        self.model: str | None = None
        self.models: list[str] = []
        self.reply_model: str | None = None
        self.write_errors: list[str] = []
        self._clock = clock
        self._queues: dict[str, list[_Slot]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._last_write: float | None = None
        self._closed = False

    # -- filling ---------------------------------------------------------------------------

    def set_feature(self, feature: str) -> None:
        """Store the feature, so `--demo`-style replays know what to ask for."""
        with self._lock:
            self.feature = redact(feature)

    def register(self, provider: str, model: str) -> None:
        """Note a wrapped model; the first one names the session's provider and model.

        The session's `model` is the one the first reply reported, as a replay returns it.
        """
        with self._lock:
            self.provider = self.provider or provider
            self.model = self.model or model
            name = f"{provider}/{model}"
            if name not in self.models:
                self.models.append(name)

    def begin(self, key: str) -> _Slot:
        """Reserve the next turn of queue `key`."""
        slot = _Slot()
        with self._lock:
            self._queues.setdefault(key, []).append(slot)
        return slot

    def finish(self, slot: _Slot, turn: Mapping[str, Any]) -> None:
        """Fill a reserved turn (redacted now, once) and save when a save is due."""
        clean = redact_value(dict(turn))
        with self._lock:
            slot.turn = clean
            if self.reply_model is None and "error" not in clean:
                self.reply_model = (clean.get("request") or {}).get("model")
        self._autosave()

    def discard(self, slot: _Slot) -> None:
        """Drop a reserved turn whose request never ended (an interrupt, not a model error)."""
        with self._lock:
            for queue in self._queues.values():
                if slot in queue:
                    queue.remove(slot)
                    return

    # -- reading and writing ---------------------------------------------------------------

    def turns(self) -> dict[str, list[dict[str, Any]]]:
        """Each queue up to its first exchange still in flight; empty queues are left out."""
        with self._lock:
            agents: dict[str, list[dict[str, Any]]] = {}
            for key, queue in self._queues.items():
                done: list[dict[str, Any]] = []
                for slot in queue:
                    if slot.turn is None:
                        break
                    done.append(slot.turn)
                if done:
                    agents[key] = done
            return agents

    def to_dict(self) -> dict[str, Any]:
        """The session document as it would be written now."""
        agents = self.turns()
        with self._lock:
            data: dict[str, Any] = {
                "format": SESSION_FORMAT,
                "version": SESSION_VERSION,
                "model": self.reply_model or self.model or "scripted",
                "provider": self.provider or "unknown",
                "recorded_at": self.recorded_at,
                "complete": self._closed,
            }
            if len(self.models) > 1:
                data["models"] = list(self.models)
            if self.feature is not None:
                data["feature"] = self.feature
        data = redact_value(data)
        data["agents"] = agents  # each turn was redacted when it was recorded
        return data

    def write(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the session atomically to `path` (default: the recorder's own path)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("SessionRecorder.write needs a path: none was given or configured")
        with self._write_lock:
            payload = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, payload)
            self._last_write = self._clock()
        return target

    def flush(self) -> Path | None:
        """Write now, whatever the interval; a no-op without a path."""
        return self.write() if self.path is not None else None

    def close(self) -> Path | None:
        """Mark the session complete and write it a last time."""
        with self._lock:
            self._closed = True
        return self.flush()

    def _autosave(self) -> None:
        """Save after an exchange when due; a failed save must not fail the run."""
        if self.path is None:
            return
        last = self._last_write
        if last is not None and self._clock() - last < self.flush_interval:
            return
        try:
            self.write()
        except OSError as exc:
            with self._lock:
                self.write_errors.append(f"{self.path}: {exc}")


class RecordingModel(ChatModel):
    """A `ChatModel` that passes every request to `inner` and records the exchange.

    Several wrapped models (one per role configuration) may share one `SessionRecorder`.
    """

    def __init__(
        self,
        inner: ChatModel,
        recorder: SessionRecorder | None = None,
    ) -> None:
        self.inner = inner
        self.recorder = recorder if recorder is not None else SessionRecorder()
        self.provider = inner.provider
        self.model = inner.model
        self.recorder.register(inner.provider, inner.model)

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Reply:
        messages = tuple(messages)
        slot = self.recorder.begin(key or WILDCARD)
        started = time.monotonic()
        try:
            reply = self.inner.complete(
                system, messages, tools=tools, output_schema=output_schema, key=key
            )
        except Exception as exc:
            request = self._summary(system, messages, tools, output_schema, started)
            self.recorder.finish(slot, error_turn(exc, request))
            raise
        except BaseException:
            self.recorder.discard(slot)
            raise
        request = self._summary(system, messages, tools, output_schema, started)
        request["model"] = reply.model or self.inner.model
        self.recorder.finish(slot, reply_turn(reply, request))
        return reply

    def _summary(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        output_schema: Mapping[str, Any] | None,
        started: float,
    ) -> dict[str, Any]:
        summary = request_summary(self.inner.model, system, messages, tools, output_schema)
        summary["duration_s"] = round(time.monotonic() - started, 3)
        return summary
