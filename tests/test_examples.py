"""The custom-orchestrator examples run end to end on real repositories with the scripted model."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import git
import pytest
from agent_team.cli import prepare_demo
from agent_team.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from agent_team.scripted import ScriptedModel
from agent_team.state_file import STATE_RELATIVE_PATH
from click.testing import CliRunner

from tests.conftest import make_repo

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = ROOT / "examples" / "custom"
SESSIONS = ROOT / "examples" / "sessions"
PLANTED_KEY = "sk-test-4f9a8b7c6d5e4f3a2b1c0d9e"
PLANTED_MODULE = (
    '"""Upload the to-do file to the team server."""\n\nimport subprocess\n\n'
    f'API_KEY = "{PLANTED_KEY}"\n\n\n'
    "def push(path: str) -> None:\n"
    "    command = f\"curl -H 'Authorization: Bearer {API_KEY}' -T {path} https://todo.invalid\"\n"
    "    subprocess.run(command, shell=True, check=True)\n"
)


def load_example(name: str) -> ModuleType:
    """Import examples/custom/<name>.py by path, as a user would run it."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", CUSTOM / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


review = load_example("review_workflow")
data_team = load_example("data_team")


@pytest.fixture(autouse=True)
def demos_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Demo projects (tempfile.mkdtemp) are created inside the test's tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


def read_state(project: Path) -> dict[str, Any]:
    return json.loads((project / STATE_RELATIVE_PATH).read_text(encoding="utf-8"))


def branch_authors(project: Path, branch: str) -> dict[str, set[str]]:
    """Author name -> files touched, for the non-merge commits the run added to `branch`."""
    out = git.Repo(project).git.log("--no-merges", "--format=@%an", "--name-only",
                                    f"main..{branch}")
    authors: dict[str, set[str]] = {}
    author = ""
    for line in filter(None, out.splitlines()):
        if line.startswith("@"):
            author = line[1:]
            authors.setdefault(author, set())
        else:
            authors[author].add(line)
    return authors


def user_prompt(model: ScriptedModel, key: str) -> str:
    return next(c for c in model.calls if c.key == key).messages[0].content


def tool_errors(model: ScriptedModel) -> list[str]:
    """Tool results the agents got back as errors (an edit that did not apply, for one)."""
    return sorted({m.content for c in model.calls for m in c.messages
                   if m.role == "tool" and m.is_error})


# -- review workflow -----------------------------------------------------------------------------


def test_review_workflow_demo_reviews_design_builds_and_scans() -> None:
    project, session, feature = prepare_demo(review.DEMO_SESSION)
    model = ScriptedModel.from_file(session)
    lines: list[str] = []
    result = review.ReviewedOrchestrator(project, model=model, output=lines.append).run(feature)

    model.assert_complete()
    assert tool_errors(model) == []
    assert result["exit_code"] == EXIT_OK
    assert result["summary"]["status"] == "completed"
    assert result["summary"]["test_results"]["passed"] == 10
    keys = [call.key for call in model.calls]
    assert keys[:2] == ["architect", "manager:plan"] and keys[-1] == "security-reviewer"

    # The architect's review reached the manager's plan prompt and every worker's task prompt.
    assert "Plan within the review" in user_prompt(model, "manager:plan")
    for key in ("backend-dev:TASK-001", "qa-tester:TASK-002"):
        assert "never eval() or exec() input" in user_prompt(model, key)
    state = read_state(project)
    by = [d["made_by"] for d in state["decisions"]]
    assert by == ["architect", "architect", "manager"]
    assert result["design"]["decisions"][0]["decision"] == state["decisions"][0]["decision"]

    # Real work on real branches, committed by the roles, merged by the manager.
    branch = result["summary"]["feature_branch"]
    assert branch_authors(project, branch) == {
        "backend-dev": {"todo/transfer.py", "todo/cli.py"},
        "qa-tester": {"tests/test_transfer.py"},
    }
    assert git.Repo(project).active_branch.name == "main"

    # The scan read the three changed files, found nothing, and the reviewer's note is kept.
    security = result["security"]
    assert security["files_scanned"] == ["tests/test_transfer.py", "todo/cli.py",
                                         "todo/transfer.py"]
    assert security["findings"] == [] and security["passed"]
    assert "- none" in user_prompt(model, "security-reviewer")
    notes = [u for u in state["agent_updates"] if u["agent"] == "security-reviewer"]
    assert [n["status"] for n in notes] == ["security_review"]
    assert notes[0]["message"] == security["review"]


def planted_session(tmp_path: Path) -> Path:
    """The review demo, but backend-dev also writes a module with a key and shell=True."""
    data = json.loads((SESSIONS / review.DEMO_SESSION).read_text(encoding="utf-8"))
    turns = data["agents"]["backend-dev:TASK-001"]
    turns[1] = copy.deepcopy(turns[1])
    turns[1]["tool_calls"].append({"name": "write_file", "arguments": {
        "path": "todo/sync.py", "content": PLANTED_MODULE}})
    data["agents"]["security-reviewer"] = [{"text": (
        "todo/sync.py hard-codes an API key and builds a shell command from a path: move the "
        "key to the environment and call subprocess.run with an argument list. Do not merge.")}]
    path = tmp_path / "planted-session.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_review_workflow_cli_flags_a_planted_secret(tmp_path: Path) -> None:
    session = planted_session(tmp_path)

    result = CliRunner().invoke(review.main, ["--demo", "--session", str(session)],
                                catch_exceptions=False)

    assert result.exit_code == EXIT_FAILED, result.output
    assert "SUCCESS" in result.output  # the team's run itself passed; the scan fails it
    assert "todo/sync.py:5 [hardcoded-secret]" in result.output
    assert "todo/sync.py:10 [shell-true]" in result.output
    project = Path(re.search(r"Demo project: (\S+)", result.output).group(1))
    branch = re.search(r"Result: branch (\S+)", result.output).group(1)
    assert "todo/sync.py" in branch_authors(project, branch)["backend-dev"]

    state = read_state(project)
    findings = [u for u in state["agent_updates"] if u["status"] == "security_finding"]
    assert {(f["details"]["path"], f["details"]["rule"]) for f in findings} == {
        ("todo/sync.py", "hardcoded-secret"), ("todo/sync.py", "shell-true")}
    assert all(f["agent"] == "security-scan" for f in findings)
    decision = state["decisions"][-1]
    assert decision["made_by"] == "security-reviewer"
    assert decision["decision"].startswith("Fix 2 security finding(s) in todo/sync.py")
    assert decision["affected_agents"] == ["backend-dev"]
    assert "Do not merge" in decision["rationale"]
    assert PLANTED_KEY not in (project / STATE_RELATIVE_PATH).read_text(encoding="utf-8")


def test_scanner_rules_and_masking() -> None:
    text = "\n".join([
        'password = "hunter2hunter2"',
        'DB_PASSWORD: str = "correct-horse"',
        "token = os.environ['API_TOKEN']",
        "value = eval(expression)",
        "model.eval()",
        "retrieval(query)",
        "os.system('ls ' + path)",
        "data = pickle.loads(blob)",
        "headers = {'x': 'AKIAABCDEFGHIJKLMNOP'}",
    ])

    found = {(f.line, f.rule): f.excerpt for f in review.scan_text("app.py", text)}

    assert set(found) == {(1, "hardcoded-secret"), (2, "hardcoded-secret"), (4, "eval-exec"),
                          (7, "os-system"), (8, "pickle-load"), (9, "key-shaped-literal")}
    assert found[(1, "hardcoded-secret")] == 'password = "***"'
    assert found[(2, "hardcoded-secret")] == 'DB_PASSWORD: str = "***"'
    assert found[(9, "key-shaped-literal")] == "headers = {'x': '***'}"


# -- data team -----------------------------------------------------------------------------------


def test_data_team_demo_plans_and_builds_with_data_roles(tmp_path: Path) -> None:
    project, session, feature = data_team.prepare_data_demo()
    model = ScriptedModel.from_file(session)
    orchestrator = data_team.DataEngineerOrchestrator(project, model=model,
                                                      output=lambda line: None)

    summary = orchestrator.run(feature)

    model.assert_complete()
    assert tool_errors(model) == []
    assert summary["exit_code"] == EXIT_OK and summary["status"] == "completed"
    assert summary["test_results"]["passed"] == 10 and summary["test_results"]["failed"] == 0
    plan_prompt = user_prompt(model, "manager:plan")
    assert "- data-engineer: pipelines, ETL" in plan_prompt
    assert "- ml-engineer: model training" in plan_prompt
    assert "backend-dev" not in plan_prompt and "qa-tester" not in plan_prompt
    plan_schema = next(c for c in model.calls if c.key == "manager:plan").output_schema
    assigned_to = plan_schema["properties"]["tasks"]["items"]["properties"]["assigned_to"]
    assert assigned_to["enum"] == ["data-engineer", "ml-engineer"]
    system = next(c for c in model.calls if c.key == "data-engineer:TASK-001").system
    assert system.startswith(data_team.DATA_ENGINEER_SYSTEM)

    state = read_state(project)
    assert [(t["task_id"], t["assigned_to"], t["status"]) for t in state["tasks"]] == [
        ("TASK-001", "data-engineer", "completed"),
        ("TASK-002", "ml-engineer", "completed"),
        ("TASK-003", "ml-engineer", "completed"),
    ]
    branch = summary["feature_branch"]
    assert branch_authors(project, branch) == {
        "data-engineer": {"sales/features.py", "tests/test_features.py"},
        "ml-engineer": {"sales/model.py", "tests/test_model.py", "sales/train.py",
                        "tests/test_train.py"},
    }

    # The trained model on the merged branch reports what the data says.
    checkout = tmp_path / "checkout"
    git.Repo(project).git.worktree("add", "--detach", str(checkout), branch)
    out = subprocess.run([sys.executable, "-m", "sales.train"], cwd=checkout, check=True,
                         capture_output=True, text=True).stdout
    assert "3.90 * temperature_c (+9.5 on weekends), weekday R^2 = 0.983" in out


def test_data_team_manager_cannot_assign_default_roles(tmp_path: Path) -> None:
    make_repo(tmp_path / "project", {"data/sales.csv": "date,units\n"})
    wrong = {"tasks": [{"task_id": "T1", "description": "Load the data",
                        "assigned_to": "backend-dev", "dependencies": [],
                        "deliverables": [], "priority": "high"}], "decisions": []}
    right = copy.deepcopy(wrong)
    right["tasks"][0]["assigned_to"] = "data-engineer"
    model = ScriptedModel({"manager:plan": [{"text": json.dumps(wrong)},
                                            {"text": json.dumps(right)}]})
    orchestrator = data_team.DataEngineerOrchestrator(tmp_path / "project", model=model,
                                                      output=lambda line: None)

    plan = orchestrator.plan_feature("Load the sales data")

    assert [t["assigned_to"] for t in plan.tasks] == ["data-engineer"]
    retry = model.calls[1].messages[0].content
    assert "unknown role 'backend-dev'; available roles: data-engineer, ml-engineer" in retry


def test_data_team_cli_refuses_demo_with_project_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_team.main, ["--demo", "--project-dir", str(tmp_path)])

    assert result.exit_code == EXIT_BAD_INPUT
    assert "drop --project-dir" in result.output
