"""Bad plans from the manager: each is accepted, or sent back with the exact errors until the
run fails with exit 2, a clear message, a valid state file and no branch created.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import EXIT_BAD_INPUT, PlanError
from agent_team.scripted import ScriptedModel
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.fake_api import (
    FakeAPI,
    anthropic_message,
    fake_api_server,  # noqa: F401
)
from tests.orchestration_helpers import (
    assert_nothing_lost,
    new_branches,
    preserve,
    read_state,
    tasks_by_id,
    write_config,
)

FILES = {"README.md": "# demo\n"}
FEATURE = "Planned feature"
TESTS = "python -c \"print('1 passed')\""
ROLES = "backend-dev, frontend-dev, qa-tester"
ATTEMPTS = 3


def task(task_id: str, role: str = "backend-dev", deps: tuple[str, ...] = (),
         description: str | None = None) -> dict[str, Any]:
    return {"task_id": task_id, "assigned_to": role, "dependencies": list(deps),
            "description": f"Write {task_id.lower()}.txt" if description is None
            else description}


def plan(*tasks: dict[str, Any]) -> str:
    return json.dumps({"tasks": list(tasks), "decisions": []})


#: bad plan id -> (the manager's reply, the exact errors sent back and raised)
REJECTED: dict[str, tuple[str, list[str]]] = {
    "not-json": ("I would build the login form first, then the API.",
                 ['The reply must be one JSON object with "tasks" and "decisions" '
                  "(line 1, column 1: Expecting value)."]),
    "empty-reply": ("", ['The reply must be one JSON object with "tasks" and "decisions" '
                         "(line 1, column 1: Expecting value)."]),
    "cut-at-max-tokens": (plan(task("A"), task("B"))[:45],
                          ['The reply must be one JSON object with "tasks" and "decisions" '
                           "(line 1, column 44: Unterminated string starting at)."]),
    "cycle": (plan(task("A", deps=("C",)), task("B", deps=("A",)), task("C", deps=("B",))),
              ["Dependency cycle: A -> C -> B -> A. Remove one dependency."]),
    "self-dependency": (plan(task("A", deps=("A",))), ["Task A depends on itself."]),
    "unknown-role": (plan(task("A", role="devops")),
                     [f"Task A is assigned to unknown role 'devops'; available roles: {ROLES}."]),
    "duplicate-ids": (plan(task("A"), task("A", role="qa-tester")),
                      ["Task id A is used more than once; task ids must be unique."]),
    "500-tasks": (plan(*(task(f"T{i:03d}") for i in range(500))),
                  ["The plan has 500 tasks; at most 100 are allowed. "
                   "Merge small steps into larger tasks."]),
    "empty-descriptions": (plan(task("A", description=""), task("B", description=" \n ")),
                           ["Task A has an empty description.",
                            "Task B has an empty description."]),
    "no-tasks": (plan(), ["The plan has no tasks: plan at least one task for the feature."]),
    "dangling-dependency": (plan(task("A", deps=("Z",))),
                            ["Task A depends on Z, which is not in the plan."]),
    "id-escaping-the-branch": (plan(task("../../HEAD")), [
        "$.tasks[0].task_id: '../../HEAD' does not match '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'"]),
    "several-problems": (plan(task("A", role="devops", deps=("A",)), task("A", description="")),
                         [f"Task A is assigned to unknown role 'devops'; available roles: {ROLES}.",
                          "Task id A is used more than once; task ids must be unique.",
                          "Task A has an empty description.", "Task A depends on itself."]),
}


def failing_run(tmp_path: Path, reply: str) -> tuple[PlanError, ScriptedModel, Path, Any]:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    model = ScriptedModel({"manager:plan": [{"text": reply}] * ATTEMPTS})
    lines: list[str] = []
    runner = FileBasedOrchestrator(project, model=model, test_command=TESTS, output=lines.append)
    with pytest.raises(PlanError) as info:
        runner.run(FEATURE)
    model.assert_complete()
    return info.value, model, project, before


@pytest.mark.parametrize("case", list(REJECTED))
def test_bad_plan_is_sent_back_with_the_exact_errors_then_fails_with_exit_2(
    tmp_path: Path, case: str
) -> None:
    reply, expected = REJECTED[case]
    error, model, project, before = failing_run(tmp_path, reply)

    assert error.errors == expected
    assert error.exit_code == EXIT_BAD_INPUT
    assert str(error).startswith(f"The manager's plan was still invalid after {ATTEMPTS} attempt")
    prompts = [call.messages[0].content for call in model.calls]
    for correction in prompts[1:]:
        assert "It cannot be used because:\n" + "\n".join(f"- {e}" for e in expected) in (
            correction)
        assert "Return a corrected plan as one JSON object." in correction
    state = read_state(project)
    assert state["current_feature"]["status"] == "failed"
    assert state["tasks"] == [] and state["runs"][-1]["exit_code"] == EXIT_BAD_INPUT
    rejections = [u for u in state["agent_updates"] if u["status"] == "plan_rejected"]
    assert len(rejections) == ATTEMPTS and rejections[0]["details"]["errors"] == expected
    after = assert_nothing_lost(project, before, refs_fixed=True)
    assert new_branches(before, after) == []


def test_invalid_plan_via_the_command_line_exits_2_and_lists_every_error(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    reply, expected = REJECTED["several-problems"]
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": {"manager:plan": [{"text": reply}] * ATTEMPTS}}))
    result = CliRunner().invoke(main, [
        "--feature", FEATURE, "--project-dir", str(project), "--api-provider", "scripted",
        "--session", str(session), "--no-progress",
    ], catch_exceptions=False)

    assert result.exit_code == EXIT_BAD_INPUT
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: The manager's plan was still invalid after 3 attempt(s)")
    assert lines[1:] == [f"  - {e}" for e in expected]
    assert "Traceback" not in result.output
    read_state(project)
    assert new_branches(before, assert_nothing_lost(project, before, refs_fixed=True)) == []


@pytest.mark.parametrize("reply", [
    "```json\n" + plan(task("A")) + "\n```",
    "Here is the plan:\n\n```\n" + plan(task("A")) + "\n```\nTell me if it needs changes.",
    "Sure. " + plan(task("A")) + " That is all.",
], ids=["fenced", "fence-amid-prose", "bare-amid-prose"])
def test_plan_wrapped_in_a_code_fence_or_prose_is_accepted(tmp_path: Path, reply: str) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    model = ScriptedModel({
        "manager:plan": [{"text": reply}],
        "backend-dev:A": [{"tool_calls": [
            {"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}},
            {"name": "finish_task", "arguments": {"status": "completed", "summary": "a"}}]}],
        "manager:integration": [{"text": "A wrote a.txt."}],
    })
    summary = SimpleOrchestrator(project, model=model, test_command=TESTS,
                                 output=lambda _: None).run(FEATURE)
    assert summary["exit_code"] == 0
    model.assert_complete()
    assert tasks_by_id(read_state(project))["A"]["status"] == "completed"
    assert new_branches(before, assert_nothing_lost(project, before, refs_fixed=True)) == [
        summary["feature_branch"]]


def test_corrected_plan_through_the_real_sdk_is_accepted_on_the_second_attempt(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-plans-test-not-real-0123456789")
    cycle, errors = REJECTED["cycle"]
    fake_api.enqueue(anthropic_message(text=cycle))
    fake_api.enqueue(anthropic_message(text=plan(task("A"), task("B", deps=("A",)))))
    for task_id in ("A", "B"):
        fake_api.enqueue(anthropic_message(tool_uses=[("finish_task", {
            "status": "completed", "summary": f"{task_id}: nothing to change."})]))
    fake_api.enqueue(anthropic_message(text="Both tasks found nothing to change."))
    summary = SimpleOrchestrator(project, api_provider="anthropic",
                                 base_url=fake_api.anthropic_base_url, test_command=TESTS,
                                 output=lambda _: None).run(FEATURE)

    assert summary["exit_code"] == 0
    fake_api.assert_all_used()
    first, second = fake_api.bodies()[:2]
    assert first["output_config"]["format"]["type"] == "json_schema"
    correction = second["messages"][0]["content"][0]["text"]
    assert f"It cannot be used because:\n- {errors[0]}" in correction
    assert [t["task_id"] for t in read_state(project)["tasks"]] == ["A", "B"]


def test_500_tasks_with_max_tasks_raised_to_500_are_planned_and_scheduled(
    tmp_path: Path,
) -> None:
    """A 500-task plan is accepted and the run works through it; a budget of 11 API calls
    (the plan and ten tasks) keeps the test short. Measured separately: all 500 tasks run in
    about 50 s (simple) and 100 s (file-based, 2 workers) on 2 cores."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    tasks = [task(f"T{i:03d}", deps=(f"T{i - 1:03d}",) if i % 5 else ()) for i in range(500)]
    agents: dict[str, list[dict[str, Any]]] = {"manager:plan": [{"text": plan(*tasks)}]}
    for i in range(10):
        agents[f"backend-dev:T{i:03d}"] = [{"tool_calls": [
            {"name": "write_file", "arguments": {"path": f"t{i:03d}.txt", "content": f"{i}\n"}},
            {"name": "finish_task", "arguments": {"status": "completed", "summary": "ok"}}]}]
    config = write_config(tmp_path / "config.json", coordination={"max_tasks": 500})
    started = time.monotonic()
    summary = SimpleOrchestrator(project, model=ScriptedModel(agents), config_path=config,
                                 limits={"max_api_calls": 11}, test_command=TESTS,
                                 output=lambda _: None).run(FEATURE)
    elapsed = time.monotonic() - started

    assert summary["exit_code"] == 3 and summary["status"] == "stopped"
    assert elapsed < 20, f"a 500-task plan took {elapsed:.1f} s to plan and start"
    state = read_state(project)
    statuses = [t["status"] for t in state["tasks"]]
    assert len(statuses) == 500 and statuses.count("completed") == 10
    assert statuses.count("pending") == 490
    after = assert_nothing_lost(project, before, refs_fixed=True)
    assert new_branches(before, after) == [summary["feature_branch"]]


def test_plan_cut_at_max_tokens_tells_the_manager_to_shorten_it(tmp_path: Path) -> None:
    long_plan = plan(*(task(f"T{i:02d}", description="Write it. " * 20) for i in range(30)))
    cut = {"text": long_plan[:2000], "stop_reason": "max_tokens"}
    project = tmp_path / "project"
    make_repo(project, FILES)
    model = ScriptedModel({"manager:plan": [cut] * ATTEMPTS})
    with pytest.raises(PlanError):
        FileBasedOrchestrator(project, model=model, output=lambda _: None).run(FEATURE)
    correction = model.calls[1].messages[0].content
    assert "output token limit" in correction
