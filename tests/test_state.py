"""The team state file: validation, migrations, transactions, atomic saves, secrets, races."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from agent_team import state_ops
from agent_team.errors import StateError, UnknownTaskError
from agent_team.state import TeamState
from agent_team.state_file import STATE_RELATIVE_PATH
from agent_team.state_migrations import SUPPORTED_VERSIONS, migrate_state
from agent_team.state_schema import SCHEMA_VERSION, new_state, utc_now, validate_state

WORKER = Path(__file__).with_name("state_worker.py")


def make_task(task_id: str, **fields: object) -> dict:
    task = {
        "task_id": task_id,
        "description": f"work on {task_id}",
        "assigned_to": "backend-dev",
        "dependencies": [],
        "status": "pending",
    }
    task.update(fields)
    return task


@pytest.fixture
def team(tmp_path: Path) -> TeamState:
    state = TeamState.for_project(tmp_path, project_name="demo")
    with state.transaction() as data:
        data["tasks"] = [make_task("TASK-001"), make_task("TASK-002", dependencies=["TASK-001"])]
    return state


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- files and validation ----------------------------------------------------------------------


def test_for_project_creates_a_valid_file_that_round_trips(tmp_path: Path) -> None:
    state = TeamState.for_project(tmp_path)
    assert state.path == (tmp_path / STATE_RELATIVE_PATH).resolve()
    data = state.read()
    assert data["project_name"] == tmp_path.name
    assert data["current_feature"] is None and data["agents"] == {} and data["runs"] == []
    assert data["integration"] == {"status": "not_started", "merges": []}
    assert data["usage"]["cost_usd"] is None and data["usage"]["by_agent"] == {}

    with state.transaction() as mutable:
        mutable["tasks"].append(make_task("T1"))
    again = state.read()
    assert again["tasks"] == [make_task("T1")]
    assert again["last_updated"] >= data["last_updated"]
    text = state.path.read_text(encoding="utf-8")
    assert text == json.dumps(again, indent=2, ensure_ascii=False) + "\n"
    assert list(again)[:4] == ["schema_version", "project_name", "last_updated", "current_feature"]


def test_unusual_characters_round_trip(team: TeamState) -> None:
    message = 'line\u2028sep\u2029para\x85nel\ttab \u00e9\U0001f600 "quote" \\ back\nnew'
    team.append_update("qa", None, "info", message, {"k\u2028": ["\x00", "\u2028"]})
    saved = team.read()
    assert saved["agent_updates"][-1]["message"] == message
    assert saved["agent_updates"][-1]["details"] == {"k\u2028": ["\x00", "\u2028"]}
    assert (
        team.path.read_text(encoding="utf-8")
        == json.dumps(saved, indent=2, ensure_ascii=False) + "\n"
    )


def test_keys_are_written_in_schema_order_not_insertion_order(team: TeamState) -> None:
    with team.transaction() as data:
        task = data["tasks"][0]
        task.clear()
        task.update({"status": "pending", "dependencies": [], "task_id": "TASK-001"})
        task.update({"assigned_to": "qa", "description": "d"})
    order = list(team.read()["tasks"][0])
    assert order == ["task_id", "description", "assigned_to", "dependencies", "status"]


def test_for_project_without_create_tells_the_user_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="init") as info:
        TeamState.for_project(tmp_path, create=False)
    assert str(tmp_path / STATE_RELATIVE_PATH) in str(info.value)
    assert not (tmp_path / ".ai-agents").exists()


def test_lazy_state_is_written_by_the_first_transaction(tmp_path: Path) -> None:
    state = TeamState.for_project(tmp_path, create=False, must_exist=False, project_name="lazy")
    assert not (tmp_path / ".ai-agents").exists()
    assert state.read()["project_name"] == "lazy"
    assert not (tmp_path / ".ai-agents").exists()
    state.update(lambda data: state_ops.append_update_to(data, "manager", None, "info", "hi"))
    saved = state.read()
    assert saved["project_name"] == "lazy" and saved["agent_updates"][0]["message"] == "hi"


def test_validation_error_names_file_and_json_path(tmp_path: Path) -> None:
    data = new_state("demo")
    data["tasks"] = [make_task("A"), make_task("B"), make_task("C", status="bogus")]
    with pytest.raises(StateError) as info:
        validate_state(data, tmp_path / "state.json")
    message = str(info.value)
    assert str(tmp_path / "state.json") in message
    assert "$.tasks[2].status" in message and "'bogus' is not one of" in message


def test_first_error_is_reported_in_document_order() -> None:
    data = new_state("demo")
    data["tasks"] = [make_task("A", progress=500), make_task("B", status="nope")]
    data["last_updated"] = "yesterday"
    for _ in range(3):
        with pytest.raises(StateError, match=r"\$\.last_updated: 'yesterday' is not a 'date-time'"):
            validate_state(data)
    data["last_updated"] = utc_now()
    with pytest.raises(StateError, match=r"\$\.tasks\[0\]\.progress"):
        validate_state(data)


def test_usage_counts_reject_misspelled_keys() -> None:
    data = new_state("demo")
    data["usage"]["by_agent"]["qa"] = {"api_calls": 1, "input_tokens": 1, "output_tokens": 1}
    validate_state(data)
    data["usage"]["by_agent"]["qa"]["input_token"] = 5
    with pytest.raises(StateError, match=r"\$\.usage\.by_agent\.qa: Additional properties"):
        validate_state(data)


def test_invalid_mutation_leaves_the_file_byte_identical(team: TeamState) -> None:
    before = team.path.read_bytes()
    with pytest.raises(StateError) as info, team.transaction() as data:
        data["tasks"][0]["status"] = "almost-done"
    message = str(info.value)
    assert str(team.path) in message and "$.tasks[0].status" in message
    assert team.path.read_bytes() == before
    assert leftovers(team.path.parent) == []


def test_non_json_values_are_refused_before_writing(team: TeamState) -> None:
    before = team.path.read_bytes()
    with pytest.raises(StateError, match="Nothing was written"):
        team.append_update("qa", None, "info", "nan", {"score": float("nan")})
    with pytest.raises(StateError, match="Nothing was written"):
        team.append_update("qa", None, "info", "path", {"where": Path("/tmp")})
    assert team.path.read_bytes() == before


def test_exception_inside_transaction_writes_nothing(team: TeamState) -> None:
    before = team.path.read_bytes()
    mtime = team.path.stat().st_mtime_ns

    class Boom(Exception):
        pass

    with pytest.raises(Boom), team.transaction() as data:
        data["tasks"].clear()
        raise Boom
    assert team.path.read_bytes() == before
    assert team.path.stat().st_mtime_ns == mtime
    assert len(team.read()["tasks"]) == 2


def test_corrupt_json_is_refused_backed_up_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "team-communication.json"
    broken = b'{"schema_version": 1, "tasks": [\n'
    path.write_bytes(broken)
    state = TeamState(path)
    with pytest.raises(StateError) as info:
        state.read()
    message = str(info.value)
    backups = sorted(tmp_path.glob("team-communication.json.corrupt-*"))
    assert len(backups) == 1 and str(backups[0]) in message
    assert str(path) in message and "not valid JSON" in message
    assert backups[0].read_bytes() == broken
    assert path.read_bytes() == broken

    with pytest.raises(StateError), state.transaction() as data:
        data["tasks"] = []
    assert path.read_bytes() == broken
    assert len(list(tmp_path.glob("team-communication.json.corrupt-*"))) == 1


def test_schema_invalid_file_is_refused_with_path_and_backup(tmp_path: Path) -> None:
    data = new_state("demo")
    data["tasks"] = [make_task("A", status="finished-ish")]
    path = tmp_path / "state.json"
    original = (json.dumps(data, indent=2) + "\n").encode()
    path.write_bytes(original)
    with pytest.raises(StateError) as info:
        TeamState(path).read()
    message = str(info.value)
    assert "$.tasks[0].status" in message and str(path) in message
    backup = next(tmp_path.glob("state.json.corrupt-*"))
    assert str(backup) in message and backup.read_bytes() == original
    assert path.read_bytes() == original


def test_the_state_module_exports_only_its_own_class() -> None:
    """No re-export shims: schema, migrations and redaction are imported from their modules."""
    from agent_team import state, state_migrations

    assert state.__all__ == ["TeamState"]
    assert not hasattr(state, "migrate_state") and not hasattr(state, "validate_state")
    assert state_migrations.SUPPORTED_VERSIONS == (0, 1)


@pytest.mark.parametrize("version", [99, 2, "1", -1, True])
def test_unknown_schema_version_is_refused_with_supported_list(tmp_path: Path, version) -> None:
    path = tmp_path / "state.json"
    data = new_state("demo")
    data["schema_version"] = version
    path.write_text(json.dumps(data), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(StateError) as info:
        TeamState(path).read()
    assert f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}" in str(info.value)
    assert "supported: 0, 1" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before


# --- migrations --------------------------------------------------------------------------------

LEGACY = {
    "project_name": "my-app",
    "last_updated": "2025-11-21T10:30:00",
    "current_feature": "JWT-based user authentication",
    "tasks": [
        {
            "task_id": "TASK-001",
            "description": "Implement JWT service",
            "assigned_to": "Backend Dev",
            "status": "done",
            "progress": 150,
            "priority": "critical",
            "completed_items": ["Created src/services/jwt.ts"],
            "files_modified": ["src/services/jwt.ts (new)"],
            "test_results": "24 passed, 0 failed",
        },
        {
            "task_id": "TASK 002",
            "title": "Login UI",
            "assigned_to": "frontend-dev",
            "status": "waiting-for-review",
            "depends_on": ["TASK-001", "TASK-999"],
        },
        {"description": "no id at all", "status": "in-progress"},
    ],
    "agent_updates": [
        {
            "timestamp": "2025-11-21T10:30:00Z",
            "agent_id": "backend-dev",
            "task_id": "TASK-001",
            "status": "in_progress",
            "progress": 60,
            "message": "JWT service implemented",
            "blockers": [],
        },
        "free text update",
    ],
    "decisions": [
        {"decision": "Use JWT with 1-hour expiration", "affected_agents": ["backend-dev"]},
        "Use PostgreSQL",
        {"rationale": "no decision text, dropped"},
    ],
    "integration_requests": [{"from": "frontend-dev", "request": "merge my branch"}],
}


def test_legacy_file_is_migrated_liberally() -> None:
    data = migrate_state(json.loads(json.dumps(LEGACY)))
    validate_state(data)
    assert data["schema_version"] == 1 and data["project_name"] == "my-app"
    assert data["last_updated"] == "2025-11-21T10:30:00.000Z"
    feature = data["current_feature"]
    assert feature["title"] == "JWT-based user authentication" and feature["base_branch"] == "main"
    first, second, third = data["tasks"]
    assert (first["status"], first["progress"], first["assigned_to"]) == (
        "completed",
        100,
        "backend-dev",
    )
    assert first["priority"] == "high"
    assert first["result"]["files_modified"] == []
    assert "not verified" in first["result"]["notes"] and "24 passed" in first["result"]["notes"]
    assert second["task_id"] == "TASK-002" and second["description"] == "Login UI"
    assert second["status"] == "pending" and second["dependencies"] == ["TASK-001"]
    assert third["status"] == "in_progress" and third["task_id"] == "TASK-003"
    update, text, leftover = data["agent_updates"]
    assert update["agent"] == "backend-dev" and update["details"] == {
        "progress": 60,
        "blockers": [],
    }
    assert text["message"] == "free text update" and text["agent"] == "unknown"
    assert leftover["agent"] == "migration"
    assert leftover["details"]["integration_requests"] == LEGACY["integration_requests"]
    assert [d["decision"] for d in data["decisions"]] == [
        "Use JWT with 1-hour expiration",
        "Use PostgreSQL",
    ]


def test_manager_instructions_template_is_migrated() -> None:
    legacy = {
        "manager_instructions": {
            "project": "AppFlowy sync",
            "current_focus": "Sync docs",
            "active_tasks": [{"task_id": "TASK-1", "assigned_to": "python-dev"}],
        },
        "agent_updates": [],
        "integration_requests": [],
    }
    data = migrate_state(legacy)
    validate_state(data)
    assert data["project_name"] == "AppFlowy sync"
    assert data["current_feature"]["title"] == "Sync docs"
    assert data["tasks"][0]["assigned_to"] == "python-dev"


def test_team_state_reads_legacy_and_migrates_on_first_save(tmp_path: Path) -> None:
    path = tmp_path / STATE_RELATIVE_PATH
    path.parent.mkdir(parents=True)
    original = json.dumps({"agent_updates": [], "tasks": []}, indent=2).encode()
    path.write_bytes(original)
    state = TeamState.for_project(tmp_path, create=False)
    data = state.read()
    assert data["schema_version"] == 1 and data["project_name"] == tmp_path.name
    assert path.read_bytes() == original
    state.append_update("manager", None, "info", "hello")
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["schema_version"] == 1 and saved["agent_updates"][-1]["message"] == "hello"
    backup = next(path.parent.glob("team-communication.json.v0-*"))
    assert backup.read_bytes() == original


def test_empty_legacy_object_becomes_a_fresh_state() -> None:
    validate_state(migrate_state({}))


def test_legacy_keeps_version_one_shaped_parts_and_tasks_keyed_by_id() -> None:
    usage = new_state("x")["usage"] | {"api_calls": 4, "input_tokens": 10}
    legacy = {
        "usage": usage,
        "integration": {"status": "weird"},
        "tasks": {"T-1": {"description": "a"}, "T-2": {"description": "b", "depends_on": ["T-1"]}},
        "decisions": {"not": "a list"},
    }
    data = migrate_state(legacy)
    validate_state(data)
    assert data["usage"] == usage
    assert data["integration"] == {"status": "not_started", "merges": []}
    assert [t["task_id"] for t in data["tasks"]] == ["T-1", "T-2"]
    assert data["tasks"][1]["dependencies"] == ["T-1"]
    assert data["agent_updates"][-1]["details"] == {
        "integration": {"status": "weird"},
        "decisions": {"not": "a list"},
    }


# --- transactions and helpers -------------------------------------------------------------------


def test_update_returns_the_function_result(team: TeamState) -> None:
    count = team.update(lambda data: len(data["tasks"]))
    assert count == 2


def test_nested_transaction_joins_the_outer_one(team: TeamState) -> None:
    with team.transaction() as data:
        team.set_task("TASK-001", status="in_progress")
        team.append_update("backend-dev", "TASK-001", "started", "go")
        assert data["tasks"][0]["status"] == "in_progress"
        assert team.read()["tasks"][0]["status"] == "pending"
    saved = team.read()
    assert saved["tasks"][0]["status"] == "in_progress"
    assert saved["agent_updates"][-1]["message"] == "go"


def test_static_helpers_compose_in_one_transaction(team: TeamState) -> None:
    def apply(data: dict) -> None:
        state_ops.set_task_in(data, "TASK-001", status="completed", progress=100)
        state_ops.set_agent_in(data, "backend-dev", status="done")
        state_ops.add_decisions_to(data, ["Ship it"], made_by="manager")
        state_ops.add_usage_to(data, "backend-dev", {"input_tokens": 7}, cost_usd=None)
        state_ops.append_update_to(data, "backend-dev", "TASK-001", "completed", "done")

    before = team.read()
    team.update(apply)
    after = team.read()
    assert after["tasks"][0]["status"] == "completed"
    assert after["agents"]["backend-dev"]["status"] == "done"
    assert after["decisions"][-1]["decision"] == "Ship it"
    assert after["usage"]["input_tokens"] == 7 and after["usage"]["cost_known"] is False
    assert len(after["agent_updates"]) == len(before["agent_updates"]) + 1


def test_set_task_and_unknown_task(team: TeamState) -> None:
    task = team.set_task("TASK-002", status="in_progress", attempts=1, started_at=utc_now())
    assert task["status"] == "in_progress" and team.read()["tasks"][1]["attempts"] == 1
    with pytest.raises(UnknownTaskError, match="TASK-404") as info:
        team.set_task("TASK-404", status="failed")
    assert isinstance(info.value, KeyError) and isinstance(info.value, StateError)
    with pytest.raises(StateError, match="Unknown task field"):
        team.set_task("TASK-001", colour="red")


def test_set_agent_creates_and_updates(team: TeamState) -> None:
    team.set_agent("qa-tester", status="working", current_task="TASK-002", turn=3)
    agent = team.set_agent("qa-tester", turn=4)
    assert agent["status"] == "working" and agent["turn"] == 4 and agent["updated_at"]
    with pytest.raises(StateError, match=r"\$\.agents"):
        team.set_agent("Not A Role", status="idle")


def test_add_decisions(team: TeamState) -> None:
    team.add_decisions(
        ["Use JWT", {"decision": "Use Postgres", "rationale": "team knows it", "extra": 1}],
        made_by="manager",
    )
    decisions = team.read()["decisions"]
    assert [d["decision"] for d in decisions] == ["Use JWT", "Use Postgres"]
    assert all(d["made_by"] == "manager" and d["timestamp"] for d in decisions)


def test_add_usage_sums_and_never_prices_unknown_as_zero(team: TeamState) -> None:
    counts = {"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 5}
    team.add_usage("backend-dev", counts, cost_usd=0.25, task_id="TASK-001")
    team.add_usage("backend-dev", counts, cost_usd=0.5)
    usage = team.read()["usage"]
    assert usage["api_calls"] == 2 and usage["input_tokens"] == 200
    assert usage["cache_read_tokens"] == 10 and usage["cache_write_tokens"] == 0
    assert usage["cost_usd"] == pytest.approx(0.75) and usage["cost_known"] is True
    assert usage["by_agent"]["backend-dev"]["output_tokens"] == 40
    assert team.read()["tasks"][0]["usage"]["cost_usd"] == pytest.approx(0.25)

    team.add_usage("qa-tester", counts, api_calls=3, cost_usd=None)
    team.add_usage("qa-tester", counts, cost_usd=1.0)
    team.add_usage("backend-dev", counts, cost_usd=1.0)
    usage = team.read()["usage"]
    assert usage["api_calls"] == 7
    assert usage["cost_usd"] is None and usage["cost_known"] is False
    assert usage["by_agent"]["qa-tester"]["cost_usd"] is None
    assert usage["by_agent"]["backend-dev"]["cost_usd"] == pytest.approx(1.75)

    team.add_usage("qa-tester", {"output_tokens": 1}, 2, None)
    assert team.read()["usage"]["api_calls"] == 9

    with pytest.raises(StateError, match="Unknown usage key"):
        team.add_usage("qa-tester", {"input": 1})
    with pytest.raises(StateError, match="non-negative"):
        team.add_usage("qa-tester", {"input_tokens": -1})


# --- atomic saves ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["replace", "fsync", "write"])
def test_disk_full_keeps_the_old_file_and_no_temp_files(
    team: TeamState, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    before = team.path.read_bytes()

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if target == "write":
        real_fdopen = os.fdopen

        class FullFile:
            def __init__(self, fh) -> None:  # type: ignore[no-untyped-def]
                self._fh = fh

            def __enter__(self) -> FullFile:
                return self

            def __exit__(self, *exc: object) -> None:
                self._fh.close()

            def fileno(self) -> int:
                return self._fh.fileno()

            def write(self, data: bytes) -> int:
                self._fh.write(data[:10])
                self._fh.flush()
                no_space()
                return 0

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: FullFile(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(os, target, no_space)
    with pytest.raises(StateError) as info:
        team.append_update("qa", None, "info", "will not fit")
    monkeypatch.undo()
    assert "No space left on device" in str(info.value) and str(team.path) in str(info.value)
    assert team.path.read_bytes() == before
    assert leftovers(team.path.parent) == []
    team.append_update("qa", None, "info", "fits now")
    assert team.read()["agent_updates"][-1]["message"] == "fits now"


def test_save_keeps_the_file_mode(team: TeamState) -> None:
    os.chmod(team.path, 0o640)
    team.append_update("qa", None, "info", "mode")
    assert team.path.stat().st_mode & 0o777 == 0o640


def test_two_hundred_tasks_save_in_milliseconds(tmp_path: Path) -> None:
    state = TeamState.for_project(tmp_path)
    with state.transaction() as data:
        data["tasks"] = [
            make_task(f"TASK-{n:03d}", deliverables=["a", "b"], progress=50, started_at=utc_now())
            for n in range(200)
        ]
    timings = []
    for n in range(10):
        start = time.perf_counter()
        state.set_task(f"TASK-{n:03d}", status="in_progress")
        timings.append(time.perf_counter() - start)
    assert sorted(timings)[5] < 0.05, timings


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_never_reach_the_state_file(
    team: TeamState, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = 'sk-ant-api03-FAKE"quoted\\value-0123456789'
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    entry = team.append_update(
        "backend-dev",
        "TASK-001",
        "failed",
        f"401 from the API with key {secret}",
        {"request": {"headers": {"x-api-key": secret}}, "tries": [secret, 2]},
    )
    assert secret not in json.dumps(entry)
    with team.transaction() as data:
        data["tasks"][0]["error"] = f"crashed; env had {secret}"
        data["integration"]["summary"] = f"merged with {secret}"
        data["decisions"].append(
            {"decision": f"rotate {secret}", "made_by": "manager", "timestamp": utc_now()}
        )
    text = team.path.read_text(encoding="utf-8")
    assert secret not in text and json.dumps(secret)[1:-1] not in text
    assert "sk-ant-api03-FAKE" not in text
    assert text.count("[REDACTED:ANTHROPIC_API_KEY]") == 6
    saved = team.read()
    assert saved["agent_updates"][-1]["details"]["request"]["headers"]["x-api-key"] == (
        "[REDACTED:ANTHROPIC_API_KEY]"
    )


def test_a_secret_set_later_is_masked_on_the_next_save(
    team: TeamState, monkeypatch: pytest.MonkeyPatch
) -> None:
    team.append_update("qa", None, "info", "value abcdefgh-123456 seen")
    assert "abcdefgh-123456" in team.path.read_text(encoding="utf-8")
    monkeypatch.setenv("DEPLOY_PASSWORD", "abcdefgh-123456")
    team.set_agent("qa", status="idle")
    text = team.path.read_text(encoding="utf-8")
    assert "abcdefgh-123456" not in text and "[REDACTED:DEPLOY_PASSWORD]" in text


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.slow
def test_threads_and_processes_never_lose_an_update(tmp_path: Path) -> None:
    state = TeamState.for_project(tmp_path, project_name="race")
    per_worker, thread_names = 50, [f"thread-{n}" for n in range(8)]
    process_names = [f"process-{n}" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(state.path), name, str(per_worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in process_names
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(len(thread_names) + 1)

    def work(name: str) -> None:
        own = TeamState(state.path)
        start.wait()
        try:
            for index in range(per_worker):
                own.append_update(name, None, "progress", f"{name}-{index}")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in thread_names]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for thread in threads:
            thread.start()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        start.wait()
        for thread in threads:
            thread.join(timeout=60)
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert not errors
    assert [proc.returncode for proc in procs] == [0] * len(procs), outputs

    data = json.loads(state.path.read_text(encoding="utf-8"))
    validate_state(data, state.path)
    messages = Counter(update["message"] for update in data["agent_updates"])
    expected = {f"{name}-{i}" for name in thread_names + process_names for i in range(per_worker)}
    assert set(messages) == expected
    assert set(messages.values()) == {1}
    assert len(data["agent_updates"]) == 600
    assert leftovers(state.path.parent) == []
    assert data["schema_version"] == SCHEMA_VERSION
