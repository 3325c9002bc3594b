"""End-to-end runs of the simple orchestrator: one feature branch, one commit per task."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from agent_team.orchestrator import BaseOrchestrator
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator
from simple_orchestrator import SimpleOrchestrator, main

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    FAILURE_MODES,
    Run,
    file_at,
    finish_call,
    git,
    integration_turn,
    log_subjects,
    plan_turn,
    read_call,
    read_state,
    run_orchestrator,
    run_pytest_count,
    task,
    tasks_by_id,
    tool_results,
    tool_turn,
    worktree_paths,
    write_and_finish,
    write_call,
)


def run_simple(project: Path, agents: dict[str, list[dict[str, Any]]], feature: str, *,
               cls: type[BaseOrchestrator] = SimpleOrchestrator, **kwargs: Any) -> Run:
    return run_orchestrator(cls, project, agents, feature, **kwargs)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", {"README.md": "# project\n"})
    return (tmp_path / "project").resolve()


def test_demo_commits_each_task_as_its_role_and_reports_real_test_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")  # see test_bytecode_from_agent_commands

    result = CliRunner().invoke(main, ["--demo"], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    (repo,) = tmp_path.glob("agent-team-demo-*/todo-app")
    state = read_state(repo)
    feature = state["current_feature"]["branch"]
    assert state["current_feature"]["status"] == "completed"
    tasks = state["tasks"]
    commits = log_subjects(repo, f"main..{feature}")
    assert [author for author, _ in commits] == ["backend-dev", "frontend-dev", "qa-tester"]
    assert [t["assigned_to"] for t in tasks] == ["backend-dev", "frontend-dev", "qa-tester"]
    assert [subject.split(":")[0] for _, subject in commits] == [t["task_id"] for t in tasks]
    assert git(repo, "log", "--merges", "--format=%H", feature) == ""
    for t in tasks:
        assert t["status"] == "completed"
        found = git(repo, "log", "-1", "--format=%H", f"--grep=^Task: {t['task_id']}$", feature)
        assert t["commit"] == found.strip()

    tests = state["integration"]["test_results"]
    checkout = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", "--branch", feature, str(repo), str(checkout)],
                   check=True)
    real_exit, real_passed = run_pytest_count(checkout)
    assert (real_exit, tests["exit_code"]) == (0, 0)
    assert tests["passed"] == real_passed > 0
    assert worktree_paths(repo) == [repo.resolve()]
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"


def test_tasks_run_in_dependency_order_and_see_earlier_work(project: Path) -> None:
    agents = {
        "manager:plan": [plan_turn([task("UI", "frontend-dev", ["API"]),
                                    task("API", "backend-dev")])],
        "backend-dev:API": write_and_finish("api.py", "def hello():\n    return 'hi'\n"),
        "frontend-dev:UI": [tool_turn(read_call("api.py")),
                            tool_turn(write_call("ui.py", "from api import hello\n"),
                                      finish_call())],
        "manager:integration": [integration_turn()],
    }

    run = run_simple(project, agents, "Ordered feature")

    assert run.summary["exit_code"] == 0, run.output
    assert [c.key for c in run.model.calls] == [
        "manager:plan", "backend-dev:API", "backend-dev:API", "frontend-dev:UI",
        "frontend-dev:UI", "manager:integration"]
    ui_prompt = run.calls("frontend-dev:UI")[0].messages[0].content
    assert "API (backend-dev): Wrote api.py. [api.py]" in ui_prompt
    assert "return 'hi'" in tool_results(run.calls("frontend-dev:UI")[1])[0]
    assert log_subjects(project, "main..feature/ordered-feature") == [
        ("backend-dev", "API: Work item API for backend-dev"),
        ("frontend-dev", "UI: Work item UI for frontend-dev")]


@pytest.mark.parametrize("mode", list(FAILURE_MODES))
def test_failed_task_blocks_dependents_and_its_work_stays_off_the_feature_branch(
    project: Path, mode: str
) -> None:
    turns, reason, options = FAILURE_MODES[mode]
    agents = {
        "manager:plan": [plan_turn([task("T1", "backend-dev"),
                                    task("T2", "frontend-dev", ["T1"]),
                                    task("T3", "qa-tester")])],
        "backend-dev:T1": turns,
        "frontend-dev:T2": write_and_finish("b.txt", "B\n"),
        "qa-tester:T3": [tool_turn(read_call("a.txt"), write_call("c.txt", "C\n")),
                         tool_turn(finish_call())],
        "manager:integration": [integration_turn("T1 failed.")],
    }
    initial = git(project, "rev-parse", "main")

    run = run_simple(project, agents, "Partial feature", **options)

    assert run.summary["exit_code"] == 1
    state = read_state(project)
    by_id = tasks_by_id(state)
    assert {k: t["status"] for k, t in by_id.items()} == {
        "T1": "failed", "T2": "blocked", "T3": "completed"}
    assert reason in by_id["T1"]["error"]
    assert "T1" in by_id["T2"]["error"]
    assert run.model.remaining() == {"frontend-dev:T2": 2}
    assert state["current_feature"]["status"] == "failed"

    feature = "feature/partial-feature"
    kept = f"{feature}-agents/backend-dev/T1"
    assert by_id["T1"]["branch"] == kept
    assert log_subjects(project, f"main..{kept}") == [
        ("backend-dev", "T1: Work item T1 for backend-dev")]
    assert file_at(project, kept, "a.txt") == "half done\n"
    assert log_subjects(project, f"main..{feature}") == [
        ("qa-tester", "T3: Work item T3 for qa-tester")]
    assert file_at(project, feature, "a.txt") is None
    assert file_at(project, feature, "c.txt") == "C\n"
    assert "a.txt" in tool_results(run.calls("qa-tester:T3")[1])[0]
    assert "half done" not in tool_results(run.calls("qa-tester:T3")[1])[0]
    assert git(project, "rev-parse", "main") == initial
    assert worktree_paths(project) == [project]
    assert git(project, "status", "--porcelain") == "?? .ai-agents/\n"


ROLE = "data-engineer"
ROLE_SYSTEM = "You are the team's data engineer. You build ETL pipelines and SQL models."


def with_data_engineer(base: type[BaseOrchestrator]) -> type[BaseOrchestrator]:
    class DataTeam(base):  # type: ignore[valid-type, misc]
        def get_agent_types(self) -> dict[str, dict[str, Any]]:
            return {**super().get_agent_types(),
                    ROLE: {"system": ROLE_SYSTEM, "specialties": ["ETL", "SQL"]}}

    return DataTeam


@pytest.mark.parametrize("base", [SimpleOrchestrator, FileBasedOrchestrator],
                         ids=["simple", "file-based"])
@pytest.mark.parametrize("how", ["config", "subclass"])
def test_custom_role_is_offered_to_the_manager_and_used(
    project: Path, tmp_path: Path, base: type[BaseOrchestrator], how: str
) -> None:
    options: dict[str, Any] = {}
    cls = base
    if how == "config":
        config = tmp_path / "orchestrator-config.json"
        config.write_text(json.dumps({"agents": {ROLE: {
            "system": ROLE_SYSTEM, "specialties": ["ETL", "SQL"]}}}), encoding="utf-8")
        options["config_path"] = config
    else:
        cls = with_data_engineer(base)
    agents = {
        "manager:plan": [plan_turn([task("ETL", ROLE), task("QA", "qa-tester", ["ETL"])])],
        f"{ROLE}:ETL": write_and_finish("etl/load.sql", "select 1;\n"),
        "qa-tester:QA": write_and_finish("tests/test_load.txt", "checked\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_simple(project, agents, "Data feature", cls=cls, **options)

    assert run.summary["exit_code"] == 0, run.output
    (plan_call,) = run.calls("manager:plan")
    assert f"- {ROLE}: ETL, SQL" in plan_call.messages[0].content
    assert "- backend-dev:" in plan_call.messages[0].content
    assert plan_call.output_schema is not None
    roles = plan_call.output_schema["properties"]["tasks"]["items"]["properties"]["assigned_to"]
    assert set(roles["enum"]) == {ROLE, "backend-dev", "frontend-dev", "qa-tester"}
    role_calls = run.calls(f"{ROLE}:ETL")
    assert len(role_calls) == 2
    assert role_calls[0].system.startswith(ROLE_SYSTEM)
    assert "write_file" in role_calls[0].tool_names
    authors = git(project, "log", "--format=%an", "main..feature/data-feature").split()
    assert ROLE in authors
    assert file_at(project, "feature/data-feature", "etl/load.sql") == "select 1;\n"
    state = read_state(project)
    assert tasks_by_id(state)["ETL"]["assigned_to"] == ROLE
    assert tasks_by_id(state)["ETL"]["status"] == "completed"
