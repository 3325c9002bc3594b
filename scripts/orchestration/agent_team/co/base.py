"""What every `co` command shares: the context of the group's options, the working-directory
and JSON options, and turning the engine's errors into messages and exit codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import EXIT_BAD_INPUT, AgentTeamError, PlanError, UserError
from .settings import CoSettings, find_config, load_settings
from .settings import resolve_working_dir as _resolve_working_dir

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Something the person typed or pointed at is wrong; exit code 2."""

    exit_code = EXIT_BAD_INPUT


@dataclass
class CoContext:
    """What the group's options decided, read by every command."""

    config_path: Path | None = None
    api_provider: str | None = None
    session: Path | None = None
    model_name: str | None = None
    _settings: CoSettings | None = field(default=None, repr=False)

    def settings(self, working_dir: Path | None = None) -> CoSettings:
        if self._settings is None:
            with errors_as_click():
                self._settings = load_settings(find_config(self.config_path, working_dir))
        assert self._settings is not None
        return self._settings

    def working_dir(self, flag: Path | None) -> Path:
        with errors_as_click():
            settings = self.settings(flag)
            path = _resolve_working_dir(flag, settings)
            if self._settings is not None and self._settings.source is None:
                # The project's own .ai-agents/config.json, once the directory is known.
                self._settings = load_settings(find_config(self.config_path, path))
            return path


class errors_as_click:  # noqa: N801 - used as a context manager, reads like one
    """Turn the engine's errors into click errors with the right exit codes."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, PlanError):
            problems = "".join(f"\n  - {p}" for p in exc.errors)
            raise BadInput(f"{exc}{problems}") from None
        if isinstance(exc, UserError):
            raise BadInput(str(exc)) from None
        if isinstance(exc, AgentTeamError):
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        return None


def working_dir_option(func: F) -> F:
    """-d/--working-dir (also --project-dir), default ORCHESTRATOR_WORKING_DIR or the cwd."""
    return click.option(
        "--working-dir", "-d", "--project-dir", "working_dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The project's git repository (default: $ORCHESTRATOR_WORKING_DIR, "
             "execution.default_working_dir, or the current directory).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")(func)
