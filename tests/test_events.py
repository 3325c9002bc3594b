"""The JSON-lines event log: envelope, redaction, per-line flushing, listeners, threads."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_team.events import EVENT_KINDS, EventLog, log_path, read_events
from agent_team.models import Usage

KEY = "sk-ant-api03-" + "Qq7" * 12


def test_each_event_is_one_flushed_line_with_the_envelope(tmp_path: Path) -> None:
    path = log_path(tmp_path, "20250101-000000-abc123")
    assert path == tmp_path / ".ai-agents" / "logs" / "20250101-000000-abc123.jsonl"
    log = EventLog(path, run_id="run-1")
    log.emit("run_started", feature="auth")
    log.emit("task_status", task_id="TASK-001", status="in_progress", error=None)

    lines = path.read_text(encoding="utf-8").splitlines()  # readable before close
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[:4] == ["ts", "run_id", "seq", "kind"]
    assert first["run_id"] == "run-1" and first["seq"] == 1 and first["kind"] == "run_started"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert json.loads(lines[1])["error"] is None
    log.close()
    assert [e["seq"] for e in read_events(path)] == [1, 2]


def test_values_are_redacted_and_made_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    @dataclass
    class Point:
        x: int

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    path = tmp_path / "run.jsonl"
    with EventLog(path, run_id="r") as log:
        event = log.emit(
            "model_call", role="dev", usage=Usage(1, 2, 3, 4), where=tmp_path, point=Point(1),
            tags={"b"}, error=RuntimeError(f"bad key {KEY}"), nested={"k": [f"x{KEY}"]},
        )
    text = path.read_text(encoding="utf-8")
    assert KEY not in text
    (written,) = read_events(path)
    assert written == event
    assert written["usage"] == {"input_tokens": 1, "output_tokens": 2,
                                "cache_read_tokens": 3, "cache_write_tokens": 4}
    assert written["where"] == str(tmp_path) and written["point"] == {"x": 1}
    assert written["tags"] == ["b"]
    assert written["error"] == "RuntimeError: bad key [REDACTED:ANTHROPIC_API_KEY]"
    assert written["nested"] == {"k": ["x[REDACTED:ANTHROPIC_API_KEY]"]}


def test_envelope_fields_cannot_be_overridden() -> None:
    log = EventLog(None, run_id="r")
    with pytest.raises(ValueError, match="seq"):
        log.emit("log", seq=5)


def test_listeners_get_every_event_and_a_raising_one_breaks_nothing() -> None:
    seen: list[dict[str, Any]] = []

    def broken(event: dict[str, Any]) -> None:
        raise RuntimeError("display bug")

    log = EventLog(None, run_id="r")
    log.add_listener(broken)
    log.add_listener(seen.append)
    log.emit("log", message="one")
    log.emit("log", message="two")

    assert [e["message"] for e in seen] == ["one", "two"]
    assert log.listener_errors == 2
    assert "display bug" in log.errors[0] and "broken" in log.errors[0]
    log.remove_listener(broken)
    log.emit("log", message="three")
    assert log.listener_errors == 2 and len(seen) == 3


def test_emit_after_close_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    seen: list[dict[str, Any]] = []
    log = EventLog(path, run_id="r")
    log.add_listener(seen.append)
    log.emit("run_finished", status="completed", exit_code=0)
    log.close()
    log.close()
    assert log.emit("log", message="late") is None
    assert len(read_events(path)) == 1 and len(seen) == 1


def test_a_failed_write_is_counted_not_raised(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "run.jsonl", run_id="r")
    assert log._handle is not None
    log._handle.close()  # as if the disk went away under the run
    seen: list[dict[str, Any]] = []
    log.add_listener(seen.append)
    log.emit("log", message="still delivered")
    assert log.write_errors == 1 and len(seen) == 1


def test_threads_get_unique_ordered_sequence_numbers(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    delivered: list[int] = []
    log = EventLog(path, run_id="r")
    log.add_listener(lambda event: delivered.append(event["seq"]))

    def work(worker: int) -> None:
        for n in range(100):
            log.emit("tool_call", role=f"dev-{worker}", turn=n, tool="read_file" * 20)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()

    events = read_events(path)
    assert [e["seq"] for e in events] == list(range(1, 801)) == delivered
    for worker in range(8):
        turns = [e["turn"] for e in events if e["role"] == f"dev-{worker}"]
        assert turns == list(range(100))


def test_read_events_skips_a_torn_last_line_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventLog(path, run_id="r") as log:
        log.emit("log", message="a")
        log.emit("merge", task_id="T-1", status="merged", conflicts=[])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"ts": "2025-01-01T00:00:00Z", "kind": "lo')  # killed mid-line
    assert [e["kind"] for e in read_events(path)] == ["log", "merge"]
    assert [e["kind"] for e in read_events(path, kinds={"merge"})] == ["merge"]

    path.write_text('{"kind": "log"}\nnot json\n{"kind": "log"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":2:"):
        read_events(path)


def test_appending_to_an_existing_log_keeps_earlier_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with EventLog(path, run_id="r") as log:
        log.emit("log", message="first process")
    with EventLog(path, run_id="r") as log:
        log.emit("log", message="second process")
    assert [e["message"] for e in read_events(path)] == ["first process", "second process"]


def test_every_documented_kind_has_a_meaning() -> None:
    kinds = [kind for kind, _ in EVENT_KINDS]
    assert len(kinds) == len(set(kinds))
    assert {"run_started", "plan_requested", "plan_rejected", "plan_accepted", "task_status",
            "model_call", "tool_call", "retry", "commit", "merge", "test_run", "budget_stop",
            "stuck", "log", "run_finished"} == set(kinds)
    assert all(meaning.endswith(".") for _, meaning in EVENT_KINDS)
