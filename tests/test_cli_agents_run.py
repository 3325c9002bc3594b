"""Whole runs of the file-based orchestrator with coding-agent CLIs as workers.

Fake `claude`, `codex` and `aider` executables (tests/cli_fakes.py) edit files in their
worktrees and print the real output formats; the manager and the QA agent are the built-in
scripted agents. Every figure is checked against the repository and the state file.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import ConfigError
from agent_team.scripted import ScriptedModel
from file_based_orchestrator import FileBasedOrchestrator

from tests.cli_fakes import calls, install_fakes, markers, set_plans
from tests.conftest import make_repo, wait_until_gone
from tests.orchestration_helpers import (
    PASSING_TESTS,
    file_at,
    finish_call,
    git,
    integration_turn,
    plan_turn,
    read_call,
    read_state,
    run_orchestrator,
    task,
    tasks_by_id,
    tool_turn,
    write_and_finish,
    write_call,
)

ANTHROPIC_KEY = "sk-ant-test-cli-0123456789abcdef"
OPENAI_KEY = "sk-test-cli-0123456789abcdef0123"
FEATURE = "feature/cli-team"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_repo(tmp_path / "project", {"README.md": "# project\n", "app.txt": "greeting = hi\n"})
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    return (tmp_path / "project").resolve()


def write_config(tmp_path: Path, agents: dict[str, Any], **extra: Any) -> Path:
    path = tmp_path / "orchestrator-config.json"
    path.write_text(json.dumps({"agents": agents, **extra}), encoding="utf-8")
    return path


class PairedStart(FileBasedOrchestrator):
    """Tasks A and B both branch before either merges, so their edits of app.txt conflict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.both_branched = threading.Barrier(2, timeout=60)

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        if task["task_id"] in ("A", "B"):
            self.both_branched.wait()
        return super().execute_task_in_worktree(task, worktree)


def test_mixed_team_with_a_dependency_and_a_conflict(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = install_fakes(tmp_path, monkeypatch, {
        "claude:A": {"writes": {"api.txt": "api v1\n", "app.txt": "greeting = hi from A\n"},
                     "commit": True},
        "codex:B": {"writes": {"ui.txt": "ui v1\n", "app.txt": "greeting = hi from B\n"}},
        "aider:D": {"writes": {"docs.txt": "docs v1\n"}, "litter": [".aider.tags.cache.v4"]},
    })
    config = write_config(tmp_path, {
        "backend-dev": {"worker": "claude-code", "model": "claude-sonnet-5-5"},
        "frontend-dev": {"worker": {"type": "codex"}},
        "docs-writer": {"system": "You write the documentation.", "worker": "aider"},
    })
    merged = "greeting = hi from A and B\n"
    agents = {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                    task("D", "docs-writer"),
                                    task("C", "qa-tester", ["A", "B"])])],
        "manager:merge": [tool_turn(read_call("app.txt"), write_call("app.txt", merged)),
                          tool_turn(finish_call(summary="Kept both greetings."))],
        "qa-tester:C": write_and_finish("qa.txt", "qa checked\n"),
        "manager:integration": [integration_turn()],
    }

    run = run_orchestrator(PairedStart, project, agents, "CLI team", config_path=config)

    assert run.summary["exit_code"] == 0, run.output
    run.model.assert_complete()
    for name, content in {"api.txt": "api v1\n", "ui.txt": "ui v1\n", "docs.txt": "docs v1\n",
                          "qa.txt": "qa checked\n", "app.txt": merged}.items():
        assert file_at(project, FEATURE, name) == content
    assert ".aider.tags.cache.v4" not in git(project, "ls-tree", "-r", "--name-only", FEATURE)
    state = read_state(project)
    merges = sorted(m["status"] for m in state["integration"]["merges"])
    assert merges == ["conflict_resolved", "merged", "merged", "merged"]
    tasks = tasks_by_id(state)
    by_name = {c["name"]: c for c in calls(log)}

    a = tasks["A"]
    assert a["worker"]["backend"] == "claude-code" and a["worker"]["state"] == "finished"
    argv = by_name["claude"]["argv"]
    assert a["worker"]["session_id"] == argv[argv.index("--session-id") + 1]
    assert argv[argv.index("--model") + 1] == "claude-sonnet-5-5"
    assert a["worker"]["turns"] == 4 and a["worker"]["cost_usd"] == pytest.approx(0.0421)
    assert a["usage"]["cost_usd"] == pytest.approx(0.0421)
    assert (a["usage"]["input_tokens"], a["usage"]["output_tokens"],
            a["usage"]["cache_read_tokens"], a["usage"]["cache_write_tokens"]) == (
        12, 450, 9000, 3000)
    assert "Done with A" in a["result"]["notes"] and "Done with A" not in a["result"]["summary"]
    assert a["result"]["files_modified"] == ["api.txt", "app.txt"]
    authors = git(project, "log", "--format=%an", f"{FEATURE}-agents/backend-dev/A").split()
    assert "cli" not in authors and authors[0] == "backend-dev"
    tried = json.loads((log / "commit-A.json").read_text())  # only the orchestrator writes git
    assert tried["committed"] is False and "Read-only file system" in tried["stderr"]

    b = tasks["B"]
    assert b["worker"]["session_id"] == "thread-B" and b["worker"]["cost_usd"] is None
    assert b["usage"]["cost_known"] is False and b["usage"]["cache_read_tokens"] == 1024
    d = tasks["D"]
    assert d["worker"]["backend"] == "aider" and d["usage"]["cost_usd"] == pytest.approx(0.03)
    assert d["usage"]["input_tokens"] == 1200 and d["usage"]["cache_write_tokens"] == 1100
    assert state["usage"]["cost_known"] is False  # Codex's cost is unknown, not zero

    assert "ANTHROPIC_API_KEY" in by_name["claude"]["env"]
    assert "OPENAI_API_KEY" not in by_name["claude"]["env"]
    assert "OPENAI_API_KEY" in by_name["codex"]["env"]
    assert "ANTHROPIC_API_KEY" not in by_name["codex"]["env"]
    assert "ANTHROPIC_API_KEY" not in by_name["aider"]["env"]
    for cli in by_name.values():
        assert Path(cli["cwd"]).name in ("A", "B", "D") or "worktrees" in cli["cwd"]
    qa_prompt = run.calls("qa-tester:C")[0].messages[0].content
    assert "A (backend-dev): Claude Code worked on A" in qa_prompt


def test_cli_errors_fail_their_tasks_with_the_clis_message(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(tmp_path, monkeypatch, {
        "claude:A": {"writes": {"a.txt": "half\n"}, "is_error": True,
                     "result": "API Error: 529 overloaded"},
        "codex:B": {"fail": "stream disconnected before completion", "exit": 1},
    })
    config = write_config(tmp_path, {"backend-dev": {"worker": "claude-code"},
                                     "frontend-dev": {"worker": "codex"}})
    agents = {"manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                          task("C", "qa-tester", ["A"])])],
              "manager:integration": [integration_turn()]}

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "CLI team",
                           config_path=config)

    assert run.summary["exit_code"] == 1
    tasks = tasks_by_id(read_state(project))
    assert tasks["A"]["status"] == "failed" and "529 overloaded" in tasks["A"]["error"]
    assert tasks["A"]["worker"]["state"] == "failed" and tasks["A"]["worker"]["is_error"]
    assert file_at(project, f"{FEATURE}-agents/backend-dev/A", "a.txt") == "half\n"
    assert tasks["B"]["status"] == "failed"
    assert "stream disconnected before completion" in tasks["B"]["error"]
    assert tasks["C"]["status"] == "blocked"


def test_timeout_fails_the_task_and_ends_the_clis_tree(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = install_fakes(tmp_path, monkeypatch, {
        "claude:A": {"writes": {"a.txt": "partial\n"}, "sleep": 120}})
    config = write_config(tmp_path, {"backend-dev": {"worker": {"type": "claude-code",
                                                                 "timeout_seconds": 2}}})
    agents = {"manager:plan": [plan_turn([task("A", "backend-dev")])],
              "manager:integration": [integration_turn()]}

    run = run_orchestrator(FileBasedOrchestrator, project, agents, "CLI team",
                           config_path=config)

    assert run.summary["exit_code"] == 1
    a = tasks_by_id(read_state(project))["A"]
    assert a["status"] == "failed" and "did not finish within 2 s" in a["error"]
    assert a["worker"]["state"] == "timed_out"
    assert a["usage"]["cost_known"] is False  # killed before it said what it spent
    assert not any(wait_until_gone(marker) for marker in markers(log, "A"))
    assert file_at(project, f"{FEATURE}-agents/backend-dev/A", "a.txt") == "partial\n"


class QaWaitsForClaude(FileBasedOrchestrator):
    """QA's agent starts only once the Claude Code process of task A is running."""

    marker: Path

    def execute_task_in_worktree(self, task: dict[str, Any], worktree: Path) -> dict[str, Any]:
        if task["task_id"] == "Q":
            deadline = time.monotonic() + 60
            while not self.marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().execute_task_in_worktree(task, worktree)


def test_budget_stop_ends_a_running_cli_and_resume_continues_its_session(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = install_fakes(tmp_path, monkeypatch, {
        "claude:A": {"writes": {"a.txt": "partial\n"}, "sleep": 120}})
    QaWaitsForClaude.marker = log / "pids-A.json"
    config = write_config(tmp_path, {"backend-dev": {"worker": "claude-code"}})
    agents = {"manager:plan": [plan_turn([task("A", "backend-dev"), task("Q", "qa-tester")])],
              "qa-tester:Q": [tool_turn(write_call("q1.txt", "1\n")),
                              tool_turn(write_call("q2.txt", "2\n")),
                              tool_turn(write_call("q3.txt", "3\n"))]}

    run = run_orchestrator(QaWaitsForClaude, project, agents, "CLI team", config_path=config,
                           limits={"max_api_calls": 3})

    assert run.summary["exit_code"] == 3, run.output
    assert not any(wait_until_gone(marker) for marker in markers(log, "A"))
    a = tasks_by_id(read_state(project))["A"]
    assert a["status"] == "pending" and a["worker"]["state"] == "stopped"
    session = a["worker"]["session_id"]
    assert session
    assert file_at(project, f"{FEATURE}-agents/backend-dev/A", "a.txt") == "partial\n"

    set_plans(log, {"claude:resume": {"writes": {"a.txt": "finished\n"}}})
    model = ScriptedModel({"qa-tester:Q": write_and_finish("q.txt", "done\n"),
                           "manager:integration": [integration_turn()]})
    resumed = FileBasedOrchestrator(project, model=model, output=lambda line: None,
                                    config_path=config, test_command=PASSING_TESTS)
    summary = resumed.resume()

    assert summary["exit_code"] == 0
    claude_calls = [c for c in calls(log) if c["name"] == "claude"]
    argv = claude_calls[-1]["argv"]
    assert argv[argv.index("--resume") + 1] == session and "--session-id" not in argv
    a = tasks_by_id(read_state(project))["A"]
    assert a["status"] == "completed" and a["worker"]["resumed"] is True
    assert file_at(project, FEATURE, "a.txt") == "finished\n"


def test_a_missing_cli_stops_the_run_before_any_branch(
        project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, {"frontend-dev": {"worker": {
        "type": "codex", "executable": str(tmp_path / "nowhere" / "codex")}}})

    before = git(project, "for-each-ref")
    with pytest.raises(ConfigError, match="npm install -g @openai/codex") as caught:
        run_orchestrator(FileBasedOrchestrator, project,
                         {"manager:plan": [plan_turn([task("A", "frontend-dev")])]},
                         "CLI team", config_path=config)
    assert caught.value.exit_code == 2
    assert git(project, "for-each-ref") == before
