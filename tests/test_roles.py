"""Roles: the default team, custom roles from subclasses and config, per-role settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import ConfigError
from agent_team.roles import (
    CONTEXT_CAP_CHARS,
    DEFAULT_WORKERS,
    MANAGER,
    PROMPTS_DIR,
    build_roles,
    default_agent_types,
    load_prompt,
    read_context,
    validate_role_name,
)

# The usage guide's "Custom Agent Types" example.
GUIDE_AGENT_TYPES: dict[str, dict[str, Any]] = {
    "data-engineer": {
        "system": "You are a data engineer...",
        "specialties": ["pipelines", "ETL", "data modeling"],
    },
    "ml-engineer": {
        "system": "You are an ML engineer...",
        "specialties": ["model training", "deployment"],
    },
}


def test_default_roles_with_prompts_from_files() -> None:
    roles = build_roles(default_agent_types())
    assert set(roles) == {MANAGER, "backend-dev", "frontend-dev", "qa-tester"}
    for name in (MANAGER, *DEFAULT_WORKERS):
        text = (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()
        assert text, f"prompts/{name}.md is empty"
        assert roles[name].system_prompt == text
        assert roles[name].name == name
        assert roles[name].specialties, f"{name} has no specialties for the manager to see"
    assert "backend developer" in roles["backend-dev"].system_prompt
    assert "QA" in roles["qa-tester"].system_prompt
    assert roles[MANAGER].specialties == ("planning", "integration")


def test_default_role_settings() -> None:
    role = build_roles(default_agent_types())["backend-dev"]
    assert role.max_tokens == 8000
    assert role.model is None
    assert role.provider is None
    assert role.temperature is None
    assert role.max_turns is None


def test_default_agent_types_is_a_fresh_copy() -> None:
    first = default_agent_types()
    first["backend-dev"]["specialties"].append("mutated")
    assert "mutated" not in default_agent_types()["backend-dev"]["specialties"]


def test_load_prompt_reads_worker_rules() -> None:
    assert load_prompt("worker-rules").startswith("How you work:")


def test_subclass_style_agent_types_replace_the_defaults() -> None:
    roles = build_roles(GUIDE_AGENT_TYPES)
    assert set(roles) == {MANAGER, "data-engineer", "ml-engineer"}
    assert roles["data-engineer"].system_prompt == "You are a data engineer..."
    assert roles["data-engineer"].specialties == ("pipelines", "ETL", "data modeling")
    assert roles["ml-engineer"].specialties == ("model training", "deployment")
    assert roles[MANAGER].system_prompt == load_prompt(MANAGER)


def test_subclass_can_extend_the_defaults() -> None:
    roles = build_roles({**default_agent_types(), **GUIDE_AGENT_TYPES})
    assert set(roles) == {MANAGER, *DEFAULT_WORKERS, "data-engineer", "ml-engineer"}


def test_agent_type_without_specialties() -> None:
    roles = build_roles({"ops": {"system": "You run deployments."}})
    assert roles["ops"].specialties == ()


def test_single_specialty_string_is_one_specialty() -> None:
    roles = build_roles({"ops": {"system": "x", "specialties": "deployments"}})
    assert roles["ops"].specialties == ("deployments",)


@pytest.mark.parametrize(
    "spec", [{}, {"specialties": ["x"]}, {"system": 42}, {"system": "   "}, "You are ops"]
)
def test_agent_type_needs_a_system_prompt(spec: Any) -> None:
    with pytest.raises(ConfigError, match="needs a 'system' prompt string"):
        build_roles({"ops": spec})


def test_config_entry_with_system_defines_a_new_role() -> None:
    roles = build_roles(
        default_agent_types(),
        {"security-reviewer": {"system": "  You review code for security.  ",
                               "specialties": ["auth", "OWASP"], "model": "claude-opus-4-5"}},
    )
    role = roles["security-reviewer"]
    assert role.system_prompt == "You review code for security."
    assert role.specialties == ("auth", "OWASP")
    assert role.model == "claude-opus-4-5"
    assert "backend-dev" in roles


def test_config_entry_without_system_for_unknown_role() -> None:
    with pytest.raises(ConfigError) as info:
        build_roles(default_agent_types(), {"devops": {"max_tokens": 4000}})
    message = str(info.value)
    assert "agents.devops" in message
    assert '"system"' in message
    assert "backend-dev, frontend-dev, manager, qa-tester" in message


def test_config_entry_with_blank_system_for_new_role() -> None:
    with pytest.raises(ConfigError, match=r"agents\.devops\.system .* is empty"):
        build_roles(default_agent_types(), {"devops": {"system": "  "}})


def test_config_system_overrides_an_existing_prompt() -> None:
    roles = build_roles(default_agent_types(), {"backend-dev": {"system": "Write Go only."}})
    assert roles["backend-dev"].system_prompt == "Write Go only."
    assert roles["frontend-dev"].system_prompt == load_prompt("frontend-dev")


def test_blank_config_system_keeps_the_existing_prompt() -> None:
    roles = build_roles(default_agent_types(), {"backend-dev": {"system": " "}})
    assert roles["backend-dev"].system_prompt == load_prompt("backend-dev")


def test_per_role_settings_are_carried() -> None:
    settings = {
        "manager": {"max_tokens": 8000, "temperature": 0.7},
        "backend-dev": {
            "model": "gpt-4.1-mini",
            "provider": "openai",
            "base_url": "http://127.0.0.1:11434/v1",
            "max_tokens": 4096,
            "temperature": 0.3,
            "max_turns": 25,
        },
    }
    roles = build_roles(default_agent_types(), settings)
    backend = roles["backend-dev"]
    assert backend.model == "gpt-4.1-mini"
    assert backend.provider == "openai"
    assert backend.base_url == "http://127.0.0.1:11434/v1"
    assert backend.max_tokens == 4096
    assert backend.temperature == 0.3
    assert backend.max_turns == 25
    assert dict(backend.settings) == settings["backend-dev"]
    assert roles[MANAGER].temperature == 0.7
    assert roles["frontend-dev"].temperature is None
    assert roles["frontend-dev"].max_tokens == 8000


def test_settings_can_change_specialties() -> None:
    roles = build_roles(default_agent_types(), {"qa-tester": {"specialties": ["load tests"]}})
    assert roles["qa-tester"].specialties == ("load tests",)


@pytest.mark.parametrize(
    "name",
    ["Backend", "backend dev", "1dev", "-dev", "dev/ops", "a" * 41, "", "dev\n", "dév", "dev.ops"],
)
def test_invalid_role_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not valid"):
        validate_role_name(name, source="get_agent_types()")
    with pytest.raises(ConfigError, match="is not valid"):
        build_roles({name: {"system": "x"}})
    with pytest.raises(ConfigError, match="is not valid"):
        build_roles({}, {name: {"system": "x"}})


@pytest.mark.parametrize("name", ["ops", "data-engineer", "ml_engineer", "a" * 40, "qa2"])
def test_valid_role_names(name: str) -> None:
    validate_role_name(name, source="test")
    assert build_roles({name: {"system": "x"}})[name].name == name


def test_role_name_error_names_its_source() -> None:
    with pytest.raises(ConfigError, match="in the config's agents section"):
        build_roles({}, {"Bad Name": {"system": "x"}})


def write_context(project: Path, name: str, text: str) -> None:
    directory = project / ".ai-agents" / "context"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")


def test_read_context_without_files(tmp_path: Path) -> None:
    assert read_context(tmp_path) == ""


def test_read_context_joins_known_files_in_order(tmp_path: Path) -> None:
    write_context(tmp_path, "coding-standards.md", "Use type hints.\n")
    write_context(tmp_path, "architecture.md", "\n Flask app, SQLite.\n")
    write_context(tmp_path, "api-contracts.md", "   \n")
    write_context(tmp_path, "notes.md", "not a context file")
    text = read_context(tmp_path)
    assert text == (
        "## architecture.md\n\nFlask app, SQLite.\n\n## coding-standards.md\n\nUse type hints."
    )


def test_read_context_caps_each_file(tmp_path: Path) -> None:
    write_context(tmp_path, "architecture.md", "A" * (CONTEXT_CAP_CHARS + 500))
    write_context(tmp_path, "api-contracts.md", "B" * 100)
    text = read_context(tmp_path)
    assert text.count("A") == CONTEXT_CAP_CHARS
    assert "[... 500 more characters in architecture.md ...]" in text
    assert "B" * 100 in text
    assert "more characters in api-contracts.md" not in text


def test_read_context_custom_cap_and_exact_fit(tmp_path: Path) -> None:
    write_context(tmp_path, "architecture.md", "x" * 10)
    assert "more characters" not in read_context(tmp_path, cap=10)
    capped = read_context(tmp_path, cap=4)
    assert "xxxx\n[... 6 more characters in architecture.md ...]" in capped
    assert "xxxxx" not in capped


def test_read_context_tolerates_bad_bytes(tmp_path: Path) -> None:
    directory = tmp_path / ".ai-agents" / "context"
    directory.mkdir(parents=True)
    (directory / "architecture.md").write_bytes(b"caf\xe9 ok")
    assert "caf\ufffd ok" in read_context(tmp_path)


def test_context_drops_guidance_comments_and_unfilled_templates(tmp_path: Path) -> None:
    context = tmp_path / ".ai-agents" / "context"
    context.mkdir(parents=True)
    (context / "architecture.md").write_text(
        "# Architecture\n\n<!-- Fill this in:\nlong guidance -->\n\nA Flask API in src/api.\n")
    (context / "api-contracts.md").write_text("# API contracts\n\n<!-- guidance -->\n\n## Auth\n")
    text = read_context(tmp_path)
    assert "A Flask API in src/api." in text and "guidance" not in text
    assert "api-contracts.md" not in text
