"""Roles: who is on the team, what each one is told, and which model settings each uses.

A role is a name, a system prompt, its specialties (shown to the manager when it plans), and
model settings. Defaults live in `prompts/`; users add roles by overriding
`get_agent_types()` in a subclass or by an `agents.<role>` entry with a `system` in the config.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .errors import ConfigError

PROMPTS_DIR = Path(__file__).parent / "prompts"
MANAGER = "manager"
DEFAULT_WORKERS = ("backend-dev", "frontend-dev", "qa-tester")
ROLE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
CONTEXT_FILES = ("architecture.md", "api-contracts.md", "coding-standards.md")
CONTEXT_CAP_CHARS = 6000

_SPECIALTIES = {
    "backend-dev": ["APIs", "business logic", "data models", "persistence", "unit tests"],
    "frontend-dev": ["user interfaces", "command-line interfaces", "client state", "API calls"],
    "qa-tester": ["test plans", "automated tests", "edge cases", "regressions"],
}


@cache
def load_prompt(name: str) -> str:
    """Read a prompt file shipped in the package."""
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def default_agent_types() -> dict[str, dict[str, Any]]:
    """The default worker roles in the guide's `get_agent_types()` shape."""
    return {
        role: {"system": load_prompt(role), "specialties": list(_SPECIALTIES[role])}
        for role in DEFAULT_WORKERS
    }


@dataclass(frozen=True)
class Role:
    """Everything needed to run one kind of agent."""

    name: str
    system_prompt: str
    specialties: tuple[str, ...] = ()
    model: str | None = None
    provider: str | None = None
    base_url: str | None = None
    max_tokens: int = 8000
    temperature: float | None = None
    max_turns: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


def validate_role_name(name: str, *, source: str) -> None:
    if not isinstance(name, str) or not ROLE_NAME.fullmatch(name):
        raise ConfigError(
            f"Role name {name!r} in {source} is not valid: use lowercase letters, digits, '-' "
            "or '_', starting with a letter, at most 40 characters (it becomes part of a "
            "branch name)."
        )


def build_roles(
    agent_types: Mapping[str, Mapping[str, Any]],
    agent_settings: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    source: str = "get_agent_types()",
) -> dict[str, Role]:
    """Combine worker types, config-defined roles and per-role settings into Role objects.

    The manager is always present. A config entry with a `system` prompt adds a role; an entry
    without one only tunes the settings of an existing role.
    """
    agent_settings = agent_settings or {}
    types: dict[str, Mapping[str, Any]] = {
        MANAGER: {"system": load_prompt(MANAGER), "specialties": ["planning", "integration"]}
    }
    for name, spec in agent_types.items():
        validate_role_name(name, source=source)
        system = spec.get("system") if isinstance(spec, Mapping) else None
        if not isinstance(system, str) or not system.strip():
            raise ConfigError(
                f"Agent type {name!r} from {source} needs a 'system' prompt string, e.g. "
                "{'system': 'You are a data engineer...', 'specialties': ['ETL']}."
            )
        types[name] = spec
    for name, settings in agent_settings.items():
        if name not in types:
            if "system" not in settings:
                raise ConfigError(
                    f"The config sets agents.{name} but there is no role {name!r}. Add a "
                    f"\"system\" prompt to define it, or use one of: {', '.join(sorted(types))}."
                )
            validate_role_name(name, source="the config's agents section")
            if not isinstance(settings["system"], str) or not settings["system"].strip():
                raise ConfigError(
                    f"agents.{name}.system in the config is empty: give the new role a system "
                    "prompt, e.g. \"You are a data engineer...\"."
                )
            types[name] = settings
    roles = {}
    for name, spec in types.items():
        settings = dict(agent_settings.get(name, {}))
        system = settings.get("system")
        if not isinstance(system, str) or not system.strip():
            system = spec["system"]
        specialties = settings.get("specialties") or spec.get("specialties") or ()
        if isinstance(specialties, str):
            specialties = (specialties,)
        roles[name] = Role(
            name=name,
            system_prompt=system.strip(),
            specialties=tuple(specialties),
            model=settings.get("model"),
            provider=settings.get("provider"),
            base_url=settings.get("base_url"),
            max_tokens=int(settings.get("max_tokens", 8000)),
            temperature=settings.get("temperature"),
            max_turns=settings.get("max_turns"),
            settings=settings,
        )
    return roles


_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def read_context(project_dir: Path, *, cap: int = CONTEXT_CAP_CHARS) -> str:
    """The project's `.ai-agents/context/*.md` files, each capped, for the role prompts.

    HTML comments (the template's guidance for people) are left out, and so is a file that
    holds nothing but headings, so unfilled templates cost no tokens.
    """
    parts = []
    context_dir = project_dir / ".ai-agents" / "context"
    for name in CONTEXT_FILES:
        path = context_dir / name
        if not path.is_file():
            continue
        text = _HTML_COMMENT.sub("", path.read_text(encoding="utf-8", errors="replace"))
        text = re.sub(r"\n{3,}", "\n\n", text).strip()
        if not any(line.strip() and not line.lstrip().startswith("#")
                   for line in text.splitlines()):
            continue  # headings only: a template nobody filled in
        if len(text) > cap:
            text = text[:cap] + f"\n[... {len(text) - cap} more characters in {name} ...]"
        parts.append(f"## {name}\n\n{text}")
    return "\n\n".join(parts)
