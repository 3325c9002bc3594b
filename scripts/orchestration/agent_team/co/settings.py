"""The `co` command line's config.json: validated once, then typed settings and engine overrides.

The document's file (`models`, `execution`, `monitoring`, `claude_cli`, `notifications`) is
checked against `schemas/co-config.schema.json`. Every key is either honoured (mapped onto the
engine's settings or used by `co` itself) or refused with its JSON path; a key we cannot honour
is accepted only at the document's default value, so the document's sample file loads as is.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from ..errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "co-config.schema.json"
#: Where `co init` writes the file and where `co` looks when neither --config nor the
#: environment names one.
DEFAULT_CONFIG = Path(".ai-agents") / "config.json"
ENV_CONFIG = "ORCHESTRATOR_CONFIG"
ENV_LOG_LEVEL = "ORCHESTRATOR_LOG_LEVEL"
ENV_WORKING_DIR = "ORCHESTRATOR_WORKING_DIR"
ENV_SLACK = "SLACK_WEBHOOK_URL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The document's sample configuration; `co init` writes it.
DOCUMENT_DEFAULTS: dict[str, Any] = {
    "models": {
        "manager": {"model": "claude-opus-5-5",
                    "description": "Planning, ordering and review of the backlog"},
        "worker": {"model": "claude-sonnet-5-5", "description": "Task execution"},
    },
    "execution": {
        "max_workers": 3, "worker_timeout": 1800, "manager_timeout": 300,
        "task_queue_timeout": 1.0, "default_working_dir": None, "max_turns": None,
        "max_retries": 3, "retry_base_delay": 1.0, "retry_max_delay": 60.0,
    },
    "monitoring": {
        "progress_interval": 10, "verbose_logging": False, "show_progress_bar": True,
        "enable_opus_review": True, "usage_warning_threshold": 80,
        "check_usage_before_start": True,
    },
    "claude_cli": {"command": "claude",
                   "flags": {"verbose": False, "dangerously_skip_permissions": False}},
    "notifications": {"slack": {"enabled": False, "webhook_url": None,
                                "notify_on_completion": True, "notify_on_error": True}},
}

#: Keys accepted only at one value, and why another value cannot be honoured.
_FIXED: dict[tuple[str, ...], tuple[Any, str]] = {
    ("execution", "task_queue_timeout"): (
        1.0, "co run hands each ready task to a free worker the moment its dependencies are "
             "merged, so no worker waits on a queue; job-store workers set their wait with "
             "claude_coordinator.py --poll"),
}


@dataclass(frozen=True)
class ConfigValidationResult:
    """What `validate_config` found: errors stop a run, warnings are printed."""

    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def is_valid(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class SlackSettings:
    enabled: bool = False
    webhook_url: str | None = None
    notify_on_completion: bool = True
    notify_on_error: bool = True


@dataclass(frozen=True)
class CoSettings:
    """The effective `co` settings (the document calls this EnhancedConfig)."""

    manager_model: str | None = None
    worker_model: str | None = None
    max_workers: int = 3
    worker_timeout: float = 1800.0
    manager_timeout: float = 300.0
    default_working_dir: str | None = None
    max_turns: int | None = None
    max_retries: int = 3
    retry_base_delay: float = 1.0
    retry_max_delay: float = 60.0
    progress_interval: float = 10.0
    verbose_logging: bool = False
    show_progress_bar: bool = True
    enable_opus_review: bool = True
    usage_warning_threshold: float = 80.0
    check_usage_before_start: bool = True
    cli_command: str = "claude"
    cli_verbose: bool = False
    cli_skip_permissions: bool = False
    #: The `claude_cli` section as the file gave it (passed on to the CLI worker backend).
    claude_cli: dict[str, Any] = field(default_factory=dict)
    slack: SlackSettings = field(default_factory=SlackSettings)
    source: Path | None = None

    def engine_overrides(self) -> dict[str, Any]:
        """The engine config (orchestrator-config.json shape) this file sets; None = unset."""
        agents: dict[str, Any] = {}
        if self.manager_model:
            agents["manager"] = {"model": self.manager_model}
        return {
            "model": self.worker_model,
            "agents": agents,
            "claude_cli": copy.deepcopy(self.claude_cli) or None,
            "coordination": {
                "max_workers": self.max_workers,
                "max_iterations": self.max_turns,
                "check_interval_seconds": self.progress_interval,
            },
            "retry": {
                "max_retries": self.max_retries,
                "base_delay_seconds": self.retry_base_delay,
                "max_delay_seconds": max(self.retry_max_delay, self.retry_base_delay),
                "request_timeout_seconds": self.manager_timeout,
            },
        }


@lru_cache(maxsize=1)
def co_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_config(data: Any) -> ConfigValidationResult:
    """Every problem with a config.json object, each with its JSON path."""
    validator = jsonschema.Draft202012Validator(co_schema())
    errors = [f"{_path(e.absolute_path)}: {e.message}"
              for e in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))]
    warnings: list[str] = []
    if errors or not isinstance(data, dict):
        return ConfigValidationResult(tuple(errors), ())
    for keys, (allowed, why) in _FIXED.items():
        value = _dig(data, keys)
        if value is not None and value != allowed:
            errors.append(f"{_path(keys)}: {value!r} cannot be honoured ({why}); "
                          f"remove the key or set it to {json.dumps(allowed)}.")
    if _dig(data, ("notifications", "slack", "webhook_url")):
        warnings.append("$.notifications.slack.webhook_url: a webhook URL is a secret; prefer "
                        f"the {ENV_SLACK} environment variable over the file.")
    execution = data.get("execution", {})
    if execution.get("retry_max_delay", 60.0) < execution.get("retry_base_delay", 1.0):
        errors.append("$.execution.retry_max_delay: smaller than retry_base_delay; "
                      "make it at least as large.")
    return ConfigValidationResult(tuple(errors), tuple(warnings))


def _dig(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = data
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def find_config(explicit: Path | None, working_dir: Path | None) -> Path | None:
    """--config, else ORCHESTRATOR_CONFIG, else `.ai-agents/config.json` when it exists."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(ENV_CONFIG)
    if from_env:
        return Path(from_env).expanduser()
    if working_dir is not None and (working_dir / DEFAULT_CONFIG).is_file():
        return working_dir / DEFAULT_CONFIG
    return None


def load_settings(path: Path | None) -> CoSettings:
    """Read, validate and type a config.json; no file means the document's defaults."""
    if path is None:
        return _from_data({}, None)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist. Pass --config with an existing "
                          f"file, fix {ENV_CONFIG}, or create one with `co init`.") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Config file {path} cannot be read as JSON: {exc}.") from None
    result = validate_config(data)
    if not result.is_valid:
        raise ConfigError(f"Config file {path} is invalid:\n" + "\n".join(
            f"  - {e}" for e in result.errors) + "\nEvery key is listed in the README's `co` "
            "section.")
    for warning in result.warnings:
        logging.getLogger("agent_team.co").warning("%s", warning)
    return _from_data(data, path)


def _from_data(data: Mapping[str, Any], source: Path | None) -> CoSettings:
    def get(*keys: str) -> Any:
        value = _dig(data, keys)
        return _dig(DOCUMENT_DEFAULTS, keys) if value is None else value

    url = _dig(data, ("notifications", "slack", "webhook_url")) or os.environ.get(ENV_SLACK)
    enabled = _dig(data, ("notifications", "slack", "enabled"))
    slack = SlackSettings(
        enabled=bool(url) if enabled is None else bool(enabled and url),
        webhook_url=url or None,
        notify_on_completion=bool(get("notifications", "slack", "notify_on_completion")),
        notify_on_error=bool(get("notifications", "slack", "notify_on_error")),
    )
    return CoSettings(
        manager_model=_dig(data, ("models", "manager", "model")),
        worker_model=_dig(data, ("models", "worker", "model")),
        max_workers=int(get("execution", "max_workers")),
        worker_timeout=float(get("execution", "worker_timeout")),
        manager_timeout=float(get("execution", "manager_timeout")),
        default_working_dir=_dig(data, ("execution", "default_working_dir")),
        max_turns=_dig(data, ("execution", "max_turns")),
        max_retries=int(get("execution", "max_retries")),
        retry_base_delay=float(get("execution", "retry_base_delay")),
        retry_max_delay=float(get("execution", "retry_max_delay")),
        progress_interval=float(get("monitoring", "progress_interval")),
        verbose_logging=bool(get("monitoring", "verbose_logging")),
        show_progress_bar=bool(get("monitoring", "show_progress_bar")),
        enable_opus_review=bool(get("monitoring", "enable_opus_review")),
        usage_warning_threshold=float(get("monitoring", "usage_warning_threshold")),
        check_usage_before_start=bool(get("monitoring", "check_usage_before_start")),
        cli_command=str(get("claude_cli", "command")),
        cli_verbose=bool(get("claude_cli", "flags", "verbose")),
        cli_skip_permissions=bool(get("claude_cli", "flags", "dangerously_skip_permissions")),
        claude_cli=copy.deepcopy(dict(data.get("claude_cli") or {})),
        slack=slack,
        source=source,
    )


def resolve_working_dir(flag: Path | None, settings: CoSettings) -> Path:
    """-d, else ORCHESTRATOR_WORKING_DIR, else execution.default_working_dir, else cwd."""
    chosen = flag or (Path(os.environ[ENV_WORKING_DIR]) if os.environ.get(ENV_WORKING_DIR)
                      else None)
    if chosen is None and settings.default_working_dir:
        chosen = Path(settings.default_working_dir)
    path = (chosen or Path.cwd()).expanduser()
    if not path.is_dir():
        raise ConfigError(f"Working directory {path} does not exist or is not a directory. "
                          f"Pass --working-dir/-d, or fix {ENV_WORKING_DIR} or "
                          "execution.default_working_dir.")
    return path.resolve()


def configure_logging(verbose: bool = False) -> int:
    """Apply ORCHESTRATOR_LOG_LEVEL (default WARNING, INFO with -v); returns the level."""
    name = os.environ.get(ENV_LOG_LEVEL, "").strip().upper()
    if name and name not in LOG_LEVELS:
        raise ConfigError(f"{ENV_LOG_LEVEL}={name!r} is not a log level; use one of "
                          f"{', '.join(LOG_LEVELS)}.")
    level = getattr(logging, name) if name else (logging.INFO if verbose else logging.WARNING)
    logger = logging.getLogger("agent_team")
    logger.setLevel(level)
    if not any(getattr(h, "_co_handler", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._co_handler = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return int(level)
