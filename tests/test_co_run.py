"""`co run` end to end: backlog -> manager plan -> agents in worktrees -> merges -> tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.co_helpers import co, make_project, scripted
from tests.orchestration_helpers import (
    FAILING_TESTS,
    file_at,
    git,
    integration_turn,
    plan_turn,
    task,
    tool_turn,
    write_and_finish,
    write_call,
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "app")


def backlog(project: Path) -> list[dict]:
    return json.loads(co("list", "--json", "--show-subtasks", "-d", str(project)).output)


def test_run_executes_merges_tests_and_records_results(project: Path, tmp_path: Path) -> None:
    assert co("add", "Write the greeting module", "-d", str(project)).output.startswith(
        "Added task 1")
    co("add", "Document the greeting", "--depends-on", "1", "-p", "low", "-d", str(project))
    agents = {
        "manager:plan": [plan_turn([task("T1", "backend-dev"),
                                    task("T2.1", "qa-tester"),
                                    task("T2.2", "qa-tester", ["T2.1"])])],
        "backend-dev:T1": write_and_finish("app/greet.py", "def hi():\n    return 'hi'\n"),
        "qa-tester:T2.1": write_and_finish("docs/one.md", "one\n"),
        "qa-tester:T2.2": write_and_finish("docs/two.md", "two\n"),
        "manager:integration": [integration_turn()],
    }
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "-w", "2",
                "-d", str(project))
    assert result.exit_code == 0, result.output
    assert "task 1: done" in result.output and "task 2: done" in result.output
    tasks = {t["id"]: t for t in backlog(project)}
    assert tasks[1]["status"] == tasks[2]["status"] == "done"
    record = tasks[2]["runs"][-1]
    branch = record["branch"]
    assert [p["task_id"] for p in record["plan_tasks"]] == ["T2.1", "T2.2"]
    assert file_at(project, branch, "app/greet.py") == "def hi():\n    return 'hi'\n"
    assert file_at(project, branch, "docs/two.md") == "two\n"
    # The backlog's own dependency (2 after 1) was added to the plan the manager returned.
    state = json.loads((project / ".ai-agents/state/team-communication.json").read_text())
    deps = {t["task_id"]: t["dependencies"] for t in state["tasks"]}
    assert "T1" in deps["T2.1"]
    assert record["tests"]["exit_code"] == 0
    # Checkpoints: one before the run, one before each of the three merges.
    kinds = [c["kind"] for c in json.loads(co("list-checkpoints", "--json", "-d",
                                              str(project)).output)]
    assert kinds == ["pre-run", "pre-merge", "pre-merge", "pre-merge"]
    assert git(project, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    shown = co("show", "2", "-d", str(project)).output
    assert "T2.2 (qa-tester): completed, merged" in shown


def test_run_only_one_task_by_id(project: Path, tmp_path: Path) -> None:
    co("add", "First", "-d", str(project))
    co("add", "Second", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T2", "backend-dev")])],
              "backend-dev:T2": write_and_finish("second.txt", "2\n"),
              "manager:integration": [integration_turn()]}
    result = co(*scripted(tmp_path, agents), "run", "--id", "2", "--no-progress",
                "-d", str(project))
    assert result.exit_code == 0, result.output
    statuses = {t["id"]: t["status"] for t in backlog(project)}
    assert statuses == {1: "pending", 2: "done"}


def test_run_with_failing_tests_exits_1(tmp_path: Path) -> None:
    project = make_project(tmp_path / "app", FAILING_TESTS)
    co("add", "Something", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("x.txt", "x\n"),
              "manager:integration": [integration_turn("tests fail")]}
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(project))
    assert result.exit_code == 1, result.output


def test_run_with_a_failed_agent_marks_the_task_failed(project: Path, tmp_path: Path) -> None:
    co("add", "Will fail", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": [tool_turn(write_call("half.txt", "x\n"))],
              "manager:integration": [integration_turn()]}
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(project))
    assert result.exit_code == 1
    assert backlog(project)[0]["status"] == "failed"


def test_a_plan_that_ignores_the_backlog_is_refused_with_exit_2(project: Path,
                                                                tmp_path: Path) -> None:
    co("add", "Real task", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("TASK-001", "backend-dev")])] * 3}
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(project))
    assert result.exit_code == 2, result.output
    assert "TASK-001 is not T<id>" in result.output
    assert result.output.count("Plan rejected") == 3  # each attempt went back to the manager
    assert backlog(project)[0]["status"] == "pending"


def test_made_up_plan_ids_go_back_to_the_manager(project: Path, tmp_path: Path) -> None:
    co("add", "Real task", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("TASK-001", "backend-dev")]),
                               plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("real.txt", "real\n"),
              "manager:integration": [integration_turn()]}
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(project))
    assert result.exit_code == 0, result.output
    assert "Plan rejected: Task id TASK-001 is not T<id>" in result.output
    assert backlog(project)[0]["status"] == "done"


def test_budget_stop_exits_3(project: Path, tmp_path: Path) -> None:
    co("add", "Costly", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("x.txt", "x\n"),
              "manager:integration": [integration_turn()]}
    result = co(*scripted(tmp_path, agents), "run", "--no-progress", "--max-api-calls", "2",
                "-d", str(project))
    assert result.exit_code == 3, result.output
    assert backlog(project)[0]["status"] == "pending"


def test_nothing_to_run(project: Path) -> None:
    result = co("run", "--no-progress", "-d", str(project))
    assert result.exit_code == 0
    assert "Nothing to run" in result.output


def test_unknown_id_is_bad_input(project: Path) -> None:
    result = co("run", "--id", "42", "-d", str(project))
    assert result.exit_code == 2
    assert "No task 42" in result.output


def test_claude_cli_settings_reach_the_cli_worker(project: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`claude_cli.command`, its flags and `execution.worker_timeout` drive a role whose
    tasks run in Claude Code (`agents.<role>.worker` in the engine config)."""
    from agent_team.co.base import CoContext
    from agent_team.co.engine import co_settings
    from agent_team.co.settings import load_settings

    from tests.cli_fakes import calls, install_fakes

    path_before = __import__("os").environ.get("PATH", "")
    log = install_fakes(tmp_path, monkeypatch, {"T1": {"writes": {"cli.txt": "from cli\n"}}})
    monkeypatch.setenv("PATH", path_before)  # found through claude_cli.command, not PATH
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-co-0123456789abcdef")
    engine = json.loads((project / "orchestrator-config.json").read_text())
    engine["agents"] = {"backend-dev": {"worker": "claude-code"}}
    (project / "orchestrator-config.json").write_text(json.dumps(engine))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "execution": {"worker_timeout": 77},
        "claude_cli": {"command": str(tmp_path / "bin" / "claude"),
                       "flags": {"verbose": True, "dangerously_skip_permissions": True}}}))
    settings = co_settings(CoContext(), load_settings(config), project)
    assert settings.agents["backend-dev"]["worker"] == {"type": "claude-code",
                                                        "timeout_seconds": 77.0}
    co("add", "Through the CLI", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "manager:integration": [integration_turn()]}
    result = co("--config", str(config), *scripted(tmp_path, agents), "run", "--no-progress",
                "-d", str(project))
    assert result.exit_code == 0, result.output
    argv = calls(log)[0]["argv"]
    assert "--dangerously-skip-permissions" in argv and "--verbose" in argv
    assert "--permission-mode" not in argv
    branch = backlog(project)[0]["runs"][0]["branch"]
    assert file_at(project, branch, "cli.txt") == "from cli\n"


def test_worker_timeout_fails_the_task_and_review_can_be_skipped(project: Path,
                                                                 tmp_path: Path) -> None:
    """A built-in agent past `execution.worker_timeout` gets no further turn; with
    `monitoring.enable_opus_review` off the manager is not asked to review."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"execution": {"worker_timeout": 1e-9},
                                  "monitoring": {"enable_opus_review": False}}))
    co("add", "Too slow", "-d", str(project))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("late.txt", "late\n")}
    result = co("--config", str(config), *scripted(tmp_path, agents), "run", "--no-progress",
                "-d", str(project))
    assert result.exit_code == 1, result.output
    shown = backlog(project)[0]
    assert shown["status"] == "failed"
    assert "ran longer than execution.worker_timeout" in shown["runs"][0]["plan_tasks"][0][
        "error"]
    state = json.loads((project / ".ai-agents/state/team-communication.json").read_text())
    assert "Manager review skipped" in state["integration"]["summary"]
