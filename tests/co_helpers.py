"""Shared pieces of the `co` tests: invoking the CLI, a project, a scripted session."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent_team.co.cli import main
from click.testing import CliRunner, Result

from tests.conftest import make_repo
from tests.orchestration_helpers import PASSING_TESTS, write_session


def co(*args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run `co ARGS` in-process, as a person would type it."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=dict(env or {}))


def make_project(path: Path, test_command: str = PASSING_TESTS) -> Path:
    """A repository with one commit and an engine config naming a fast test command."""
    make_repo(path, {"app/__init__.py": "", "README.md": "# app\n"})
    (path / ".git" / "info").mkdir(exist_ok=True)
    with (path / ".git" / "info" / "exclude").open("a") as fh:
        fh.write("/orchestrator-config.json\n")
    (path / "orchestrator-config.json").write_text(json.dumps({"test_command": test_command}))
    return path


def scripted(tmp: Path, agents: Mapping[str, list[dict[str, Any]]]) -> list[str]:
    """The global options that make `co` replay `agents` offline."""
    session = write_session(tmp / f"session-{len(list(tmp.glob('session-*')))}.json", agents)
    return ["--api-provider", "scripted", "--session", str(session)]
