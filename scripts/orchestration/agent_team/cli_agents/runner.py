"""Starting and ending one CLI agent process, and nothing else.

The CLI runs in its own session (so its own process group): a timeout, a budget stop or
Ctrl-C ends the whole tree, SIGTERM first, then SIGKILL after a grace period, including
children that left the group with `setsid` while their parent still led to them. Output goes
to files in a private directory, so a chatty CLI costs disk, not memory, and a killed one
still leaves what it printed (a session id) to read.

Every invocation passes through `prepare(invocation)` before it starts: the one place a
sandbox wraps the argument list and environment (bubblewrap around the argv, a private HOME).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..process import _descendants, _kill_all, _signal_group, command_environment

KILL_GRACE_SECONDS = 3.0
POLL_SECONDS = 0.1
MAX_READ_BYTES = 32 * 1024 * 1024
STDERR_KEEP_BYTES = 16_384


@dataclass(frozen=True)
class Invocation:
    """What will be executed: the argument list, its complete environment, where."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path


Wrapper = Callable[[Invocation], Invocation]


@dataclass(frozen=True)
class Finished:
    """How the process ended and what it printed."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    stopped: str | None  # the stop reason when a stop ended it
    duration: float
    pid: int


def cli_environment(credentials: Iterable[str],
                    environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The commands' scrubbed environment plus only the named credentials that are set."""
    environ = os.environ if environ is None else environ
    environment = command_environment()
    for name in credentials:
        value = environ.get(name)
        if value:
            environment[name] = value
    return environment


def prepare(invocation: Invocation, wrap: Wrapper | None = None) -> Invocation:
    """The invocation as it will really start: the sandbox's hook, identity without one."""
    return wrap(invocation) if wrap is not None else invocation


def _read(path: Path, limit: int) -> str:
    """The last `limit` bytes of a file, decoded."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - limit, 0))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _end_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group and its escaped descendants, then SIGKILL whatever is left."""
    escaped = _descendants(proc.pid)
    _signal_group(proc.pid, signal.SIGTERM)
    for pid in escaped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE_SECONDS)
    escaped.update(_descendants(proc.pid))
    _signal_group(proc.pid, signal.SIGKILL)
    _kill_all(escaped)


def run_invocation(
    invocation: Invocation,
    *,
    timeout: float,
    scratch: Path,
    should_stop: Callable[[], str | None] = lambda: None,
    wrap: Wrapper | None = None,
) -> Finished:
    """Run to the end, the timeout, or the first time `should_stop` gives a reason.

    Raises:
        OSError: the program could not be started.
    """
    invocation = prepare(invocation, wrap)
    stdout_path, stderr_path = scratch / "stdout", scratch / "stderr"
    started = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            invocation.argv, cwd=invocation.cwd, env=dict(invocation.env),
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
        )
    timed_out = False
    stopped: str | None = None
    try:
        while proc.poll() is None:
            stopped = should_stop()
            if stopped is not None:
                break
            if time.monotonic() - started > timeout:
                timed_out = True
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=POLL_SECONDS)
        if proc.poll() is None:
            _end_tree(proc)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # background children it left behind
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return Finished(
        exit_code=proc.returncode,
        stdout=_read(stdout_path, MAX_READ_BYTES),
        stderr=_read(stderr_path, STDERR_KEEP_BYTES),
        timed_out=timed_out,
        stopped=stopped,
        duration=time.monotonic() - started,
        pid=proc.pid,
    )


__all__ = ["Finished", "Invocation", "Wrapper", "cli_environment", "prepare", "run_invocation"]
