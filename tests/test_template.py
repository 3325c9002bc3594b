"""The .ai-agents template that `co init` copies, and the guide's state template."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from agent_team.config import build_config, config_schema, load_config_file
from agent_team.roles import CONTEXT_CAP_CHARS, CONTEXT_FILES, read_context
from agent_team.state import TeamState
from agent_team.state_schema import encoder, new_state, validate_state

from tests.conftest import make_repo

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".ai-agents-template"
STATE = TEMPLATE / "state" / "team-communication.json"
GUIDE_STATE = ROOT / "examples" / "team-communication-template.json"
CONFIG = TEMPLATE / "orchestrator-config.json"
FIXED_TIME = "2025-01-01T00:00:00.000Z"


def installed(tmp_path: Path) -> Path:
    """A real repository with the template copied to .ai-agents/, as init does."""
    project = tmp_path / "project"
    make_repo(project)
    shutil.copytree(TEMPLATE, project / ".ai-agents")
    return project


# --- the state template -------------------------------------------------------------------------


def test_state_template_is_a_fresh_state_with_a_fixed_time() -> None:
    data = json.loads(STATE.read_text(encoding="utf-8"))
    expected = new_state("my-project")
    expected["last_updated"] = FIXED_TIME
    assert data == expected
    validate_state(data, STATE)


def test_state_template_is_written_as_the_engine_writes_it() -> None:
    data = json.loads(STATE.read_text(encoding="utf-8"))
    assert STATE.read_text(encoding="utf-8") == encoder().encode(data)


def test_guide_copy_is_identical_to_the_template() -> None:
    assert GUIDE_STATE.read_bytes() == STATE.read_bytes()


def test_copied_state_opens_and_takes_updates(tmp_path: Path) -> None:
    project = tmp_path / "my-app"
    target = project / ".ai-agents" / "state" / "team-communication.json"
    target.parent.mkdir(parents=True)
    shutil.copyfile(GUIDE_STATE, target)
    state = TeamState.for_project(project, create=False)
    assert state.read()["project_name"] == "my-project"
    state.append_update("manager", None, "note", "hello")
    assert state.read()["agent_updates"][0]["message"] == "hello"


# --- the config template ------------------------------------------------------------------------


def flatten(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf; role and model names become the README's placeholders."""
    paths = []
    for key, value in data.items():
        if prefix == "prices.":
            paths.append("prices.<provider/model>")
            continue
        path = prefix + ("<role>" if prefix == "agents." else key)
        if isinstance(value, dict) and value:
            paths += flatten(value, path + ".")
        else:
            paths.append(path)
    return sorted(set(paths))


def readme_keys() -> set[str]:
    """Keys in the README's Configuration table: `a.b`, `c` in one cell means a.b and a.c."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([^`]+)`", line.split("|")[1])
        parent = names[0].rsplit(".", 1)[0] + "." if "." in names[0] else ""
        keys.add(names[0])
        keys.update(name if "." in name else parent + name for name in names[1:])
    return keys


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        paths |= schema_paths(sub, f"{prefix}{key}.")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and prefix in ("agents.", "prices."):
        name = "<role>" if prefix == "agents." else "<provider/model>"
        paths.add(prefix + name)
        paths |= schema_paths(extra, f"{prefix}{name}.")
    return paths


def test_config_template_is_valid(tmp_path: Path) -> None:
    load_config_file(CONFIG)
    config = build_config(project_dir=installed(tmp_path))
    assert config.source is not None and config.source.name == "orchestrator-config.json"
    assert config["api_provider"] is None, "the template must not force a provider"


def test_every_config_template_key_is_documented_in_the_readme() -> None:
    documented = readme_keys()
    data = json.loads(CONFIG.read_text(encoding="utf-8"))
    missing = [key for key in flatten(data) if key not in documented]
    assert not missing, f"add these keys to the README's Configuration table: {missing}"


def test_every_documented_key_exists_in_the_schema() -> None:
    known = schema_paths(config_schema())
    unknown = sorted(key for key in readme_keys() if key not in known)
    assert not unknown, f"the README documents keys the config schema lacks: {unknown}"


# --- context files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONTEXT_FILES)
def test_context_file_fits_the_prompt_cap_and_guides_the_user(name: str) -> None:
    text = (TEMPLATE / "context" / name).read_text(encoding="utf-8")
    assert len(text.strip()) <= CONTEXT_CAP_CHARS, "the whole file must reach the agents"
    assert text.startswith("# ")
    assert text.count("\n## ") >= 3
    assert "Example" in text


def test_every_context_file_reaches_the_role_prompts(tmp_path: Path) -> None:
    context = read_context(installed(tmp_path))
    for name in CONTEXT_FILES:
        assert f"## {name}" in context
    assert "more characters in" not in context


# --- .gitignore ---------------------------------------------------------------------------------


def ignored(project: Path, paths: list[str]) -> set[str]:
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=project,
                            capture_output=True, text=True, check=False)
    return set(result.stdout.split())


def test_gitignore_keeps_run_files_out_and_shared_files_in(tmp_path: Path) -> None:
    project = installed(tmp_path)
    run_files = [
        ".ai-agents/state/team-communication.json.lock",
        ".ai-agents/state/team-communication.json.corrupt-20250101T000000000000Z",
        ".ai-agents/state/team-communication.json.v0-20250101T000000000000Z",
        ".ai-agents/state/.team-communication.json.k3j4h5.tmp",
        ".ai-agents/worktrees/login/TASK-001/app.py",
        ".ai-agents/logs/run.log",
        ".ai-agents/reports/20250101-000000-abcdef.md",
    ]
    kept = [
        ".ai-agents/state/team-communication.json",
        ".ai-agents/orchestrator-config.json",
        *(f".ai-agents/context/{name}" for name in CONTEXT_FILES),
    ]
    assert ignored(project, run_files) == set(run_files)
    assert ignored(project, kept) == set()
