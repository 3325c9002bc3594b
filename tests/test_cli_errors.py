"""Bad input to either orchestrator: exit code 2, one actionable paragraph, nothing changed.

"Nothing changed" is checked on everything a user would look at: refs, HEAD, `git status`,
the registered worktrees, and the bytes of the state file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git as gitpython
import pytest
from agent_team.errors import PlanError
from agent_team.git_workspace import is_inside_work_tree
from agent_team.plan import parse_plan
from agent_team.roles import DEFAULT_WORKERS
from agent_team.scripted import ScriptedModel
from agent_team.state_file import STATE_RELATIVE_PATH
from agent_team.state_schema import new_state
from click.testing import CliRunner, Result
from file_based_orchestrator import FileBasedOrchestrator
from file_based_orchestrator import main as file_based_main
from simple_orchestrator import SimpleOrchestrator
from simple_orchestrator import main as simple_main

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    RepoSnapshot,
    branches,
    integration_turn,
    plan_turn,
    read_state,
    snapshot,
    task,
    write_and_finish,
    write_session,
)

MAINS = pytest.mark.parametrize("main", [simple_main, file_based_main],
                                ids=["simple", "file-based"])
CLASSES = pytest.mark.parametrize("cls", [SimpleOrchestrator, FileBasedOrchestrator],
                                  ids=["simple", "file-based"])

CYCLE = plan_turn([task("A", "backend-dev", ["B"]), task("B", "qa-tester", ["A"])])
UNKNOWN_ROLE = plan_turn([task("A", "designer")])
NOT_JSON = {"text": "Sure! The plan: first the API, then the UI, then the tests."}
BAD_PLANS = [CYCLE, UNKNOWN_ROLE, NOT_JSON]


def plan_errors(turn: dict[str, Any]) -> list[str]:
    """The exact errors the plan validator reports for one scripted planning reply."""
    with pytest.raises(PlanError) as caught:
        parse_plan(turn["text"], DEFAULT_WORKERS)
    assert caught.value.errors
    return caught.value.errors


def invoke(main: Callable[..., Any], *args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_paragraph(result: Result) -> str:
    """Exit 2 and a single message paragraph on stderr, no traceback; returns the message."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ")
    assert "\n\n" not in message
    assert "Traceback" not in result.output
    return message


def assert_unchanged(before: RepoSnapshot, after: RepoSnapshot, *, status: bool = True) -> None:
    assert (after.refs, after.head, after.symbolic_head, after.worktrees) == (
        before.refs, before.head, before.symbolic_head, before.worktrees)
    assert after.state_bytes == before.state_bytes
    if status:
        assert after.status == before.status


def listing(directory: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(directory)), p.read_bytes())
                  for p in directory.rglob("*") if p.is_file())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", {"README.md": "# project\n"})
    return (tmp_path / "project").resolve()


@pytest.fixture
def session(tmp_path: Path) -> Path:
    """A complete one-task session, so only the input under test can make a run fail."""
    return write_session(tmp_path / "session.json", {
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
    })


def scripted(project: Path, session: Path, feature: str = "Login page") -> list[str | Path]:
    return ["--feature", feature, "--project-dir", project, "--api-provider", "scripted",
            "--session", session]


@MAINS
def test_no_api_key_and_no_provider_points_to_the_demo(main: Any, project: Path) -> None:
    before = snapshot(project)

    result = invoke(main, "--feature", "Login page", "--project-dir", project)

    message = assert_one_paragraph(result)
    assert "--demo" in message
    assert "ANTHROPIC_API_KEY" in message
    assert_unchanged(before, snapshot(project))
    assert not (project / ".ai-agents").exists()


@MAINS
def test_project_dir_that_is_not_a_git_repository(
    main: Any, tmp_path: Path, session: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a repo\n", encoding="utf-8")
    if is_inside_work_tree(plain):
        pytest.skip("the temporary directory lies inside a git repository")
    before = listing(plain)

    result = invoke(main, *scripted(plain, session))

    message = assert_one_paragraph(result)
    assert str(plain) in message
    assert "git init" in message
    assert listing(plain) == before


@MAINS
def test_repository_without_commits(main: Any, tmp_path: Path, session: Path) -> None:
    empty = tmp_path / "empty"
    gitpython.Repo.init(empty, initial_branch="main")
    (empty / "draft.txt").write_text("draft\n", encoding="utf-8")
    before = listing(empty)

    result = invoke(main, *scripted(empty, session))

    message = assert_one_paragraph(result)
    assert "no commits" in message
    assert listing(empty) == before


def corrupt_json(path: Path) -> None:
    path.write_bytes(b'{"schema_version": 1, "tasks": [\n')


def schema_invalid(path: Path) -> None:
    data = new_state("project")
    data["integration"]["status"] = "exploded"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


@MAINS
@pytest.mark.parametrize(("damage", "reason"), [(corrupt_json, "not valid JSON"),
                                                (schema_invalid, "integration.status")],
                         ids=["corrupt-json", "schema-invalid"])
def test_invalid_state_file_is_refused_and_never_overwritten(
    main: Any, project: Path, session: Path, damage: Callable[[Path], None], reason: str
) -> None:
    state_path = project / STATE_RELATIVE_PATH
    state_path.parent.mkdir(parents=True)
    damage(state_path)
    before = snapshot(project)

    result = invoke(main, *scripted(project, session))

    message = assert_one_paragraph(result)
    assert str(state_path) in message
    assert reason in message
    assert_unchanged(before, snapshot(project))
    copies = list(state_path.parent.glob(f"{state_path.name}.corrupt-*"))
    assert [c.read_bytes() for c in copies] == [before.state_bytes]
    assert str(copies[0]) in message

    again = invoke(main, *scripted(project, session))
    assert_one_paragraph(again)
    assert state_path.read_bytes() == before.state_bytes


@MAINS
def test_existing_feature_branch_is_refused(main: Any, project: Path, session: Path) -> None:
    gitpython.Repo(project).git.branch("feature/login-page")
    before = snapshot(project)

    result = invoke(main, *scripted(project, session))

    message = assert_one_paragraph(result)
    assert "feature/login-page already exists" in message
    assert_unchanged(before, snapshot(project), status=False)


@MAINS
def test_existing_feature_branch_refusal_leaves_git_status_alone(
    main: Any, project: Path, session: Path
) -> None:
    gitpython.Repo(project).git.branch("feature/login-page")
    before = snapshot(project)

    result = invoke(main, *scripted(project, session))

    assert result.exit_code == 2
    assert snapshot(project).status == before.status


@MAINS
def test_invalid_plans_fail_with_the_exact_errors_and_no_branch(
    main: Any, project: Path, tmp_path: Path
) -> None:
    bad = write_session(tmp_path / "bad-plans.json", {"manager:plan": BAD_PLANS})
    before = snapshot(project)

    result = invoke(main, *scripted(project, bad))

    message = assert_one_paragraph(result)
    assert "after 3 attempt(s)" in message
    for error in plan_errors(NOT_JSON):
        assert f"  - {error}" in message.splitlines()
    assert "feature/login-page" not in branches(project)
    after = snapshot(project)
    assert (after.refs, after.head, after.symbolic_head, after.worktrees) == (
        before.refs, before.head, before.symbolic_head, before.worktrees)
    assert (before.status, after.status) == ("", "?? .ai-agents/\n")


@CLASSES
def test_invalid_plans_go_back_to_the_manager_with_their_errors(
    cls: type[Any], project: Path
) -> None:
    model = ScriptedModel({"manager:plan": BAD_PLANS})
    orchestrator = cls(project, model=model, output=lambda _: None)

    with pytest.raises(PlanError) as caught:
        orchestrator.run("Login page")

    assert caught.value.exit_code == 2
    assert caught.value.errors == plan_errors(NOT_JSON)
    prompts = [call.messages[-1].content for call in model.calls]
    assert [call.key for call in model.calls] == ["manager:plan"] * 3
    cycle_errors, role_errors = plan_errors(CYCLE), plan_errors(UNKNOWN_ROLE)
    assert any("A -> B -> A" in e for e in cycle_errors)
    assert any("'designer'" in e for e in role_errors)
    assert not any(e in prompts[0] for e in cycle_errors + role_errors)
    assert all(f"- {e}" in prompts[1] for e in cycle_errors)
    assert all(f"- {e}" in prompts[2] for e in role_errors)
    assert CYCLE["text"] in prompts[1] and UNKNOWN_ROLE["text"] in prompts[2]
    assert "feature/login-page" not in branches(project)
    rejected = [u["details"]["errors"] for u in read_state(project)["agent_updates"]
                if u["status"] == "plan_rejected"]
    assert rejected == [cycle_errors, role_errors, plan_errors(NOT_JSON)]


@pytest.mark.parametrize("cls", [
    SimpleOrchestrator,
    FileBasedOrchestrator,
], ids=["simple", "file-based"])
def test_invalid_plan_marks_the_feature_failed(cls: type[Any], project: Path) -> None:
    model = ScriptedModel({"manager:plan": BAD_PLANS})
    with pytest.raises(PlanError):
        cls(project, model=model, output=lambda _: None).run("Login page")

    assert read_state(project)["current_feature"]["status"] == "failed"


@CLASSES
def test_invalid_plan_closes_the_run_record(cls: type[Any], project: Path) -> None:
    model = ScriptedModel({"manager:plan": BAD_PLANS})
    with pytest.raises(PlanError):
        cls(project, model=model, output=lambda _: None).run("Login page")

    assert read_state(project)["runs"][-1]["status"] != "running"


@MAINS
def test_demo_refuses_a_project_dir(main: Any, project: Path) -> None:
    before = snapshot(project)
    result = invoke(main, "--demo", "--project-dir", project)
    assert result.exit_code == 2
    assert "--demo makes its own project" in result.stderr
    assert snapshot(project) == before


@MAINS
def test_missing_feature_suggests_the_demo(main: Any, project: Path, session: Path) -> None:
    result = invoke(main, "--project-dir", project, "--api-provider", "scripted",
                    "--session", session)
    assert result.exit_code == 2
    assert "Missing --feature" in result.stderr and "--demo" in result.stderr
    assert not (project / ".ai-agents").exists()
