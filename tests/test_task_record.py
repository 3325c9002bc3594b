"""`TaskRecord` and the state file's task entry are one shape: same keys, same types.

The types are compared with the schema key by key, and a real run's task entries are checked
against both: a step that wrote a key outside `TaskRecord`, or a value of another type, fails.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import pytest
from agent_team.plan import parse_plan
from agent_team.state_schema import definition_validator, load_schema
from agent_team.task_record import (
    Priority,
    PromptTask,
    SuiteResults,
    TaskRecord,
    TaskResult,
    TaskStatus,
    UsageCounts,
    WorkerRecord,
    WorkerState,
    job_of,
    new_task,
    prompt_notes,
)
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    finish_call,
    integration_turn,
    plan_turn,
    read_state,
    run_orchestrator,
    task,
    tool_turn,
    write_and_finish,
    write_call,
)


def _definition(name: str) -> dict[str, Any]:
    schema = load_schema()
    return schema["$defs"][name]


def _worker_definition() -> dict[str, Any]:
    return _definition("task")["properties"]["worker"]


SHAPES = [
    (TaskRecord, _definition("task")),
    (UsageCounts, _definition("usage_counts")),
    (TaskResult, _definition("task_result")),
    (SuiteResults, _definition("test_results")),
    (WorkerRecord, _worker_definition()),
]


@pytest.mark.parametrize(("shape", "definition"), SHAPES, ids=lambda s: getattr(s, "__name__", ""))
def test_keys_and_required_keys_are_the_schemas(shape: Any, definition: dict[str, Any]) -> None:
    assert set(shape.__annotations__) == set(definition["properties"])
    assert shape.__required_keys__ == frozenset(definition["required"])
    assert shape.__optional_keys__ == frozenset(definition["properties"]) - frozenset(
        definition["required"])


@pytest.mark.parametrize(("literal", "enum"), [
    (TaskStatus, _definition("task")["properties"]["status"]["enum"]),
    (Priority, _definition("task")["properties"]["priority"]["enum"]),
    (WorkerState, _worker_definition()["properties"]["state"]["enum"]),
])
def test_literal_values_are_the_schemas_enum(literal: Any, enum: list[str]) -> None:
    assert list(get_args(literal)) == enum


def test_prompt_notes_are_never_state_keys() -> None:
    notes = set(PromptTask.__annotations__) - set(TaskRecord.__annotations__)
    assert notes == {"additional_context", "last_error"}
    assert not notes & set(_definition("task")["properties"])
    record = new_task("T1", "do it", "backend-dev")
    assert prompt_notes(record) == ("", "")
    retry: PromptTask = {**record, "additional_context": "Use SQLite.", "last_error": "looped"}
    assert prompt_notes(retry) == ("Use SQLite.", "looped")


# -- values: a runtime check of the declared types ------------------------------------------------


def _problems(value: Any, hint: Any, where: str) -> list[str]:
    """Where `value` is not of the type `hint` (the subset of typing the records use)."""
    origin = get_origin(hint)
    if hint is Any:
        return []
    if origin in (Union, types.UnionType):
        options = [_problems(value, arg, where) for arg in get_args(hint)]
        return [] if any(not o for o in options) else [f"{where}: {value!r} is not {hint}"]
    if origin is Literal:
        return [] if value in get_args(hint) else [f"{where}: {value!r} not in {hint}"]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        (item,) = get_args(hint)
        return [p for i, v in enumerate(value) for p in _problems(v, item, f"{where}[{i}]")]
    if is_typeddict(hint):
        return record_problems(value, hint, where)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return [] if ok else [f"{where}: {value!r} is not {hint.__name__}"]


def record_problems(value: Any, shape: Any, where: str = "task") -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a dict"]
    hints = get_type_hints(shape)
    problems = [f"{where}: key {k!r} is not in {shape.__name__}" for k in value if k not in hints]
    problems += [f"{where}: required key {k!r} is missing" for k in shape.__required_keys__
                 if k not in value]
    for key, item in value.items():
        if key in hints:
            problems += _problems(item, hints[key], f"{where}.{key}")
    return problems


def test_the_runtime_check_catches_a_stray_key_and_a_wrong_type() -> None:
    record: dict[str, Any] = dict(new_task("T1", "do it", "backend-dev"))
    assert record_problems(record, TaskRecord) == []
    record["last_error"] = "a note that belongs in the prompt only"
    record["attempts"] = "1"
    assert record_problems(record, TaskRecord) == [
        "task: key 'last_error' is not in TaskRecord",
        "task.attempts: '1' is not int"]
    del record["status"]
    assert "task: required key 'status' is missing" in record_problems(record, TaskRecord)


# -- the plan and a real run ----------------------------------------------------------------------


def test_the_plan_yields_records_and_the_scheduler_jobs_come_from_them() -> None:
    plan = parse_plan({"tasks": [task("A", "backend-dev", priority="high"),
                                 task("B", "backend-dev", ["A", "C"]),
                                 task("C", "qa-tester", priority="low")]},
                      ("backend-dev", "qa-tester"))
    validator = definition_validator("task")
    for record in plan.tasks:
        assert record_problems(record, TaskRecord) == []
        assert validator.is_valid(record)
    a, b, c = plan.tasks
    assert job_of(a).priority > job_of(b).priority > job_of(c).priority
    assert job_of(b).dependencies == ("A", "C")
    assert job_of(b, {"A"}).dependencies == ("A",)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_repo(tmp_path / "project", {"README.md": "# project\n"})
    return (tmp_path / "project").resolve()


def test_every_task_entry_a_run_writes_is_a_task_record(project: Path, tmp_path: Path) -> None:
    agents = {
        "manager:plan": [plan_turn([task("T1", "backend-dev"),
                                    task("T2", "frontend-dev"),
                                    task("T3", "qa-tester", ["T2"])])],
        "backend-dev:T1": write_and_finish("a.txt", "A\n"),
        "frontend-dev:T2": [tool_turn(write_call("b.txt", "half\n")),
                            tool_turn(finish_call("failed", "Stuck.", ["no API"])),
                            tool_turn(write_call("b.txt", "again\n")),
                            tool_turn(finish_call("failed", "Stuck again.", ["no API"]))],
        "manager:integration": [integration_turn("T2 failed.")],
    }
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"coordination": {"max_task_attempts": 2}}))
    run = run_orchestrator(FileBasedOrchestrator, project, agents, "Record shapes",
                           config_path=config)

    tasks = read_state(project)["tasks"]
    assert {t["task_id"]: t["status"] for t in tasks} == {
        "T1": "completed", "T2": "failed", "T3": "blocked"}
    assert tasks[1]["attempts"] == 2
    retry_prompt = run.calls("frontend-dev:T2")[2].messages[0].content
    assert "A previous attempt failed: no API" in retry_prompt  # a note the state never holds
    validator = definition_validator("task")
    for entry in tasks:
        assert record_problems(entry, TaskRecord, entry["task_id"]) == []
        assert validator.is_valid(entry), entry
    assert [line["task_id"] for line in run.summary["tasks"]] == ["T1", "T2", "T3"]
    assert run.summary["tasks"][0]["files_modified"] == ["a.txt"]
    assert typing.get_type_hints(TaskRecord)["status"] is TaskStatus
