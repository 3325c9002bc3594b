"""The service's config.yaml: validated against a JSON schema once, then a frozen dataclass.

Relative paths are resolved against the directory of the config file (the current directory
when there is none). The API key comes from `ORCHESTRATOR_API_KEY` first, then `api.api_key`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from agent_team.errors import ConfigError
from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).with_name("config.schema.json")
API_KEY_ENV = "ORCHESTRATOR_API_KEY"
MIN_KEY_LENGTH = 8
#: Placeholders shipped in the template; a server never starts with one of them.
PLACEHOLDER_KEYS = frozenset({"your-secure-api-key", "changeme", "change-me"})


@dataclass(frozen=True)
class ServiceConfig:
    """Every setting of the service, typed; built by `load_config` or directly in tests."""

    workspace_root: Path
    job_store: str | None = None
    project_roots: tuple[Path, ...] = ()
    execution_mode: str = "native"
    claude_command: str | None = None
    api_provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    session: Path | None = None
    max_concurrent_jobs: int = 2
    max_workers: int = 10
    default_timeout: float = 300.0
    max_retries: int = 2
    recursion_enabled: bool = True
    max_depth: int = 3
    host: str = "localhost"
    port: int = 8000
    api_key: str = field(default="", repr=False)
    max_body_bytes: int = 262_144
    log_level: str = "INFO"
    structured_logs: bool = True
    log_dir: Path | None = None

    def notes(self) -> list[str]:
        """Settings that are accepted but have no effect here, said once at start-up."""
        notes = []
        if self.execution_mode in ("wsl", "windows"):
            notes.append(
                f"orchestrator.execution_mode {self.execution_mode!r} is not applicable: agents "
                "run in this process on this operating system."
            )
        if self.claude_command:
            notes.append(
                "orchestrator.claude_command is not applicable: agents call the model API "
                "directly (api_provider/model), no CLI is started."
            )
        return notes


def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def config_errors(data: Any) -> list[str]:
    """Every problem of a config document, each with the path of the key concerned."""
    errors = []
    for error in sorted(_validator().iter_errors(data), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path) or "(top level)"
        if error.validator == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(known))
            for key in extra:
                name = f"{where}.{key}" if error.path else key
                errors.append(f"{name}: unknown key (known here: {', '.join(known)})")
            continue
        errors.append(f"{where}: {error.message}")
    return errors


def load_config(
    path: str | Path | None, *, environ: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Read, validate and type the config file; `None` means defaults only."""
    environ = os.environ if environ is None else environ
    data: Any = {}
    base = Path.cwd()
    if path is not None:
        file = Path(path).expanduser()
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"Config file {file} does not exist. Check --config.") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"Config file {file} could not be read as YAML: {exc}") from None
        base = file.resolve().parent
        problems = config_errors(data)
        if problems:
            raise ConfigError(
                f"Config file {file} is not valid:\n" + "\n".join(f"- {p}" for p in problems)
                + "\nSee config.template.yaml for every key."
            )
    return from_mapping(data, base=base, environ=environ)


def from_mapping(
    data: Mapping[str, Any], *, base: Path, environ: Mapping[str, str]
) -> ServiceConfig:
    def section(name: str) -> Mapping[str, Any]:
        value = data.get(name) or {}
        return value if isinstance(value, Mapping) else {}

    def resolve(value: str) -> Path:
        candidate = Path(value).expanduser()
        return (candidate if candidate.is_absolute() else base / candidate).resolve()

    orch, workers, recursion = section("orchestrator"), section("workers"), section("recursion")
    api, logging_ = section("api"), section("logging")
    session = orch.get("session")
    job_store = orch.get("job_store")
    if job_store and "://" not in str(job_store):
        job_store = str(resolve(str(job_store)))
    log_dir = logging_.get("log_dir")
    return ServiceConfig(
        workspace_root=resolve(str(orch.get("workspace_root", "./workspace"))),
        job_store=str(job_store) if job_store else None,
        project_roots=tuple(resolve(str(p)) for p in orch.get("project_roots", [])),
        execution_mode=str(orch.get("execution_mode", "native")),
        claude_command=orch.get("claude_command") or None,
        api_provider=orch.get("api_provider"),
        model=orch.get("model"),
        base_url=orch.get("base_url"),
        session=resolve(str(session)) if session else None,
        max_concurrent_jobs=int(orch.get("max_concurrent_jobs", 2)),
        max_workers=int(workers.get("max_workers", 10)),
        default_timeout=float(workers.get("default_timeout", 300)),
        max_retries=int(workers.get("max_retries", 2)),
        recursion_enabled=bool(recursion.get("enable", True)),
        max_depth=int(recursion.get("max_depth", 3)),
        host=str(api.get("host", "localhost")),
        port=int(api.get("port", 8000)),
        api_key=str(environ.get(API_KEY_ENV) or api.get("api_key") or ""),
        max_body_bytes=int(api.get("max_body_bytes", 262_144)),
        log_level=str(logging_.get("level", "INFO")),
        structured_logs=bool(logging_.get("enable_structured", True)),
        log_dir=resolve(str(log_dir)) if log_dir else None,
    )


def check_api_key(key: str) -> None:
    """Refuse to serve without a real key: an empty or template key would let anyone in."""
    if not key:
        raise ConfigError(
            f"No API key: set {API_KEY_ENV} in the environment or api.api_key in config.yaml "
            "(for example: export ORCHESTRATOR_API_KEY=$(python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'))."
        )
    if key in PLACEHOLDER_KEYS:
        raise ConfigError(
            "api.api_key is still the template's placeholder; choose a secret key of your own "
            f"or set {API_KEY_ENV}."
        )
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"The API key is too short: use at least {MIN_KEY_LENGTH} characters.")
