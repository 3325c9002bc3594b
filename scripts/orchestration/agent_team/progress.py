"""What a person watching the terminal sees: an `EventLog` listener that prints the run.

Live mode (a terminal that is not `TERM=dumb`) keeps a block at the bottom of the screen, one
line per working agent (role, task, turn, last tool, tokens) and a totals line (tasks done,
API calls, tokens, cost), drawn by rich's `Live` (the dashboard's library) and redrawn at most
every `refresh_seconds`, and at once when a task changes. Plain mode (a pipe, a CI log,
`--no-progress`) does not use rich at all: no escape sequences, only one line per notable
event. In both modes permanent lines go above the block through `write_line`, the only way
anything else should print while the display is open.

Every write happens under one lock, so lines from many threads never mix. Lines of the live
block are cropped to the terminal width (rich keeps the cursor arithmetic of its redraws).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from .sanitize import for_log

__all__ = ["ProgressDisplay", "format_event", "format_tokens"]

_DEFAULT_WIDTH = 100


def format_tokens(count: float) -> str:
    """1234 -> "1.2k", 2500000 -> "2.50M": wide enough to compare, short enough for a line."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(int(count))


def _total_tokens(usage: Any) -> int:
    if not isinstance(usage, Mapping):
        return 0
    return sum(int(v) for v in usage.values() if isinstance(v, (int, float)))


def _who(event: Mapping[str, Any]) -> str:
    role, task = event.get("role") or "agent", event.get("task_id")
    return f"{role}@{task}" if task else str(role)


def format_event(event: Mapping[str, Any], *, verbose: bool = False) -> str | None:
    """The permanent line for one event, or None when the event does not get one."""
    kind = event.get("kind")
    if kind == "log":
        return f"[Orchestrator] {event.get('message', '')}"
    if kind == "task_status":
        error, role = event.get("error"), event.get("role")
        return (
            f"[{event.get('task_id')}] {event.get('status')}"
            + (f" ({role})" if role else "")
            + (f": {error}" if error else "")
        )
    if kind == "merge":
        conflicts = event.get("conflicts") or []
        detail = f" (conflicts: {', '.join(map(str, conflicts))})" if conflicts else ""
        return f"[merge] {event.get('task_id')}: {event.get('status')}{detail}"
    if kind == "test_run":
        passed, failed = (
            "?" if event.get(name) is None else event[name] for name in ("passed", "failed")
        )
        timed_out = " (timed out)" if event.get("timed_out") else ""
        extra = "".join(f", {event[name]} {name}" for name in ("errors", "skipped")
                        if event.get(name))
        return (
            f"[tests] exit {event.get('exit_code')}{timed_out}: {passed} passed, "
            f"{failed} failed{extra} ({event.get('command')})"
        )
    if kind == "budget_stop":
        return (
            f"[budget] stopped: {event.get('limit')} reached "
            f"{event.get('value')} of {event.get('maximum')}"
        )
    if kind == "stuck":
        return f"[stuck] {_who(event)}: {event.get('action')} ({event.get('reason', '')})"
    if not verbose:
        return None
    if kind == "model_call":
        tokens = format_tokens(_total_tokens(event.get("usage")))
        duration = event.get("duration_s")
        timing = f", {float(duration):.1f}s" if isinstance(duration, (int, float)) else ""
        return (
            f"[{_who(event)}] turn {event.get('turn', '-')}: {tokens} tokens, "
            f"{event.get('stop_reason', '')}{timing}"
        )
    if kind == "tool_call":
        failed = " (error)" if event.get("is_error") else ""
        return f"[{_who(event)}] turn {event.get('turn', '-')}: {event.get('tool')}{failed}"
    if kind == "retry":
        return (
            f"[{event.get('role', 'model')}] retry {event.get('attempt')} in "
            f"{event.get('delay_s')}s: {event.get('error')}"
        )
    return None


@dataclass
class _Agent:
    """What the live block knows of one working agent."""

    role: str
    task_id: str | None
    turn: int = 0
    last_tool: str = ""
    tokens: int = 0

    def render(self) -> str:
        task = self.task_id or "-"
        tool = self.last_tool or "-"
        return (
            f"  {self.role:<16} {task:<12} turn {self.turn:<3} {tool:<16} "
            f"{format_tokens(self.tokens)} tokens"
        )


def _default_live(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        tty = False
    return tty and os.environ.get("TERM", "") != "dumb"


def _terminal_width(stream: IO[str]) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((_DEFAULT_WIDTH, 24)).columns


class ProgressDisplay:
    """An `EventLog` listener (`events.add_listener(display)`) that shows the run."""

    def __init__(
        self,
        stream: IO[str],
        *,
        live: bool | None = None,
        verbose: bool = False,
        refresh_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.live = _default_live(stream) if live is None else live
        self.verbose = verbose
        self.refresh_seconds = refresh_seconds
        self.width = width
        self._clock = clock
        self._lock = threading.RLock()
        self._agents: dict[str, _Agent] = {}
        self._tasks: dict[str, str] = {}
        self._calls = 0
        self._tokens = 0
        self._cost = 0.0
        self._live: Live | None = None
        #: Redraws of the live block so far (for tests of the throttle).
        self.redraws = 0
        self._last_draw: float | None = None
        self._dirty = False
        self._active = False
        self._closed = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- listener --------------------------------------------------------------------------

    def __call__(self, event: Mapping[str, Any]) -> None:
        self.handle(event)

    def handle(self, event: Mapping[str, Any]) -> None:
        """Update the picture with one event; print its line; redraw when due."""
        with self._lock:
            if self._closed:
                return
            urgent = self._apply(event)
            line = format_event(event, verbose=self.verbose)
            if line is not None:
                self._emit_permanent(for_log(line))  # events carry the models' text
            if self.live and (urgent or self._due()):
                self._draw()
            elif self.live:
                self._dirty = True
            self._start_ticker()

    def write_line(self, text: str) -> None:
        """Print a permanent line (or several) above the live block without garbling it."""
        with self._lock:
            if self._closed:
                self._write(text + "\n")
                return
            self._emit_permanent(text)

    def refresh(self, *, force: bool = False) -> None:
        """Redraw the live block if something changed and a redraw is due (or `force`)."""
        with self._lock:
            if self.live and not self._closed and (force or (self._dirty and self._due())):
                self._draw()

    def close(self) -> None:
        """Stop redrawing; the final block stays on screen below everything printed."""
        with self._lock:
            if self._closed:
                return
            if self.live:
                self._draw()
            if self._live is not None:
                with contextlib.suppress(OSError, ValueError):  # a closed terminal
                    self._live.stop()
            self._closed = True
            self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join(timeout=5)

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the picture -----------------------------------------------------------------------

    def _apply(self, event: Mapping[str, Any]) -> bool:
        """Fold an event into the picture; True when the block must be redrawn now."""
        kind = event.get("kind")
        self._active = self._active or kind != "log"
        if kind == "plan_accepted":
            for task_id in event.get("task_ids") or []:
                self._tasks.setdefault(str(task_id), "pending")
            for task_id in event.get("completed") or []:  # a resumed run's finished tasks
                self._tasks[str(task_id)] = "completed"
            self._drop(lambda agent: agent.task_id not in self._tasks)
            return True
        if kind == "task_status":
            task_id, status = str(event.get("task_id")), str(event.get("status"))
            self._tasks[task_id] = status
            if status != "in_progress":  # finished, failed, or set back by a stop
                self._drop(lambda agent: agent.task_id == task_id)
            elif event.get("role"):
                self._agent(str(event["role"]), task_id)
            return True
        if kind == "model_call":
            agent = self._agent(str(event.get("role") or "agent"), event.get("task_id"))
            tokens = _total_tokens(event.get("usage"))
            agent.turn = int(event.get("turn") or agent.turn + 1)
            agent.tokens += tokens
            self._calls += 1
            self._tokens += tokens
            cost = event.get("cost_usd")
            if isinstance(cost, (int, float)):
                self._cost += float(cost)
            return False
        if kind == "tool_call":
            agent = self._agent(str(event.get("role") or "agent"), event.get("task_id"))
            agent.last_tool = str(event.get("tool") or "")
            return False
        if kind == "run_finished":
            self._agents.clear()
            return True
        return False

    def _agent(self, role: str, task_id: Any) -> _Agent:
        task = str(task_id) if task_id is not None else None
        key = f"{role}@{task}" if task else role
        if key not in self._agents:
            self._agents[key] = _Agent(role, task)
        return self._agents[key]

    def _drop(self, doomed: Callable[[_Agent], bool]) -> None:
        for key in [k for k, agent in self._agents.items() if doomed(agent)]:
            del self._agents[key]

    def summary(self) -> str:
        """The totals line: tasks done of known, failures, API calls, tokens, cost."""
        with self._lock:
            done = sum(1 for s in self._tasks.values() if s == "completed")
            failed = sum(1 for s in self._tasks.values() if s in ("failed", "blocked", "skipped"))
            return (
                f"Tasks {done}/{len(self._tasks)} done"
                + (f", {failed} failed" if failed else "")
                + f" | {self._calls} API calls | {format_tokens(self._tokens)} tokens"
                + f" | ${self._cost:.2f}"
            )

    def agent_lines(self) -> list[str]:
        """One line per active agent, in the order they started."""
        with self._lock:
            return [for_log(agent.render()) for agent in self._agents.values()]

    # -- drawing (callers hold the lock) ---------------------------------------------------

    def _due(self) -> bool:
        return self._last_draw is None or self._clock() - self._last_draw >= self.refresh_seconds

    def _block(self) -> Group:
        """The live block: one cropped line per agent, then the totals."""
        lines = [*self.agent_lines(), self.summary()]
        return Group(*(Text(line, no_wrap=True, overflow="crop") for line in lines))

    def _draw(self) -> None:
        """Show the block now; nothing until the run has started, so early lines print plainly."""
        if not self._active:
            return
        try:
            if self._live is None:
                console = Console(file=self.stream, force_terminal=True, color_system=None,
                                  width=self.width or _terminal_width(self.stream),
                                  highlight=False, soft_wrap=False)
                self._live = Live(self._block(), console=console, auto_refresh=False,
                                  transient=False, redirect_stdout=False,
                                  redirect_stderr=False)
                self._live.start(refresh=False)
            self._live.update(self._block(), refresh=True)
        except (OSError, ValueError):
            pass  # a closed or broken terminal must not stop the run
        self.redraws += 1
        self._last_draw = self._clock()
        self._dirty = False

    def _emit_permanent(self, text: str) -> None:
        if self._live is None:
            self._write(text + "\n")
            return
        try:
            self._live.update(self._block(), refresh=False)  # redrawn below the line, fresh
            self._live.console.print(Text(text), soft_wrap=True)
        except (OSError, ValueError):
            pass

    def _write(self, chunk: str) -> None:
        try:
            self.stream.write(chunk)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken terminal must not stop the run

    # -- periodic redraw -------------------------------------------------------------------

    def _start_ticker(self) -> None:
        """In live mode, a daemon thread shows throttled updates when no event comes."""
        if not self.live or self._ticker is not None or self.refresh_seconds <= 0:
            return
        self._ticker = threading.Thread(target=self._tick, name="progress-display", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()
