"""Before any work: is every configured CLI there? And for `check`: which CLIs, which versions.

A run whose config gives a role a CLI that is not installed stops with exit code 2 before a
branch exists, saying how to install it, instead of failing every task of that role later.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..process import run_process
from ..roles import MANAGER
from . import aider, claude_code, codex, generic
from .spec import CODEX, COMMAND, WorkerSpec, claude_command, find_executable, worker_spec

VERSION_TIMEOUT_SECONDS = 20.0
KNOWN = (claude_code.BACKEND, codex.BACKEND, aider.BACKEND)


@dataclass(frozen=True)
class Problem:
    """Why a run cannot start, and what to do about it."""

    role: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CliStatus:
    """One line of `check` about a coding-agent CLI."""

    name: str
    program: str
    path: str | None
    version: str | None
    install: str
    roles: tuple[str, ...]


def cli_workers(config: Mapping[str, Any]) -> list[WorkerSpec]:
    """Every role the config gives a CLI worker, in config order."""
    specs = []
    for role in (config.get("agents") or {}):
        spec = worker_spec(config, role)
        if spec is not None:
            specs.append(spec)
    return specs


def _program(spec: WorkerSpec) -> tuple[str, str]:
    if spec.kind == COMMAND:
        return spec.program, "install it or correct worker.command"
    backend = next(b for b in KNOWN if b.kind == spec.kind)
    return (spec.command[0] if spec.command else backend.program), backend.install


def preflight(config: Mapping[str, Any]) -> list[Problem]:
    """Problems that must stop a run before it starts: missing CLIs, impossible settings."""
    problems = []
    cost_limit = (config.get("limits") or {}).get("cost_limit_usd")
    for spec in cli_workers(config):
        program, install = _program(spec)
        where = f"agents.{spec.role}.worker"
        if spec.role == MANAGER:
            problems.append(Problem(spec.role, f"{where}: the manager plans and resolves "
                                    "conflicts with the built-in model; remove its worker."))
            continue
        if find_executable(program) is None:
            problems.append(Problem(spec.role, f"{where}: {program!r} is not installed or not "
                                    f"on PATH. {install}"))
        if spec.kind == CODEX and cost_limit is not None:
            problems.append(Problem(spec.role, f"{where}: Codex reports no cost, so "
                                    "limits.cost_limit_usd cannot be kept; use token_budget "
                                    "or another worker for this role."))
        if spec.kind == COMMAND:
            if spec.output not in generic.OUTPUTS:
                problems.append(Problem(spec.role, f"{where}.output must be one of "
                                        f"{', '.join(generic.OUTPUTS)}."))
            used = generic.placeholders_in(spec.command)
            if "model" in used and not spec.model:
                problems.append(Problem(spec.role, f"{where}.command uses {{model}} but "
                                        f"agents.{spec.role}.model is not set."))
            if not used & {"prompt", "prompt_file"}:
                problems.append(Problem(spec.role, f"{where}.command never passes the task: "
                                        "put {prompt} or {prompt_file} in one argument."))
    return problems


def raise_on_problems(problems: list[Problem]) -> None:
    """ConfigError (exit code 2) listing every problem; nothing has been changed yet."""
    if problems:
        raise ConfigError("The run cannot start:\n" + "\n".join(f"- {p}" for p in problems))


def version_of(path: str) -> str | None:
    """The first line `PROGRAM --version` prints, None when it fails."""
    try:
        outcome = run_process([path, "--version"], cwd=Path.cwd(),
                              timeout=VERSION_TIMEOUT_SECONDS, keep_bytes=4096)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in outcome.output.splitlines() if line.strip()]
    return lines[0][:200] if outcome.exit_code == 0 and lines else None


def cli_statuses(config: Mapping[str, Any]) -> list[CliStatus]:
    """Each known CLI (and each configured command): where it is, its version, who uses it."""
    specs = cli_workers(config)
    statuses = []
    for backend in KNOWN:
        roles = tuple(s.role for s in specs if s.kind == backend.kind)
        configured = next((s.command[0] for s in specs if s.kind == backend.kind and s.command),
                          None)
        if configured is None and backend.kind == claude_code.BACKEND.kind:
            configured = next(iter(claude_command(config)), None)
        program = configured or backend.program
        path = find_executable(program)
        statuses.append(CliStatus(backend.name, program, path,
                                  version_of(path) if path else None, backend.install, roles))
    for spec in specs:
        if spec.kind == COMMAND:
            path = find_executable(spec.program)
            statuses.append(CliStatus(spec.program, spec.program, path, None,
                                      "install it or correct worker.command", (spec.role,)))
    return statuses
