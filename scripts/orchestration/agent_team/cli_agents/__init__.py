"""Coding-agent CLIs (Claude Code, Codex, aider, any command) as workers of a role."""

from __future__ import annotations

from ..errors import CliAgentError
from .preflight import CliStatus, Problem, cli_statuses, preflight, raise_on_problems
from .runner import Invocation, Wrapper, run_invocation
from .spec import CliReport, WorkerSpec, worker_spec
from .task import backend_for, run_cli_task

__all__ = [
    "CliAgentError",
    "CliReport",
    "CliStatus",
    "Invocation",
    "Problem",
    "WorkerSpec",
    "Wrapper",
    "backend_for",
    "cli_statuses",
    "preflight",
    "raise_on_problems",
    "run_cli_task",
    "run_invocation",
    "worker_spec",
]
