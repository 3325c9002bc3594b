"""Backlog commands: add, parse, list, show, update, delete, on the job store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.co_helpers import co, make_project, scripted
from tests.orchestration_helpers import plan_turn, task


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "app")


def listing(project: Path, *extra: str) -> list[dict]:
    return json.loads(co("list", "--json", *extra, "-d", str(project)).output)


def test_add_prints_short_ids_and_keeps_priorities(project: Path) -> None:
    d = ["-d", str(project)]
    assert co("add", "Implement user authentication", *d).output.strip() == (
        "Added task 1: Implement user authentication")
    assert co("add", "Fix bug in payment processing", "-p", "high", *d).output.startswith(
        "Added task 2")
    assert co("add", "Tidy", "-p", "3", "--depends-on", "1", *d).exit_code == 0
    tasks = listing(project)
    assert [(t["id"], t["priority"], t["priority_name"]) for t in tasks] == [
        (1, 5, "medium"), (2, 8, "high"), (3, 3, "low")]
    assert tasks[2]["dependencies"] == [1]
    assert (project / ".ai-agents" / "jobs.db").is_file()


@pytest.mark.parametrize("args,message", [
    (["add", "x", "-p", "11"], "Priority '11' is not valid"),
    (["add", "x", "--depends-on", "9"], "Task(s) 9 do not exist"),
    (["add", "   "], "description is empty"),
    (["update", "5", "--status", "done"], "No task 5"),
    (["show", "5"], "No task 5"),
])
def test_bad_input_exits_2_with_a_message(project: Path, args: list[str], message: str) -> None:
    result = co(*args, "-d", str(project))
    assert result.exit_code == 2
    assert message in result.output


def test_update_status_and_priority(project: Path) -> None:
    co("add", "One", "-d", str(project))
    result = co("update", "1", "--status", "in_progress", "--priority", "low", "-d", str(project))
    assert result.exit_code == 0, result.output
    assert listing(project)[0]["status"] == "in-progress"
    assert listing(project)[0]["priority"] == 2
    bad = co("update", "1", "--status", "sleeping", "-d", str(project))
    assert bad.exit_code == 2 and "not valid" in bad.output
    assert co("update", "1", "-d", str(project)).exit_code == 2


def test_filter_status_and_subtasks(project: Path) -> None:
    d = ["-d", str(project)]
    co("add", "Parent", *d)
    co("add", "Child", "--parent", "1", *d)
    co("add", "Other", *d)
    co("update", "3", "--status", "done", *d)
    plain = co("list", *d).output
    assert "Child" not in plain and "(+1 subtasks)" in plain
    nested = co("list", "--show-subtasks", *d).output
    assert "\n     2  pending" in nested or "  2  pending" in nested
    assert [t["id"] for t in listing(project, "--filter-status", "done")] == [3]
    assert [t["id"] for t in listing(project, "--filter-status", "pending",
                                     "--show-subtasks")] == [1, 2]


def test_delete_refuses_needed_and_running_tasks(project: Path) -> None:
    d = ["-d", str(project)]
    co("add", "Base", *d)
    co("add", "Needs base", "--depends-on", "1", *d)
    co("add", "Sub of base", "--parent", "1", *d)
    refused = co("delete", "1", *d)
    assert refused.exit_code == 2 and "Task(s) 2 depend on task 1" in refused.output
    assert len(listing(project, "--show-subtasks")) == 3
    co("update", "2", "--status", "in-progress", *d)
    assert "is running" in co("delete", "2", *d).output
    forced = co("delete", "1", "--force", *d)
    assert forced.exit_code == 0 and "Deleted task(s) 1, 3." in forced.output
    assert [(t["id"], t["dependencies"]) for t in listing(project, "--show-subtasks")] == [
        (2, [])]


def test_show_prints_everything(project: Path) -> None:
    d = ["-d", str(project)]
    co("add", "Base", *d)
    co("add", "Top", "--depends-on", "1", "--role", "backend-dev", *d)
    out = co("show", "1", *d).output
    assert "Task 1: Base" in out and "needed by:    2" in out
    data = json.loads(co("show", "2", "--json", *d).output)
    assert data["role"] == "backend-dev" and data["dependencies"] == [1]


def test_parse_turns_a_prd_into_validated_tasks(project: Path, tmp_path: Path) -> None:
    prd = tmp_path / "PRD.md"
    prd.write_text("# Shop\nUsers log in. Users pay with cards.\n")
    plan = [task("AUTH", "backend-dev", priority="high"),
            task("AUTH.1", "backend-dev", ["AUTH"]),
            task("PAY", "backend-dev", ["AUTH"], priority="low"),
            task("QA", "qa-tester", ["PAY", "AUTH.1"])]
    result = co(*scripted(tmp_path, {"manager:plan": [plan_turn(plan)]}), "parse", str(prd),
                "-d", str(project))
    assert result.exit_code == 0, result.output
    assert "Created 4 task(s)" in result.output
    tasks = {t["description"].split()[2]: t for t in listing(project, "--show-subtasks")}
    assert tasks["AUTH"]["priority_name"] == "high" and tasks["PAY"]["priority"] == 2
    assert tasks["AUTH.1"]["parent"] == tasks["AUTH"]["id"]
    assert sorted(tasks["QA"]["dependencies"]) == sorted([tasks["PAY"]["id"],
                                                          tasks["AUTH.1"]["id"]])
    assert tasks["QA"]["role"] == "qa-tester" and tasks["QA"]["source"] == "PRD.md"


def test_parse_sends_an_invalid_plan_back_then_fails_with_exit_2(project: Path,
                                                                 tmp_path: Path) -> None:
    prd = tmp_path / "requirements.txt"
    prd.write_text("Build it.\n")
    cyclic = [task("A", "backend-dev", ["B"]), task("B", "backend-dev", ["A"])]
    agents = {"manager:plan": [plan_turn(cyclic)] * 3}
    result = co(*scripted(tmp_path, agents), "parse", str(prd), "-d", str(project))
    assert result.exit_code == 2
    assert "Dependency cycle" in result.output
    assert listing(project) == []
