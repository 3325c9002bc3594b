"""What a coding-agent CLI worker is: the config's `worker` entry, typed, and its outcome.

`agents.<role>.worker` in the config chooses how a role's tasks run: `builtin` (the tool
loop), `claude-code`, `codex`, `aider`, or `{"command": [...]}` for any other program. Each
backend module (`claude_code`, `codex`, `aider`, `generic`) turns a `CliRequest` into an
argument list and the program's own output into a `CliReport`; `runner` starts and stops the
process, `task` ties it to the orchestrator.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import Usage

BUILTIN = "builtin"
CLAUDE_CODE = "claude-code"
CODEX = "codex"
AIDER = "aider"
COMMAND = "command"
CLI_KINDS = (CLAUDE_CODE, CODEX, AIDER)
DEFAULT_TIMEOUT_SECONDS = 1800.0  # the co reference's worker_timeout
DEFAULT_MAX_TURNS = 30


@dataclass(frozen=True)
class WorkerSpec:
    """One role's CLI worker, built once from the validated config."""

    kind: str  # claude-code, codex, aider or command
    role: str
    command: tuple[str, ...] = ()  # executable (and fixed leading args), or the template
    args: tuple[str, ...] = ()  # extra arguments after the backend's own
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    credentials: tuple[str, ...] | None = None  # None: the backend's own defaults
    skip_permissions: bool = False
    verbose: bool = False
    output: str = "text"  # for `command`: text, claude-json or codex-jsonl
    model: str | None = None
    provider: str | None = None
    max_turns: int = DEFAULT_MAX_TURNS

    @property
    def program(self) -> str:
        return self.command[0] if self.command else self.kind


@dataclass(frozen=True)
class CliRequest:
    """Everything one invocation needs besides the spec."""

    prompt: str
    workdir: Path
    scratch: Path  # a private directory outside the worktree (history files, the prompt)
    session_id: str | None = None  # a new session's id, where the CLI lets us choose it
    resume_id: str | None = None  # continue this session instead of starting one


@dataclass(frozen=True)
class CliReport:
    """The figures a CLI printed about its own run; None where it said nothing."""

    text: str = ""
    is_error: bool = False
    error: str | None = None
    turns: int | None = None
    session_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_known: bool = False
    cost_usd: float | None = None
    api_calls: int = 0


@dataclass(frozen=True)
class Backend:
    """A coding-agent CLI: how to call it and how to read what it prints."""

    kind: str
    name: str
    program: str
    install: str
    credentials: Callable[[WorkerSpec], tuple[str, ...]]
    build: Callable[[WorkerSpec, Sequence[str], CliRequest], list[str]]
    parse: Callable[[str, str, int], CliReport]
    resumable: bool = False
    chooses_session_id: bool = False
    litter: tuple[str, ...] = ()  # files it leaves in the worktree, removed before the commit


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, (list, tuple)) else ()


def claude_command(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The Claude executable the reference documents configure, most specific first.

    `claude_cli.command` (co-cli-reference) wins over `orchestrator.claude_command`
    (portable-orchestrator); either may carry leading arguments ("npx claude").
    """
    for section, key in (("claude_cli", "command"), ("orchestrator", "claude_command")):
        value = (config.get(section) or {}).get(key)
        if isinstance(value, str) and value.strip():
            return tuple(shlex.split(value))
    return ()


def worker_spec(config: Mapping[str, Any], role: str,
                role_settings: Mapping[str, Any] | None = None) -> WorkerSpec | None:
    """The CLI worker of `role`, or None when the role uses the built-in tool loop."""
    settings = dict(role_settings if role_settings is not None
                    else (config.get("agents") or {}).get(role) or {})
    worker = settings.get("worker", BUILTIN)
    entry: dict[str, Any] = {"type": worker} if isinstance(worker, str) else dict(worker)
    kind = COMMAND if "command" in entry else str(entry.get("type", BUILTIN))
    if kind == BUILTIN:
        return None
    flags = (config.get("claude_cli") or {}).get("flags") or {}
    coordination = config.get("coordination") or {}
    if kind == COMMAND:
        command = _strings(entry["command"])
    elif entry.get("executable"):
        command = tuple(shlex.split(str(entry["executable"])))
    elif kind == CLAUDE_CODE:
        command = claude_command(config)
    else:
        command = ()
    credentials = entry.get("credentials")
    return WorkerSpec(
        kind=kind,
        role=role,
        command=command,
        args=_strings(entry.get("args")),
        timeout_seconds=float(entry.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS),
        credentials=_strings(credentials) if credentials is not None else None,
        skip_permissions=bool(entry.get("dangerously_skip_permissions",
                                        flags.get("dangerously_skip_permissions", False))),
        verbose=bool(flags.get("verbose", False)) and kind == CLAUDE_CODE,
        output=str(entry.get("output", "text")),
        model=settings.get("model"),
        provider=settings.get("provider"),
        max_turns=int(settings.get("max_turns") or coordination.get("max_iterations")
                      or DEFAULT_MAX_TURNS),
    )


def find_executable(name: str) -> str | None:
    """A path to run: an explicit path that is executable, or the name found on PATH."""
    if os.sep in name:
        path = Path(name).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(name)


def require_executable(spec: WorkerSpec, backend_program: str, install: str) -> list[str]:
    """The leading argv of `spec` with its executable resolved; ConfigError when missing."""
    command = list(spec.command) or [backend_program]
    found = find_executable(command[0])
    if found is None:
        raise ConfigError(
            f"The {spec.role} role runs its tasks with {command[0]!r}, which is not installed "
            f"or not on PATH. {install}"
        )
    return [found, *command[1:]]
