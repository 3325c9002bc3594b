"""Running one command: own process group, bounded memory, a hard timeout, no secrets.

Both the `run_command` tool of the agents and the orchestrator's own test runs come through
`run_process`, so each gets the same guarantees: output is read as it comes and only its head
and tail are kept, a timeout ends the whole process group (background children included), and
the environment is `safe_environment()` unless the caller passes one. A command can still read
its parent's /proc entry; `hide_secrets_from_proc` masks the keys there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .redaction import is_secret_env_name, safe_environment

__all__ = ["CommandOutcome", "OutputBuffer", "hide_secrets_from_proc", "run_process"]

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


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a process from /proc, None when unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def _descendants(pid: int) -> dict[int, str]:
    """Every process started under `pid`, with its start time; empty without /proc.

    A command can leave its process group (`setsid`), out of reach of the group signal; while
    its parent lives, the process tree still leads to it.
    """
    try:
        names = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return {}
    children: dict[int, list[tuple[int, str]]] = {}
    for name in names:
        info = _stat(int(name))
        if info is not None:
            children.setdefault(info[0], []).append((int(name), info[1]))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child, start in children.get(stack.pop(), ()):
            if child not in found:
                found[child] = start
                stack.append(child)
    return found


def _kill_all(processes: dict[int, str]) -> None:
    """SIGKILL each process still running with the same start time (never a reused pid)."""
    for pid, start in processes.items():
        info = _stat(pid)
        if info is not None and info[1] == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


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


def hide_secrets_from_proc() -> int:
    """Mask secret values in this process's original environment block; returns how many.

    Any process of the same user, an agent's command included, can read
    /proc/<pid>/environ, which shows the block the process was started with whatever
    os.environ says since. Each secret is first re-set with putenv, so getenv and child
    processes keep the real value from a copy, then its bytes in the block are overwritten.
    Linux only; a no-op wherever the block cannot be found and checked first.
    """
    try:
        with open("/proc/self/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])
        with open("/proc/self/environ", "rb") as handle:
            shown = handle.read()
    except (OSError, IndexError, ValueError):
        return 0
    if not 0 < start < end or end - start < len(shown) or not shown:
        return 0
    block = ctypes.string_at(start, len(shown))
    if block != shown:
        return 0
    masked = 0
    offset = 0
    for entry in block.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        text = name.decode("utf-8", "replace")
        if equals and value and is_secret_env_name(text) and value.strip(b"*"):
            if os.environ.get(text) is not None:
                os.putenv(text, os.environ[text])
            ctypes.memset(start + offset + len(name) + 1, ord("*"), len(value))
            masked += 1
        offset += len(entry) + 1
    return masked


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
    `keep_bytes` are kept. On timeout the whole group gets SIGTERM, then SIGKILL, and so does
    every process started under the command that left the group meanwhile; background
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
            escaped = _descendants(proc.pid)
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE_SECONDS)
            _signal_group(proc.pid, signal.SIGKILL)
            _kill_all(escaped)
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
