"""The state journal: a run's small changes are appended, folded in at checkpoints, never lost."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from agent_team.errors import StateError
from agent_team.state import TeamState
from agent_team.state_file import STATE_RELATIVE_PATH
from agent_team.state_journal import journal_path
from agent_team.state_ops import find_task
from agent_team.state_schema import utc_now

ROOT = Path(__file__).resolve().parents[1]


def make_task(task_id: str) -> dict:
    return {"task_id": task_id, "description": f"Task {task_id}", "assigned_to": "backend-dev",
            "status": "pending", "dependencies": [], "deliverables": [], "priority": "medium"}


def planned(tmp_path: Path, count: int) -> TeamState:
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = TeamState.for_project(tmp_path)
    with state.transaction() as data:
        data["tasks"].extend(make_task(f"T{i}") for i in range(count))
    return state


def test_a_run_journals_changes_and_readers_see_them_before_the_checkpoint(
    tmp_path: Path,
) -> None:
    state = planned(tmp_path, 3)
    before = state.path.read_bytes()
    with state.exclusive():
        state.set_task("T1", status="in_progress", progress=10)
        state.append_update("backend-dev", "T1", "info", "started")
        state.record({"op": "turn", "agent": "backend-dev@T1", "turn": 1, "tokens": 120,
                      "updated_at": utc_now()})
        assert state.path.read_bytes() == before  # the file itself is not rewritten
        assert journal_path(state.path).exists()
        other = TeamState(state.path).read()  # another reader merges file and journal
        assert other["tasks"][1]["status"] == "in_progress"
        assert other["agent_updates"][-1]["message"] == "started"
        assert other["agents"]["backend-dev@T1"]["tokens"] == 120
    # the end of the run folds the journal in: the file alone is complete again
    assert not journal_path(state.path).exists()
    data = json.loads(state.path.read_text(encoding="utf-8"))
    assert data["tasks"][1]["progress"] == 10 and data["agents"]["backend-dev@T1"]["turn"] == 1


def test_a_journal_whose_base_was_replaced_is_never_applied_twice(tmp_path: Path) -> None:
    state = planned(tmp_path, 1)
    with state.exclusive():
        state.add_usage("backend-dev", {"input_tokens": 5}, task_id="T0")
        journal = journal_path(state.path).read_bytes()
    # a crash after the checkpoint's new file but before the old journal's removal
    journal_path(state.path).write_bytes(journal)
    assert TeamState(state.path).read()["usage"]["input_tokens"] == 5


def test_a_line_cut_short_by_a_crash_is_dropped_and_appending_goes_on(tmp_path: Path) -> None:
    state = planned(tmp_path, 2)
    with state.exclusive():
        state.set_task("T0", progress=50)
        with journal_path(state.path).open("ab") as fh:
            fh.write(b'{"at":"2025-01-01T00:00:00Z","ops":[{"op":"task"')  # no newline
        reader = TeamState(state.path)
        assert reader.read()["tasks"][0]["progress"] == 50
        with pytest.raises(StateError, match="changed by something other than this run"):
            state.set_task("T1", progress=20)  # the journal is not the one the run wrote


def test_a_crashed_run_loses_no_recorded_change(tmp_path: Path) -> None:
    state = planned(tmp_path, 40)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT / "scripts" / "orchestration")!r})
        from agent_team.state import TeamState
        state = TeamState({str(state.path)!r})
        with state.exclusive():
            for i in range(40):
                state.set_task(f"T{{i}}", status="in_progress", progress=i)
                state.add_usage("backend-dev", {{"output_tokens": 1}}, task_id=f"T{{i}}")
            print("recorded", flush=True)
            os._exit(9)  # killed before the run's last checkpoint
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 9 and "recorded" in done.stdout, done.stderr
    data = TeamState(state.path).read()
    assert [t["progress"] for t in data["tasks"]] == list(range(40))
    assert data["usage"]["output_tokens"] == 40 and data["usage"]["api_calls"] == 40
    status = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "orchestration" / "co.py"), "status", "--json",
         "--project-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    tasks = json.loads(status.stdout)["tasks"]
    assert {t["status"] for t in tasks} == {"in_progress"} and tasks[39]["progress"] == 39


def test_the_bytes_one_change_appends_do_not_grow_with_the_plan(tmp_path: Path) -> None:
    sizes = []
    for count in (10, 200):
        state = planned(tmp_path / str(count), count)
        with state.exclusive():
            state.set_task("T5", status="in_progress")  # starts the journal (its header)
            start = state.stats.as_dict()
            state.set_task("T5", progress=40)
            state.append_update("backend-dev", "T5", "info", "working")
            end = state.stats.as_dict()
        assert end["snapshot_writes"] == start["snapshot_writes"]
        sizes.append(end["bytes_written"] - start["bytes_written"])
    assert sizes[0] == sizes[1]


def test_an_invalid_change_is_refused_and_nothing_is_journaled(tmp_path: Path) -> None:
    state = planned(tmp_path, 1)
    with state.exclusive():
        state.set_task("T0", progress=10)
        size = journal_path(state.path).stat().st_size
        with pytest.raises(StateError, match="Nothing was written"):
            state.set_task("T0", status="not-a-status")
        assert journal_path(state.path).stat().st_size == size
        # the refused change was rolled back
        assert state.view(lambda s: find_task(s, "T0"))["status"] == "pending"


def test_fields_are_checked_alone_because_no_rule_spans_a_task_or_agents_fields() -> None:
    # `check_fields` validates only what an update sets; that equals validating the whole
    # entity only while the schema has no rule across the properties of a task or an agent.
    defs = json.loads((ROOT / "scripts/orchestration/agent_team/schemas"
                       / "team-communication.schema.json").read_text())["$defs"]
    for name in ("task", "agent"):
        assert set(defs[name]) <= {"type", "description", "required", "additionalProperties",
                                   "properties"}, name


@pytest.mark.parametrize(("fields", "where"), [
    ({"result": {"summary": 3}}, "$.result"),
    ({"progress": -1}, "$.progress"),
    ({"error": ["x"]}, "$.error"),
])
def test_a_bad_nested_field_is_refused_with_its_path(tmp_path: Path, fields: dict,
                                                     where: str) -> None:
    state = planned(tmp_path, 1)
    with state.exclusive():
        state.set_task("T0", progress=10)
        with pytest.raises(StateError, match=rf"Refusing to record task T0: at \{where}"):
            state.set_task("T0", **fields)
        assert state.view(lambda s: find_task(s, "T0"))["progress"] == 10


def test_a_file_changed_during_a_run_is_refused_and_the_journal_kept_as_last_good(
    tmp_path: Path,
) -> None:
    state = planned(tmp_path, 1)
    with state.exclusive():
        state.set_task("T0", progress=10)
        path = tmp_path / STATE_RELATIVE_PATH
        path.write_text(path.read_text(encoding="utf-8").replace('"pending"', '"failed" '))
        with pytest.raises(StateError, match="changed by something other than this run"):
            state.set_task("T0", progress=20)
        good = next(path.parent.glob("team-communication.json.last-good-*"))
        assert json.loads(good.read_text(encoding="utf-8"))["tasks"][0]["progress"] == 10
