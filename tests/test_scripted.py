"""The scripted model (queues, threads, errors, delays, session files) and provider choice."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import ConfigError, ModelAPIError, ScriptExhausted
from agent_team.models import (
    END_TURN,
    TOOL_USE,
    Message,
    ToolSpec,
    Usage,
    create_model,
    detect_provider,
)
from agent_team.scripted import SESSION_FORMAT, SESSION_VERSION, ScriptedModel

from tests.orchestration_helpers import keyed

HELLO = [Message.user("hello")]


def reply_text(model: ScriptedModel) -> str:
    return model.complete("system", HELLO).text


def test_role_task_queue_before_role_before_wildcard() -> None:
    model = ScriptedModel(
        {
            "backend-dev:TASK-001": [{"text": "specific"}],
            "backend-dev": [{"text": "role"}],
            "*": [{"text": "any"}],
        }
    )
    assert reply_text(keyed(model, "backend-dev", "TASK-001")) == "specific"
    assert reply_text(keyed(model, "backend-dev", "TASK-002")) == "role"
    assert reply_text(keyed(model, "qa-tester", "TASK-003")) == "any"
    assert [c.key for c in model.calls] == ["backend-dev:TASK-001", "backend-dev", "*"]


def test_an_exhausted_specific_queue_does_not_fall_back() -> None:
    model = ScriptedModel({"manager:plan": [{"text": "plan"}], "manager": [{"text": "other"}]})
    bound = keyed(model, "manager", "plan")
    assert reply_text(bound) == "plan"
    with pytest.raises(ScriptExhausted) as info:
        bound.complete("s", HELLO)
    message = str(info.value)
    assert "no turn 2 for 'manager:plan'" in message
    assert "(it holds 1)" in message
    assert "re-record the session or add turns" in message
    assert model.remaining() == {"manager": 1}


def test_unbound_model_uses_the_wildcard_queue() -> None:
    model = ScriptedModel({"*": [{"text": "a"}, {"text": "b"}]})
    assert [reply_text(model), reply_text(model)] == ["a", "b"]


def test_no_queue_names_what_was_looked_for() -> None:
    model = ScriptedModel({"manager": [{"text": "x"}], "qa-tester": []})
    with pytest.raises(ScriptExhausted) as info:
        keyed(model, "backend-dev", "TASK-9").complete("s", HELLO)
    message = str(info.value)
    assert "role 'backend-dev' and task 'TASK-9'" in message
    assert "'backend-dev:TASK-9', 'backend-dev', '*'" in message
    assert "Available: manager, qa-tester." in message


def test_no_queue_in_an_empty_session() -> None:
    with pytest.raises(ScriptExhausted, match="Available: none"):
        ScriptedModel({}).complete("s", HELLO)


def test_list_of_turns_constructor() -> None:
    model = ScriptedModel([{"text": "one"}, {"text": "two"}], model="replay-1")
    bound = keyed(model, "anyone", "T1")
    first = bound.complete("s", HELLO)
    assert first.text == "one"
    assert first.model == "replay-1"
    assert reply_text(keyed(model, "someone-else")) == "two"
    model.assert_complete()
    assert model.provider == "scripted"


def test_a_string_is_not_a_list_of_turns() -> None:
    with pytest.raises(TypeError):
        ScriptedModel("text")  # type: ignore[arg-type]


def test_reply_fields() -> None:
    model = ScriptedModel(
        [
            {
                "tool_calls": [
                    {"name": "write_file", "arguments": {"path": "a.py", "content": "x"}},
                    {"id": "mine", "name": "finish_task"},
                ],
                "usage": {"input_tokens": 120, "output_tokens": 30, "cache_read_tokens": 5},
            },
            {"text": {"tasks": []}},
            {"text": "cut", "stop_reason": "max_tokens"},
        ]
    )
    first = model.complete("s", HELLO)
    assert first.stop_reason == TOOL_USE
    assert [c.name for c in first.tool_calls] == ["write_file", "finish_task"]
    assert first.tool_calls[0].arguments == {"path": "a.py", "content": "x"}
    assert first.tool_calls[0].id == "call_1_0"
    assert first.tool_calls[1].id == "mine"
    assert first.tool_calls[1].arguments == {}
    assert first.usage == Usage(120, 30, 5, 0)
    second = model.complete("s", HELLO)
    assert json.loads(second.text) == {"tasks": []}
    assert second.stop_reason == END_TURN
    assert second.usage == Usage()
    assert model.complete("s", HELLO).stop_reason == "max_tokens"


def test_tool_call_ids_are_unique_across_calls() -> None:
    turn = {"tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]}
    model = ScriptedModel([turn, turn])
    ids = {model.complete("s", HELLO).tool_calls[0].id for _ in range(2)}
    assert len(ids) == 2


def test_returned_turns_do_not_alias_the_script() -> None:
    turns: list[dict[str, Any]] = [{"text": "a"}]
    model = ScriptedModel(turns)
    model.complete("s", HELLO)
    assert turns == [{"text": "a"}]


def test_calls_are_recorded() -> None:
    schema = {"type": "object"}
    model = ScriptedModel({"qa-tester:T3": [{"text": "done"}]})
    tool = ToolSpec("run_command", "Run a command", {"type": "object"})
    messages = [Message.user("test it"), Message.assistant("ok")]
    keyed(model, "qa-tester", "T3").complete(
        "You are QA.", messages, tools=[tool], output_schema=schema
    )
    (call,) = model.calls
    assert call.key == "qa-tester:T3"
    assert (call.role, call.task_id) == ("qa-tester", "T3")
    assert call.system == "You are QA."
    assert call.messages == tuple(messages)
    assert call.tool_names == ("run_command",)
    assert call.output_schema == schema
    assert call.started <= call.finished


def test_calls_is_a_snapshot() -> None:
    model = ScriptedModel([{"text": "a"}, {"text": "b"}])
    model.complete("s", HELLO)
    snapshot = model.calls
    model.complete("s", HELLO)
    assert len(snapshot) == 1
    assert len(model.calls) == 2


def test_assert_complete_lists_unused_turns() -> None:
    model = ScriptedModel({"manager": [{"text": "a"}, {"text": "b"}], "qa-tester": [{"text": "c"}]})
    keyed(model, "manager").complete("s", HELLO)
    with pytest.raises(AssertionError) as info:
        model.assert_complete()
    assert str(info.value) == "scripted turns left unused: manager: 1, qa-tester: 1"
    assert model.remaining() == {"manager": 1, "qa-tester": 1}
    keyed(model, "manager").complete("s", HELLO)
    keyed(model, "qa-tester").complete("s", HELLO)
    model.assert_complete()
    assert model.remaining() == {}


def test_error_turn_raises_model_api_error_with_status() -> None:
    model = ScriptedModel(
        [
            {"error": {"status": 529, "message": "overloaded", "retryable": True}},
            {"error": {"status": 400, "message": "bad request"}},
            {"error": None},
            {"text": "recovered"},
        ]
    )
    with pytest.raises(ModelAPIError, match="overloaded") as info:
        model.complete("s", HELLO)
    assert info.value.status == 529
    assert info.value.retryable is True
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", HELLO)
    assert (info.value.status, info.value.retryable) == (400, False)
    with pytest.raises(ModelAPIError, match="scripted error") as info:
        model.complete("s", HELLO)
    assert info.value.status is None
    assert reply_text(model) == "recovered"
    assert len(model.calls) == 4, "failed requests are recorded too"


def test_delay_is_honoured() -> None:
    model = ScriptedModel([{"text": "slow", "delay": 0.2}, {"text": "fast"}])
    model.complete("s", HELLO)
    model.complete("s", HELLO)
    slow, fast = model.calls
    assert slow.finished - slow.started >= 0.2
    assert fast.finished - fast.started < slow.finished - slow.started


def test_delays_overlap_between_threads() -> None:
    script = {f"worker:T{i}": [{"text": f"T{i}", "delay": 0.3}] for i in range(4)}
    model = ScriptedModel(script)
    threads = [
        threading.Thread(target=keyed(model, "worker", f"T{i}").complete, args=("s", HELLO))
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = model.calls
    assert len(calls) == 4
    latest_start = max(c.started for c in calls)
    earliest_finish = min(c.finished for c in calls)
    assert latest_start < earliest_finish, "one delayed call blocked the others"


def test_queues_are_independent_under_threads() -> None:
    per_task = 25
    tasks = [f"TASK-{i:03d}" for i in range(8)]
    script = {
        f"backend-dev:{task}": [{"text": f"{task}#{n}"} for n in range(per_task)] for task in tasks
    }
    model = ScriptedModel(script)
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(len(tasks))

    def agent(task: str) -> None:
        bound = keyed(model, "backend-dev", task)
        barrier.wait()
        results[task] = [bound.complete("s", HELLO).text for _ in range(per_task)]

    threads = [threading.Thread(target=agent, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for task in tasks:
        assert results[task] == [f"{task}#{n}" for n in range(per_task)]
    assert len(model.calls) == per_task * len(tasks)
    model.assert_complete()


def test_shared_queue_hands_each_turn_out_once_under_threads() -> None:
    turns = [{"text": str(n)} for n in range(200)]
    model = ScriptedModel({"*": turns})
    got: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        bound = keyed(model, "w")
        for _ in range(50):
            text = bound.complete("s", HELLO).text
            with lock:
                got.append(text)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got, key=int) == [str(n) for n in range(200)]


# -- session files ---------------------------------------------------------------------------


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_from_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "session.json",
        {
            "format": SESSION_FORMAT,
            "version": SESSION_VERSION,
            "model": "recorded-model",
            "agents": {"manager:plan": [{"text": "{}"}], "*": [{"text": "x"}]},
        },
    )
    model = ScriptedModel.from_file(path)
    assert model.model == "recorded-model"
    assert reply_text(keyed(model, "manager", "plan")) == "{}"
    assert model.remaining() == {"*": 1}


def test_from_file_without_format_and_version(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"agents": {"*": [{"text": "x"}]}})
    assert reply_text(ScriptedModel.from_file(str(path))) == "x"


def test_shipped_example_sessions_load() -> None:
    sessions = Path(__file__).resolve().parents[1] / "examples" / "sessions"
    files = sorted(sessions.glob("*.json"))
    assert files
    for path in files:
        assert ScriptedModel.from_file(path).remaining()


def test_from_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError) as info:
        ScriptedModel.from_file(missing)
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)
    assert "--session" in str(info.value)


def test_from_file_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", '{"agents": {"*": [}')
    with pytest.raises(ConfigError, match=r"could not be read as JSON: .*line 1 column 19"):
        ScriptedModel.from_file(path)


def test_from_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b'{"agents": {"*": [{"text": "\xff"}]}}')
    with pytest.raises(ConfigError, match="could not be read as JSON"):
        ScriptedModel.from_file(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "is not a session file"),
        ({"turns": []}, "is not a session file"),
        ({"agents": []}, "is not a session file"),
        ({"agents": {"*": {"text": "x"}}}, r"agents\['\*'\] must be a list of turn objects"),
        ({"agents": {"manager": ["text"]}}, r"agents\['manager'\] must be a list of turn objects"),
        ({"agents": {"*": [{"tool_calls": [{"arguments": {}}]}]}},
         r"agents\['\*'\]\[0\]: tool_calls\[0\] needs a \"name\" string"),
        ({"agents": {"*": [{"text": "a"}, {"tool_calls": {"name": "x"}}]}},
         r"agents\['\*'\]\[1\]: tool_calls must be a list"),
        ({"agents": {"*": [{"tool_calls": [{"name": "x", "arguments": "a=1"}]}]}},
         r"arguments must be an object"),
        ({"agents": {"*": [{"error": "boom"}]}}, "error must be an object"),
        ({"agents": {"*": [{"usage": 5}]}}, "usage must be an object"),
        ({"agents": {"*": [{"delay": -1}]}}, "delay must be a non-negative number"),
        ({"agents": {"*": [{"delay": "1s"}]}}, "delay must be a non-negative number"),
    ],
)
def test_from_file_wrong_shape(tmp_path: Path, data: Any, expected: str) -> None:
    path = write(tmp_path / "s.json", data)
    with pytest.raises(ConfigError, match=expected) as info:
        ScriptedModel.from_file(path)
    assert str(path) in str(info.value)


def test_from_file_wrong_version(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"version": 2, "agents": {}})
    with pytest.raises(ConfigError, match=r"session version 2 is not supported \(supported: 1\)"):
        ScriptedModel.from_file(path)


def test_from_file_wrong_format(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"format": "har", "agents": {}})
    with pytest.raises(ConfigError, match="unknown format 'har'"):
        ScriptedModel.from_file(path)


# -- provider selection (models.py) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"ANTHROPIC_API_KEY": "a"}, "anthropic"),
        ({"OPENAI_API_KEY": "o"}, "openai"),
        ({"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o"}, "anthropic"),
        ({"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "o"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1", "ANTHROPIC_API_KEY": "a"}, "anthropic"),
        ({"GEMINI_API_KEY": "g"}, None),
    ],
)
def test_detect_provider_order(environ: dict[str, str], expected: str | None) -> None:
    assert detect_provider(environ) == expected


def test_detect_provider_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_provider() is None
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    assert detect_provider() == "openai"
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    assert detect_provider() == "anthropic"


def test_create_model_unknown_provider() -> None:
    with pytest.raises(ConfigError) as info:
        create_model("gemini")
    assert "Unknown API provider 'gemini'" in str(info.value)
    assert "anthropic, openai, scripted" in str(info.value)


def test_create_model_scripted_needs_a_session() -> None:
    with pytest.raises(ConfigError, match="--session FILE"):
        create_model("scripted")


def test_create_model_scripted_from_a_session(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", {"agents": {"*": [{"text": "hi"}]}})
    model = create_model("scripted", session=path)
    assert isinstance(model, ScriptedModel)
    assert reply_text(model) == "hi"


def test_create_model_scripted_with_a_missing_session(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_model("scripted", session=tmp_path / "missing.json")
