"""The run's event log: one JSON object per line in `.ai-agents/logs/<run_id>.jsonl`.

The state file says where the team is now; the event log says how it got there, in order, with
timings, so a run can be followed with `tail -f`, replayed by a progress display, and examined
after a crash. Each line is flushed as it is written, so a killed process loses at most the line
it was writing (`read_events` skips such a torn last line). Every value passes through
`redact_value` first. Listeners (the live progress display) receive every event in `seq` order.

Readers must ignore kinds and fields they do not know: custom orchestrators may add both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from .redaction import redact_value
from .state_schema import utc_now

__all__ = [
    "ENVELOPE_FIELDS",
    "EVENT_KINDS",
    "EventLog",
    "Listener",
    "log_path",
    "read_events",
]

#: The kinds the orchestrators emit, with their fields. `task_id` is null for calls that
#: belong to no task (planning, integration review).
EVENT_KINDS: tuple[tuple[str, str], ...] = (
    ("run_started", "A run began: feature, branch, base_branch, orchestrator, provider, model."),
    ("plan_requested", "The manager was asked for a plan: attempt, max_attempts."),
    ("plan_rejected", "The manager's plan was invalid and goes back: attempt, errors."),
    ("plan_accepted", "The plan was accepted (or reloaded to resume): tasks (count), "
                      "task_ids, roles (task_id -> role), completed (task_ids already done)."),
    ("task_status", "A task changed status: task_id, status, error, role."),
    ("model_call", "A model replied: role, task_id, turn, usage, stop_reason, duration_s, "
                   "model, cost_usd."),
    ("tool_call", "An agent's tool call ran: role, task_id, turn, tool, is_error."),
    ("retry", "A transient API error will be retried: role, attempt, delay_s, error."),
    ("commit", "The orchestrator committed an agent's work: task_id, sha, files."),
    ("merge", "A task branch was merged (or not): task_id, status, conflicts, commit."),
    ("test_run", "The orchestrator ran the tests: command, exit_code, passed, failed, "
                 "errors, skipped (null when not parsed), source, timed_out."),
    ("budget_stop", "A budget stopped the run: limit, value, maximum."),
    ("stuck", "An agent looked stuck: role, task_id, action (nudge|escalate|fail), reason."),
    ("log", "A line of the orchestrator's own narration: message."),
    ("run_finished", "The run ended: status, exit_code, error (when it ended by one)."),
)

#: Fields every line starts with; `emit` refuses them as event fields.
ENVELOPE_FIELDS = ("ts", "run_id", "seq", "kind")

#: A listener receives each event as the dict that was written.
Listener = Callable[[dict[str, Any]], None]

_MAX_KEPT_ERRORS = 20


def log_path(project_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Where a run's event log lives: `<project>/.ai-agents/logs/<run_id>.jsonl`."""
    return Path(project_dir) / ".ai-agents" / "logs" / f"{run_id}.jsonl"


def _jsonable(value: Any) -> Any:
    """Plain JSON types for anything an event may carry (Usage, Path, dataclasses, sets)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


class EventLog:
    """A thread-safe JSON-lines writer with listeners.

    `path=None` keeps events in memory only for the listeners (tests, runs without a log).
    One lock covers numbering, writing and delivery, so the file and every listener see the
    events in the same order; listeners must therefore be quick and must not block.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, run_id: str) -> None:
        self.path = Path(path) if path is not None else None
        self.run_id = run_id
        self.write_errors = 0
        self.listener_errors = 0
        self.errors: list[str] = []
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._seq = 0
        self._closed = False
        self._handle: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")

    @property
    def seq(self) -> int:
        """How many events were emitted so far."""
        with self._lock:
            return self._seq

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """Write one event and hand it to every listener; returns it (None after close).

        Never raises for a failed write or a failing listener: those are counted in
        `write_errors` and `listener_errors` (details in `errors`), because the record of a
        run must not be what breaks it.
        """
        clash = [name for name in fields if name in ENVELOPE_FIELDS]
        if clash:
            raise ValueError(f"event fields {clash} clash with the envelope {ENVELOPE_FIELDS}")
        body = redact_value(_jsonable(fields))
        with self._lock:
            if self._closed:
                return None
            self._seq += 1
            event = {"ts": utc_now(), "run_id": self.run_id, "seq": self._seq, "kind": kind}
            event.update(body)
            self._write(event)
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception as exc:  # a display bug must not stop the run
                    self.listener_errors += 1
                    self._note_error(f"listener {_name(listener)}: {type(exc).__name__}: {exc}")
            return event

    def close(self) -> None:
        """Stop accepting events and close the file; safe to call twice."""
        with self._lock:
            self._closed = True
            if self._handle is not None:
                try:
                    self._handle.close()
                except OSError as exc:
                    self.write_errors += 1
                    self._note_error(f"closing {self.path}: {exc}")
                self._handle = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, event: Mapping[str, Any]) -> None:
        if self._handle is None:
            return
        try:
            self._handle.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._handle.flush()
        except (OSError, ValueError) as exc:
            self.write_errors += 1
            self._note_error(f"writing {self.path}: {exc}")

    def _note_error(self, message: str) -> None:
        if len(self.errors) < _MAX_KEPT_ERRORS:
            self.errors.append(message)


def _name(listener: Listener) -> str:
    return getattr(listener, "__qualname__", None) or type(listener).__name__


def read_events(
    path: str | os.PathLike[str], *, kinds: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The events of one log, oldest first, optionally only some kinds.

    A last line that does not parse is the one a killed process was writing, and is skipped;
    a bad line anywhere else means the file is damaged and raises ValueError with its number.
    """
    wanted = set(kinds) if kinds is not None else None
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON event ({exc.msg})") from None
        if not isinstance(event, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        if wanted is None or event.get("kind") in wanted:
            events.append(event)
    return events
