"""Run configuration: defaults < config file < command-line flags.

The config file (`orchestrator-config.json`) is validated against `schemas/config.schema.json`.
API keys are never read from it: they come from the environment only.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from .errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.json"
CONFIG_NAMES = ("orchestrator-config.json", ".ai-agents/orchestrator-config.json")
SECRET_KEYS = ("api_key", "apikey", "anthropic_api_key", "openai_api_key", "token", "secret")

DEFAULTS: dict[str, Any] = {
    "api_provider": None,
    "model": None,
    "base_url": None,
    "session": None,
    "test_command": None,
    "agents": {},
    "coordination": {
        "check_interval_seconds": 1,
        "max_iterations": 30,
        "auto_merge": False,
        "parallel_execution": True,
        "max_workers": 3,
        "max_plan_attempts": 3,
        "max_task_attempts": 1,
        "max_tasks": 100,
        "command_timeout_seconds": 300,
        "test_timeout_seconds": 900,
        "worktree_root": ".ai-agents/worktrees",
        "stuck_repeat_limit": 3,
        "stuck_idle_turns": 8,
        "worktree_setup": [],
        "worktree_copy": [],
    },
    "limits": {"max_api_calls": None, "token_budget": None, "cost_limit_usd": None},
    "retry": {
        "max_retries": 4,
        "base_delay_seconds": 1.0,
        "max_delay_seconds": 30.0,
        "retry_after_ceiling_seconds": 60.0,
        "request_timeout_seconds": 600.0,
    },
    "prices": {},
    "sandbox": {"enabled": True, "network": False, "env_allow": [], "hide_paths": []},
}


@lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _normalise_key(key: object) -> str:
    return str(key).lower().replace("-", "_")


_SECRET_NAMES = {_normalise_key(key) for key in SECRET_KEYS}


def _find_secret_keys(data: Any, path: str = "$") -> list[str]:
    """JSON paths of every key, at any depth (lists included), that names a secret."""
    found = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            if _normalise_key(key) in _SECRET_NAMES:
                found.append(f"{path}.{key}")
            found += _find_secret_keys(value, f"{path}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _find_secret_keys(value, f"{path}[{index}]")
    return found


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """Where the error is and what is wrong; an unknown key is named in the path itself."""
    where = _json_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        known = schema.get("properties", {})
        unknown = [key for key in error.instance if key not in known]
        if unknown and known:
            return (
                f"{where}.{unknown[0]}",
                f"unknown key {unknown[0]!r} (known keys here: {', '.join(sorted(known))})",
            )
    return where, error.message


def validate_config(data: Any, *, source: str) -> None:
    """Raise ConfigError naming the file, the JSON path and the fix."""
    secrets = _find_secret_keys(data)
    if secrets:
        raise ConfigError(
            f"{source} contains {', '.join(secrets)}. API keys are read from the environment "
            "only (ANTHROPIC_API_KEY, OPENAI_API_KEY); remove the key from the file and export "
            "it instead."
        )
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        where, message = _describe(errors[0])
        raise ConfigError(
            f"{source} is not a valid orchestrator config: at {where}: {message}. "
            "See the README's configuration section for every key."
        )


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist. Check --config.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"Config file {path} is not valid JSON: line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}."
        ) from None
    validate_config(data, source=str(path))
    return data


def find_config_file(project_dir: Path) -> Path | None:
    for name in CONFIG_NAMES:
        candidate = project_dir / name
        if candidate.is_file():
            return candidate
    return None


@dataclass
class Config:
    """The effective settings of one run."""

    data: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULTS))
    source: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def coordination(self) -> dict[str, Any]:
        return self.data["coordination"]

    @property
    def limits(self) -> dict[str, Any]:
        return self.data["limits"]

    @property
    def agents(self) -> dict[str, Any]:
        return self.data["agents"]


def build_config(
    *,
    project_dir: Path | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge defaults, the config file (explicit or found in the project) and flag overrides.

    `overrides` uses the file's shape; None values mean "flag not given" and are ignored.
    """
    data = copy.deepcopy(DEFAULTS)
    source = config_path or (find_config_file(project_dir) if project_dir else None)
    if source is not None:
        _deep_merge(data, load_config_file(source))
    if overrides:
        _deep_merge(data, _drop_none(overrides))
    validate_config(_drop_none(data), source="the effective configuration")
    return Config(data=data, source=source)


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out[key] = _drop_none(value)
        elif value is not None:
            out[key] = value
    return out
