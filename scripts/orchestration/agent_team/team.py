"""A team: its settings, roles, models and repository; frozen and free of side effects.

Building a team reads the config file and the project's git metadata; it writes nothing and
starts nothing. One team can serve many runs (`RunContext`), one after another or, in a job
worker, side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import Config, build_config
from .git_workspace import GitWorkspace
from .model_factory import ModelFactory
from .models import ChatModel
from .progress import ProgressDisplay
from .recording import SessionRecorder
from .roles import Role, build_roles, default_agent_types
from .sandbox import SandboxPolicy
from .settings import Settings
from .task_record import TaskRecord


class Seams(Protocol):
    """The methods of the usage guide that a subclass may override; the steps call them.

    An orchestrator facade is its own seams. A team without one (a job worker) uses the
    plain step functions directly.
    """

    def call_agent(self, agent_id: str, role: Any, prompt: str | None = None,
                   system_prompt: str | None = None) -> str: ...

    def _get_system_prompt(self, agent_id: str) -> str: ...

    def _build_task_prompt(self, task: TaskRecord) -> str: ...


@dataclass(frozen=True)
class Team:
    """What does not change between runs: who works, with which models, on which repository."""

    name: str
    project_dir: Path
    settings: Settings
    roles: Mapping[str, Role]
    models: ModelFactory
    git: GitWorkspace
    output: Callable[[str], None]
    progress: ProgressDisplay | None = None
    recorder: SessionRecorder | None = None
    seams: Seams | None = None
    sandbox: SandboxPolicy = SandboxPolicy()

    @property
    def worktree_root(self) -> Path:
        return self.project_dir / self.settings.coordination.worktree_root

    def worktree_root_pattern(self) -> str:
        """The worktree root as a `.git/info/exclude` pattern."""
        return "/" + self.settings.coordination.worktree_root.strip("/") + "/"

    def say(self, line: str) -> None:
        """Print a line unless the live display shows the event log instead."""
        if self.progress is None:
            self.output(line)


def load_settings(
    project_dir: Path,
    *,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    stored: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from defaults < config file (or a run's stored settings) < flags."""
    if stored is not None:
        merged: dict[str, Any] = {key: value for key, value in stored.items()}
        config: Config = build_config(overrides=_layer(merged, overrides or {}))
    else:
        config = build_config(project_dir=project_dir, config_path=config_path,
                              overrides=overrides)
    return Settings.from_config(config)


def _layer(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            base[key] = _layer(dict(base[key]), value)
        else:
            base[key] = value
    return base


def build_team(
    project_dir: str | Path,
    settings: Settings,
    *,
    name: str = "team",
    agent_types: Mapping[str, Mapping[str, Any]] | None = None,
    model: ChatModel | None = None,
    output: Callable[[str], None] | None = None,
    progress: ProgressDisplay | None = None,
    record: str | Path | None = None,
    seams: Seams | None = None,
) -> Team:
    """Assemble a team. `agent_types` are the worker roles (default: the built-in ones)."""
    root = Path(project_dir).expanduser().resolve()
    git = GitWorkspace(root)
    roles = build_roles(dict(agent_types or default_agent_types()), dict(settings.agents))
    recorder = SessionRecorder(Path(record)) if record else None
    models = ModelFactory(settings, roles, injected=model, recorder=recorder)
    sandbox = SandboxPolicy.from_config(settings.extra.get("sandbox"))
    git.guard.policy = sandbox  # the user's hooks run in the same sandbox as agents' commands
    return Team(
        name=name, project_dir=root, settings=settings, roles=roles, models=models, git=git,
        output=output or (lambda line: print(line, flush=True)), progress=progress,
        recorder=recorder, seams=seams, sandbox=sandbox,
    )
