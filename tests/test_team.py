"""The team is configuration, built once and without side effects; a run is one `RunContext`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from agent_team.scripted import ScriptedModel
from agent_team.team import build_team, load_settings
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    PASSING_TESTS,
    diamond_session,
    git,
    read_state,
    snapshot,
)


def test_a_team_is_frozen_typed_and_built_without_side_effects(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project)
    before = snapshot(project)
    files_before = sorted(p.relative_to(project) for p in project.rglob("*")
                          if ".git" not in p.parts)
    environ = Path(f"/proc/{os.getpid()}/environ").read_bytes()

    settings = load_settings(project, overrides={"coordination": {"max_workers": 3}})
    team = build_team(project, settings, model=ScriptedModel({}))

    assert isinstance(settings.coordination.max_workers, int)
    assert settings.coordination.max_workers == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        team.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.coordination.max_workers = 9  # type: ignore[misc]
    # building a team writes nothing: not the process's environment, not the repository
    assert Path(f"/proc/{os.getpid()}/environ").read_bytes() == environ
    assert snapshot(project) == before
    assert sorted(p.relative_to(project) for p in project.rglob("*")
                  if ".git" not in p.parts) == files_before


def test_a_run_takes_the_run_id_it_is_given(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project)
    orchestrator = FileBasedOrchestrator(project, model=ScriptedModel(diamond_session()),
                                         test_command=PASSING_TESTS, output=lambda _: None,
                                         run_id="nightly-42")

    summary = orchestrator.run("Diamond feature")

    assert summary["exit_code"] == 0
    assert [r["run_id"] for r in read_state(project)["runs"]] == ["nightly-42"]
    assert (project / ".ai-agents" / "logs" / "nightly-42.jsonl").is_file()
    assert (project / ".ai-agents" / "reports" / "nightly-42.md").is_file()
    assert git(project, "rev-parse", "--verify", "feature/diamond-feature")
