"""Running one command: own process group, bounded memory, a hard timeout, no secrets.

Both the `run_command` tool of the agents and the orchestrator's own test runs come through
`run_process`, so each gets the same guarantees: output is read as it comes and only its head
and tail are kept, a timeout ends the whole process group (background children included), and
the environment is `safe_environment()` unless the caller passes one.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .redaction import safe_environment

__all__ = ["CommandOutcome", "OutputBuffer", "run_process"]

DEFAULT_KEEP_BYTES = 16_384
KILL_GRACE_SECONDS = 2.0
DRAIN_SECONDS = 1.0
READ_CHUNK = 65_536


@dataclass(frozen=True)
class CommandOutcome:
    """A finished (or killed) process: real exit code and bounded output."""

    argv: tuple[str, ...]
    exit_code: int
    output: str
    dropped_bytes: int
    timed_out: bool
    duration: float


class OutputBuffer:
    """Keeps the first and last `keep` bytes of a stream, counting what falls between."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.keep - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            excess = len(self.tail) - self.keep
            if excess > 0:
                del self.tail[:excess]
                self.dropped += excess

    def text(self) -> str:
        """Head and tail decoded, with a marker saying how much was cut between them."""
        if not self.dropped:
            return bytes(self.head + self.tail).decode("utf-8", "replace")
        return (
            self.head.decode("utf-8", "replace")
            + f"\n[... {self.dropped:,} bytes of output cut ...]\n"
            + self.tail.decode("utf-8", "replace")
        )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pump(proc: subprocess.Popen[bytes], buffer: OutputBuffer, deadline: float) -> bool:
    """Read output until the process ends; False when the deadline came first."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if selector.select(min(remaining, 0.25)):
                chunk = os.read(fd, READ_CHUNK)
                if chunk:
                    buffer.add(chunk)
                    continue
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                    return True
                except subprocess.TimeoutExpired:
                    return False
            elif proc.poll() is not None:
                return True  # exited; a background child still holds the pipe open


def interpreter_argv(argv: Sequence[str]) -> list[str]:
    """Run `python` / `python3` as the interpreter the orchestrator itself runs on.

    Agents and test commands say "python"; on many systems only python3 exists, and the
    project's dependencies are installed for the interpreter running the orchestrator.
    """
    argv = list(argv)
    if argv and argv[0] in ("python", "python3", Path(sys.executable).name):
        argv[0] = sys.executable
    return argv


def command_environment() -> dict[str, str]:
    """The environment of every command the team runs: no secrets, and no bytecode files.

    Python writes `__pycache__/` next to the sources it imports; in an agent's worktree those
    files would be committed and then conflict between branches.
    """
    environment = safe_environment()
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return environment


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    keep_bytes: int = DEFAULT_KEEP_BYTES,
) -> CommandOutcome:
    """Run an argument list in its own process group with bounded memory and a hard timeout.

    Output (stdout and stderr interleaved) is read incrementally and only its first and last
    `keep_bytes` are kept. On timeout the whole group gets SIGTERM, then SIGKILL; background
    processes the command left behind are ended with it either way. `env` is the complete
    environment of the command; None means `command_environment()`, never the secrets.

    Raises:
        OSError: the command could not be started (FileNotFoundError when it does not exist).
    """
    argv = tuple(argv)
    environment = command_environment() if env is None else dict(env)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    buffer = OutputBuffer(keep_bytes)
    try:
        timed_out = not _pump(proc, buffer, started + timeout)
        if timed_out:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_SECONDS)
            _signal_group(proc.pid, signal.SIGKILL)
            _pump(proc, buffer, time.monotonic() + DRAIN_SECONDS)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
    return CommandOutcome(
        argv,
        proc.returncode,
        buffer.text(),
        buffer.dropped,
        timed_out,
        time.monotonic() - started,
    )
