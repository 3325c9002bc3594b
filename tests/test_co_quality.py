"""Quality commands: coverage, test-status, security-audit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.co_helpers import co, make_project, scripted
from tests.conftest import make_repo
from tests.orchestration_helpers import (
    FAILING_TESTS,
    PASSING_TESTS,
    git,
    integration_turn,
    plan_turn,
    task,
    write_and_finish,
)

# Built at run time so this file itself holds no key-shaped literal.
AWS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"
ANTHROPIC_SHAPED = "sk-ant-api03-" + "x" * 40


def test_coverage_writes_summary_html_and_json(tmp_path: Path) -> None:
    project = tmp_path / "lib"
    make_repo(project, {
        "calc.py": "def add(a, b):\n    return a + b\n\n\ndef unused():\n    return 1\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
    })
    result = co("coverage", "-d", str(project))
    assert result.exit_code == 0, result.output
    assert "calc.py" in result.output and "TOTAL" in result.output
    assert (project / "htmlcov" / "index.html").is_file()
    data = json.loads((project / "coverage.json").read_text())
    assert data["files"]["calc.py"]["summary"]["missing_lines"] == 1
    assert "Total coverage:" in result.output


def run_with(project: Path, tmp_path: Path, number: int, command: str) -> None:
    (project / "orchestrator-config.json").write_text(json.dumps({"test_command": command}))
    agents = {"manager:plan": [plan_turn([task(f"T{number}", "backend-dev")])],
              f"backend-dev:T{number}": write_and_finish(f"f{len(os.listdir(tmp_path))}.txt",
                                                         "x\n"),
              "manager:integration": [integration_turn()]}
    co(*scripted(tmp_path, agents), "run", "--id", str(number), "--no-progress",
       "-d", str(project))


def test_test_status_shows_latest_results_and_changed_verdicts(tmp_path: Path) -> None:
    project = make_project(tmp_path / "app")
    d = ["-d", str(project)]
    co("add", "Flaky", *d)
    co("add", "Untouched", *d)
    run_with(project, tmp_path, 1, PASSING_TESTS)
    co("update", "1", "--status", "pending", *d)
    run_with(project, tmp_path, 1, FAILING_TESTS)
    data = json.loads(co("test-status", "--json", *d).output)
    verdicts = {t["id"]: t["verdict"] for t in data["tasks"]}
    assert verdicts == {1: "failed", 2: "not run"}
    assert data["changed"] == [{"id": 1, "from": "passed", "to": "failed"}]
    assert len(data["runs"]) == 2
    text = co("test-status", *d).output
    assert "task 1 passed -> failed" in text and "2 passed, 1 failed" in text


@pytest.fixture
def audited(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "app")
    return project


def test_security_audit_clean_project(audited: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SHAPED)
    result = co("security-audit", "-d", str(audited))
    assert result.exit_code == 0, result.output
    assert "ANTHROPIC_API_KEY: set in environment, well formed" in result.output
    assert ANTHROPIC_SHAPED not in result.output
    assert "No findings." in result.output


def test_security_audit_finds_keys_permissions_and_secrets_on_agent_branches(
        audited: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "not-a-key")
    env = audited / ".env"
    env.write_text(f"ANTHROPIC_API_KEY={ANTHROPIC_SHAPED}\n")
    env.chmod(0o644)
    (audited / "settings.py").write_text(f"AWS_ACCESS_KEY_ID = '{AWS_KEY}'\n")
    git(audited, "add", "settings.py")
    git(audited, "commit", "-qm", "settings")
    co("add", "Agent work", "-d", str(audited))
    agents = {"manager:plan": [plan_turn([task("T1", "backend-dev")])],
              "backend-dev:T1": write_and_finish("deploy.sh", f"export KEY={AWS_KEY}x\n"),
              "manager:integration": [integration_turn()]}
    co(*scripted(tmp_path, agents), "run", "--no-progress", "-d", str(audited))

    result = co("security-audit", "--json", "-d", str(audited))

    assert result.exit_code == 1
    data = json.loads(result.output)
    where = [f["where"] for f in data["findings"]]
    assert "OPENAI_API_KEY" in where
    assert ".env" in where
    assert "settings.py:1" in where
    assert any(w.endswith(":deploy.sh:1") for w in where), where
    assert AWS_KEY not in result.output and ANTHROPIC_SHAPED not in result.output
    assert "not-a-key" not in result.output
    env.chmod(0o600)
    again = json.loads(co("security-audit", "--json", "-d", str(audited)).output)
    assert ".env" not in [f["where"] for f in again["findings"]]
