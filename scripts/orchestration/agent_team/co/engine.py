"""How `co` builds the engine's team from its config.json and its command-line options.

The layers: engine defaults < the project's orchestrator-config.json < `co`'s config.json
(mapped by `CoSettings.engine_overrides`) < flags. `claude_cli.*` passes through to the CLI
worker backend (`agents.<role>.worker` in orchestrator-config.json picks it for a role), and
`execution.worker_timeout` becomes those workers' wall-clock limit unless a role sets its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import _deep_merge
from ..models import ChatModel
from ..progress import ProgressDisplay
from ..run_context import RunContext
from ..run_frame import new_run
from ..settings import Settings
from ..team import Seams, Team, build_team, load_settings
from .settings import CoSettings

if TYPE_CHECKING:
    from .base import CoContext


def engine_overrides(ctx: CoContext, settings: CoSettings, **extra: Any) -> dict[str, Any]:
    """The engine config that `co`'s file and the group's flags set (None means unset)."""
    overrides = copy.deepcopy(settings.engine_overrides())
    _deep_merge(overrides, {
        "api_provider": ctx.api_provider,
        "session": str(ctx.session) if ctx.session else None,
        "model": ctx.model_name,
        **extra,
    })
    return overrides


def co_settings(ctx: CoContext, settings: CoSettings, project: Path, **extra: Any) -> Settings:
    """The team's typed settings; CLI workers get `execution.worker_timeout` as their limit."""
    overrides = engine_overrides(ctx, settings, **extra)
    built = load_settings(project, config_path=None, overrides=overrides)
    timed = cli_worker_timeouts(built.agents, settings.worker_timeout)
    if not timed:
        return built
    _deep_merge(overrides, {"agents": timed})
    return load_settings(project, config_path=None, overrides=overrides)


def cli_worker_timeouts(agents: Mapping[str, Mapping[str, Any]],
                        timeout: float) -> dict[str, Any]:
    """`agents.<role>.worker` entries of CLI workers that set no timeout, with `timeout`."""
    out: dict[str, Any] = {}
    for role, entry in agents.items():
        worker = entry.get("worker")
        if worker is None or worker == "builtin":
            continue
        spec = {"type": worker} if isinstance(worker, str) else dict(worker)
        if spec.get("type") == "builtin" or "timeout_seconds" in spec:
            continue
        out[role] = {"worker": {**spec, "timeout_seconds": timeout}}
    return out


def co_team(ctx: CoContext, settings: CoSettings, project: Path, *,
            model: ChatModel | None = None, output: Callable[[str], None] | None = None,
            progress: ProgressDisplay | None = None, seams: Seams | None = None,
            **extra: Any) -> Team:
    """A team for one `co` command; quiet unless `output` is given."""
    return build_team(project, co_settings(ctx, settings, project, **extra), name="co",
                      model=model, output=output or (lambda line: None), progress=progress,
                      seams=seams)


def manager_run(team: Team) -> RunContext:
    """A run that is never begun: for asking the manager outside `co run` (parse, plans)."""
    return new_run(team)
