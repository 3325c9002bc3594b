"""The run summary: built from the state file, printed like the guide, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from agent_team import report, state_ops
from agent_team.models import Usage
from agent_team.plan import parse_plan
from agent_team.state_schema import new_state, utc_now, validate_state
from agent_team.testrun import TestResults as Results

GUIDE_PLAN = {
    "tasks": [
        {"task_id": "TASK-001", "assigned_to": "backend-dev",
         "description": "Implement JWT service and auth API endpoints"},
        {"task_id": "TASK-002", "assigned_to": "frontend-dev", "dependencies": ["TASK-001"],
         "description": "Build login and registration UI components with an auth context, "
                        "protected routes and form validation"},
        {"task_id": "TASK-003", "assigned_to": "qa-tester", "dependencies": ["TASK-001",
                                                                            "TASK-002"],
         "description": "Write comprehensive tests for auth flow"},
    ]
}
ROLES = ("backend-dev", "frontend-dev", "qa-tester")


def add_usage(state: dict[str, Any], role: str, usage: Usage, cost: float | None,
              task_id: str | None = None) -> None:
    state_ops.add_usage_to(state, role, usage.to_dict(), cost_usd=cost, task_id=task_id)


def finished_state(*, unknown_cost: bool = False) -> dict[str, Any]:
    """A state as a run of the guide's feature leaves it: two tasks done, QA failed."""
    state = new_state("my-app")
    now = utc_now()
    state["current_feature"] = {
        "id": "jwt-auth",
        "title": "JWT-based user authentication",
        "branch": "feature/jwt-auth",
        "base_branch": "main",
        "status": "completed",
        "started_at": now,
    }
    plan = parse_plan(GUIDE_PLAN, ROLES)
    state["tasks"] = list(plan.tasks)
    backend, frontend, qa = state["tasks"]
    backend.update(status="completed", progress=100, commit="a" * 40, merged=True,
                   result={"summary": "JWT endpoints", "completed_items": ["login"],
                           "files_modified": ["src/jwt.py", "src/auth.py"], "blockers": []})
    frontend.update(status="completed", progress=100, commit="b" * 40, merged=True,
                    result={"summary": "UI", "completed_items": [],
                            "files_modified": ["web/login.js", "src/auth.py"], "blockers": []})
    qa.update(status="failed", error="Agent used all 40 turns without finishing the task " * 5)
    add_usage(state, "manager", Usage(2000, 500), 0.0135, None)
    add_usage(state, "backend-dev", Usage(10000, 3000, 4000, 1000), 0.08, "TASK-001")
    add_usage(state, "backend-dev", Usage(5000, 1000), 0.03, "TASK-001")
    add_usage(state, "frontend-dev", Usage(8000, 2000), None if unknown_cost else 0.054,
              "TASK-002")
    tests = Results(
        command="python -m pytest -q", exit_code=1, passed=47, failed=1, skipped=0, errors=0,
        framework="pytest", duration_seconds=3.2, output_tail="1 failed, 47 passed",
        ran_at=now, ref="feature/jwt-auth",
    )
    state["integration"] = {
        "status": "completed",
        "branch": "feature/jwt-auth",
        "merges": [
            {"task_id": "TASK-001", "branch": "feature/jwt-auth/agent/backend-dev/TASK-001",
             "into": "feature/jwt-auth", "status": "merged", "commit": "c" * 40,
             "timestamp": now},
            {"task_id": "TASK-002", "branch": "feature/jwt-auth/agent/frontend-dev/TASK-002",
             "into": "feature/jwt-auth", "status": "conflict_resolved", "commit": "d" * 40,
             "conflicts": ["src/auth.py"], "timestamp": now},
        ],
        "test_results": tests.to_dict(),
        "summary": "Backend and frontend merged; one QA task failed.",
        "merged_into_base": False,
    }
    validate_state(state)
    return state


@pytest.fixture
def summary() -> dict[str, Any]:
    return report.build_summary(
        finished_state(), run_id="run-20250101-120000", duration_seconds=245.678,
        status="failed", exit_code=1,
    )


def test_build_summary_from_state(summary: dict[str, Any]) -> None:
    assert summary["run_id"] == "run-20250101-120000"
    assert summary["feature"] == "JWT-based user authentication"
    assert summary["feature_branch"] == "feature/jwt-auth"
    assert summary["base_branch"] == "main"
    assert summary["status"] == "failed"
    assert summary["exit_code"] == 1
    assert summary["duration_seconds"] == 245.68
    assert summary["api_calls"] == 4
    assert summary["api_calls_by_role"] == {"manager": 1, "backend-dev": 2, "frontend-dev": 1}
    assert summary["tokens"] == {
        "input": 25000, "output": 6500, "cache_read": 4000, "cache_write": 1000,
    }
    assert summary["cost_usd"] == pytest.approx(0.0135 + 0.08 + 0.03 + 0.054)
    assert summary["cost_known"] is True
    assert [t["status"] for t in summary["tasks"]] == ["completed", "completed", "failed"]
    assert summary["tasks"][0]["api_calls"] == 2
    assert summary["tasks"][0]["commit"] == "a" * 40
    assert summary["tasks"][2]["api_calls"] == 0
    assert summary["tasks"][2]["files_modified"] == []
    assert summary["files_changed"] == ["src/auth.py", "src/jwt.py", "web/login.js"]
    assert [m["status"] for m in summary["merges"]] == ["merged", "conflict_resolved"]
    assert summary["test_results"]["passed"] == 47
    assert summary["integration_summary"].startswith("Backend and frontend merged")
    assert summary["merged_into_base"] is False
    json.dumps(summary)


def test_summary_of_a_fresh_state() -> None:
    summary = report.build_summary(new_state("p"), run_id="r", duration_seconds=0.0,
                                   status="failed", exit_code=1)
    assert summary["tasks"] == []
    assert summary["api_calls"] == 0
    assert summary["test_results"] is None
    text = report.render_console(summary)
    assert "Tests: not run" in text
    assert "Estimated Cost: $0.00 (no tokens were billed)" in text, "no calls cost nothing"


def test_render_console_has_the_guide_sections(summary: dict[str, Any]) -> None:
    text = report.render_console(summary)
    lines = text.splitlines()
    assert lines[0] == lines[2] == "=" * 80
    assert lines[1] == "ORCHESTRATION SUMMARY"
    assert lines[-1] == "=" * 80
    for heading in ("Feature: ", "Duration: ", "API Calls: ", "Tokens Used: ",
                    "Estimated Cost: ", "Status: "):
        assert sum(line.startswith(heading) for line in lines) == 1, heading
    assert "Tasks:" in lines
    assert "Results:" in lines
    assert "Feature: JWT-based user authentication" in lines
    assert "Duration: 245.7 s" in lines
    assert "API Calls: 4 (manager x1, backend-dev x2, frontend-dev x1)" in lines
    assert ("Tokens Used: 36,500 (input 25,000, output 6,500, cache read 4,000, "
            "cache write 1,000)") in lines
    assert "Estimated Cost: ~$0.1775 (estimate from list prices)" in lines
    assert "Status: FAILED" in lines
    assert lines.index("Tasks:") < lines.index("Results:") < lines.index("Status: FAILED")


def test_render_console_task_lines(summary: dict[str, Any]) -> None:
    lines = report.render_console(summary).splitlines()
    assert "  [done] TASK-001 (backend-dev): Implement JWT service and auth API endpoints" in lines
    frontend = next(line for line in lines if "TASK-002" in line)
    assert frontend.endswith(": " + GUIDE_PLAN["tasks"][1]["description"][:60])
    failed = next(line for line in lines if "TASK-003" in line)
    assert failed.startswith("  [FAIL] TASK-003 (qa-tester): Write comprehensive tests")
    assert " - Agent used all 40 turns" in failed
    assert len(failed.split(" - ", 1)[1]) == 120


def test_render_console_results(summary: dict[str, Any]) -> None:
    lines = report.render_console(summary).splitlines()
    assert "  Files changed: 3" in lines
    assert "  Merges: 2 (1 with conflicts)" in lines
    assert "  Tests: FAIL: 47 passed, 1 failed (exit code 1, `python -m pytest -q`)" in lines


def test_unresolved_merges_are_counted(summary: dict[str, Any]) -> None:
    summary["merges"] = [
        {"task_id": "A", "status": "merged"},
        {"task_id": "B", "status": "conflict_unresolved", "conflicts": ["x"]},
        {"task_id": "C", "status": "failed"},
    ]
    text = report.render_console(summary)
    assert "  Merges: 3 (1 with conflicts, 2 not merged)" in text.splitlines()


def test_unknown_cost_prints_unknown() -> None:
    summary = report.build_summary(finished_state(unknown_cost=True), run_id="r",
                                   duration_seconds=1, status="completed", exit_code=0)
    assert summary["cost_usd"] is None
    assert summary["cost_known"] is False
    line = next(x for x in report.render_console(summary).splitlines() if "Estimated Cost" in x)
    assert line.startswith("Estimated Cost: unknown")
    assert "$" not in line
    assert "- Estimated cost: unknown" in report.render_markdown(summary)


def test_status_lines_by_exit_code(summary: dict[str, Any]) -> None:
    assert "Status: SUCCESS - ready to review" in report.render_console({**summary,
                                                                         "exit_code": 0})
    budget = report.render_console({**summary, "exit_code": 3, "stop_reason": "cost limit"})
    assert "Status: STOPPED - budget reached; resume with --resume" in budget
    assert "  Stopped: cost limit" in budget


def test_tests_line_variants() -> None:
    passing = Results("npm test", 0, passed=12, failed=0, framework="jest").to_dict()
    assert report._tests_line(passing) == "PASS: 12 passed (exit code 0, `npm test`)"
    silent = Results("make check", 2).to_dict()
    assert report._tests_line(silent) == "FAIL: no counts parsed (exit code 2, `make check`)"
    assert report._tests_line(None) == "not run"


def test_render_markdown(summary: dict[str, Any]) -> None:
    text = report.render_markdown(summary)
    assert text.startswith("# Run run-20250101-120000: JWT-based user authentication\n")
    assert "- Status: **failed** (exit code 1)" in text
    assert "- Branch: `feature/jwt-auth` from `main`" in text
    row = "| TASK-001 | backend-dev | completed | aaaaaaaaaa | `src/jwt.py`<br>`src/auth.py` | 2 |"
    assert row in text
    assert "| TASK-003 | qa-tester | failed |  | - | 0 |" in text
    assert "- TASK-002: conflict_resolved (conflicts: src/auth.py)" in text
    assert "## Integration summary\n\nBackend and frontend merged; one QA task failed." in text
    assert text.endswith("\n")


def test_compact(summary: dict[str, Any]) -> None:
    compact = report.compact(summary)
    assert compact["tasks"] == {"TASK-001": "completed", "TASK-002": "completed",
                                "TASK-003": "failed"}
    assert compact["api_calls"] == 4
    assert set(compact) == {"status", "exit_code", "duration_seconds", "api_calls", "tokens",
                            "cost_usd", "tasks"}


def test_write_reports_writes_both_files(tmp_path: Path, summary: dict[str, Any]) -> None:
    paths = report.write_reports(tmp_path, "run-1", summary)
    directory = tmp_path / ".ai-agents" / "reports"
    assert paths == {"markdown": directory / "run-1.md", "json": directory / "run-1.json"}
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == summary
    assert paths["markdown"].read_text(encoding="utf-8") == report.render_markdown(summary)
    assert sorted(p.name for p in directory.iterdir()) == ["run-1.json", "run-1.md"]


def test_write_reports_replaces_old_reports(tmp_path: Path, summary: dict[str, Any]) -> None:
    report.write_reports(tmp_path, "run-1", {**summary, "status": "running"})
    paths = report.write_reports(tmp_path, "run-1", summary)
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["status"] == "failed"


def test_failed_write_keeps_the_old_file_and_no_temp_files(
    tmp_path: Path, summary: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = report.write_reports(tmp_path, "run-1", summary)
    before = paths["json"].read_bytes()

    def broken_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        report.write_reports(tmp_path, "run-1", {**summary, "status": "completed"})
    assert paths["json"].read_bytes() == before
    directory = tmp_path / ".ai-agents" / "reports"
    assert sorted(p.name for p in directory.iterdir()) == ["run-1.json", "run-1.md"]
