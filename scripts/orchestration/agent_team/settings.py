"""Typed settings of a team, built once from the validated configuration.

`config.build_config` merges defaults < config file < flags and validates the result against
the JSON schema; `Settings.from_config` then turns it into frozen dataclasses, so the rest of
the engine reads `settings.coordination.max_workers`, never `int(config[...])`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from .config import Config


@dataclass(frozen=True)
class Coordination:
    """How the team works together (`coordination.*` in the config file)."""

    check_interval_seconds: float = 1.0
    max_iterations: int = 30
    auto_merge: bool = False
    parallel_execution: bool = True
    max_workers: int = 3
    max_plan_attempts: int = 3
    max_task_attempts: int = 1
    max_tasks: int = 100
    command_timeout_seconds: float = 300.0
    test_timeout_seconds: float = 900.0
    worktree_root: str = ".ai-agents/worktrees"
    stuck_repeat_limit: int = 3
    stuck_idle_turns: int = 8
    worktree_setup: tuple[str, ...] = ()
    worktree_copy: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Budgets of one run; None means no limit."""

    max_api_calls: int | None = None
    token_budget: int | None = None
    cost_limit_usd: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RetrySettings:
    """Retries of transient API errors."""

    max_retries: int = 4
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0
    retry_after_ceiling_seconds: float = 60.0
    request_timeout_seconds: float = 600.0

    def as_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({key: _freeze(value) for key, value in data.items()})


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _frozen(value)
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


_FIELDS = ("api_provider", "model", "base_url", "session", "test_command", "agents",
           "coordination", "limits", "retry", "prices", "project_dir")


@dataclass(frozen=True)
class Settings:
    """The effective settings of a team: defaults, then the config file, then flags."""

    api_provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    session: str | None = None
    test_command: str | None = None
    agents: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _frozen({}))
    coordination: Coordination = field(default_factory=Coordination)
    limits: Limits = field(default_factory=Limits)
    retry: RetrySettings = field(default_factory=RetrySettings)
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=lambda: _frozen({}))
    #: Sections read by one component only (`claude_cli`, `orchestrator`, `storage`, ...).
    extra: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    source: Path | None = None

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        """Build from a configuration that already passed schema validation."""
        data = config.data
        return cls(
            api_provider=data.get("api_provider"),
            model=data.get("model"),
            base_url=data.get("base_url"),
            session=data.get("session"),
            test_command=data.get("test_command"),
            agents=_frozen(data.get("agents") or {}),
            coordination=Coordination(**cast(dict[str, Any], {
                key: tuple(value) if isinstance(value, list) else value
                for key, value in data["coordination"].items()})),
            limits=Limits(**data["limits"]),
            retry=RetrySettings(**data["retry"]),
            prices=_frozen(data.get("prices") or {}),
            extra=_frozen({key: value for key, value in data.items() if key not in _FIELDS}),
            source=config.source,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """Rebuild from `to_dict()` output (a run's stored effective settings)."""
        from .config import build_config

        config = build_config(overrides=dict(data))
        return cls.from_config(config)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the config file's shape, for a run's self-describing record."""
        return {
            "api_provider": self.api_provider,
            "model": self.model,
            "base_url": self.base_url,
            "session": self.session,
            "test_command": self.test_command,
            "agents": _thaw(self.agents),
            "coordination": _thaw(asdict(self.coordination)),
            "limits": self.limits.as_dict(),
            "retry": asdict(self.retry),
            "prices": _thaw(self.prices),
            **_thaw(self.extra),
        }

    @property
    def max_workers(self) -> int:
        """Agents at once: `max_workers`, or one when parallel execution is off."""
        if not self.coordination.parallel_execution:
            return 1
        return self.coordination.max_workers
