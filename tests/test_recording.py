"""Recording real provider exchanges and replaying them with ScriptedModel."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from agent_team.anthropic_model import AnthropicModel
from agent_team.errors import ModelAPIError
from agent_team.models import ChatModel, Message, Reply, ToolSpec
from agent_team.openai_model import OpenAIModel
from agent_team.recording import (
    LAST_MESSAGE_CHARS,
    RecordingModel,
    SessionRecorder,
    request_digest,
)
from agent_team.retry import RetryPolicy
from agent_team.scripted import ScriptedModel
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo
from tests.fake_api import (
    FakeAPI,
    anthropic_message,
    fake_api_server,  # noqa: F401
    openai_completion,
)
from tests.orchestration_helpers import (
    PASSING_TESTS,
    file_at,
    integration_turn,
    keyed,
    plan_turn,
    read_call,
    task,
    tool_turn,
    write_and_finish,
)

KEY = "sk-ant-api03-" + "Zx9" * 12
READ = ToolSpec(
    "read_file", "Read a file.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
FINISH = ToolSpec("finish_task", "End the task.", {"type": "object", "properties": {}})
PLAN_SCHEMA = {
    "type": "object",
    "properties": {"tasks": {"type": "array", "items": {"type": "string"}}},
    "required": ["tasks"],
    "additionalProperties": False,
}
NO_RETRY = RetryPolicy(max_retries=0, jitter=False)


def provider_model(provider: str, api: FakeAPI, api_key: str = "sk-test-key") -> ChatModel:
    if provider == "anthropic":
        return AnthropicModel("claude-test", api_key=api_key, base_url=api.anthropic_base_url,
                              retry=NO_RETRY, sleep=lambda _: None)
    return OpenAIModel("gpt-test", api_key=api_key, base_url=api.openai_base_url,
                       retry=NO_RETRY, sleep=lambda _: None)


def enqueue_reply(api: FakeAPI, provider: str, text: str = "",
                  calls: Sequence[Mapping[str, Any]] = ()) -> None:
    if provider == "anthropic":
        api.enqueue(anthropic_message(
            text,
            [{"id": c["id"], "name": c["name"], "input": c["arguments"]} for c in calls],
            usage={"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 7,
                   "cache_creation_input_tokens": 3},
        ))
    else:
        api.enqueue(openai_completion(
            text or None, [dict(c) for c in calls], prompt_tokens=120, completion_tokens=30,
            cached_tokens=7, model="gpt-test",
        ))


def run_conversations(model: ChatModel) -> list[Reply | ModelAPIError]:
    """The same requests, whatever model answers them: three agents and one provider error."""
    outcomes: list[Reply | ModelAPIError] = []
    manager = keyed(model, "manager", "plan")
    outcomes.append(manager.complete("You plan.", [Message.user("Plan auth.")],
                                     output_schema=PLAN_SCHEMA))
    dev = keyed(model, "backend-dev", "TASK-001")
    history = [Message.user("Add login.")]
    first = dev.complete("You code.", history, tools=[READ, FINISH])
    outcomes.append(first)
    history.append(Message.assistant(first.text, first.tool_calls))
    history += [Message.tool(call, f"contents of {call.arguments.get('path')}")
                for call in first.tool_calls]
    outcomes.append(dev.complete("You code.", history, tools=[READ, FINISH]))
    broken = keyed(model, "frontend-dev", "TASK-002")
    try:
        broken.complete("You code.", [Message.user("Add a form.")], tools=[READ])
    except ModelAPIError as exc:
        outcomes.append(exc)
    outcomes.append(keyed(model, "qa-tester").complete("You test.", [Message.user("Test.")]))
    return outcomes


def script_provider(api: FakeAPI, provider: str) -> None:
    enqueue_reply(api, provider, json.dumps({"tasks": ["TASK-001", "TASK-002"]}))
    enqueue_reply(api, provider, "Reading first.", [
        {"id": "toolu_orig_1", "name": "read_file", "arguments": {"path": "app.py"}},
        {"id": "toolu_orig_2", "name": "read_file", "arguments": {"path": "db.py"}},
    ])
    enqueue_reply(api, provider, "", [{"id": "toolu_orig_3", "name": "finish_task",
                                       "arguments": {}}])
    api.enqueue_error(400, "prompt is too long", flavor=provider)
    enqueue_reply(api, provider, "All tests pass.")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_recorded_session_replays_the_same_replies(
    fake_api: FakeAPI, provider: str, tmp_path: Path
) -> None:
    script_provider(fake_api, provider)
    path = tmp_path / "session.json"
    recording = RecordingModel(provider_model(provider, fake_api), SessionRecorder(path))
    recording.recorder.set_feature("User authentication")

    recorded = run_conversations(recording)
    recording.recorder.close()
    fake_api.assert_all_used()

    session = json.loads(path.read_text(encoding="utf-8"))
    assert session["format"] == "agent-team-session" and session["version"] == 1
    assert session["provider"] == provider and session["feature"] == "User authentication"
    assert session["complete"] is True and session["recorded_at"].endswith("Z")
    assert list(session["agents"]) == [
        "manager:plan", "backend-dev:TASK-001", "frontend-dev:TASK-002", "qa-tester"]
    error = session["agents"]["frontend-dev:TASK-002"][0]["error"]
    assert error["status"] == 400 and error["retryable"] is False
    assert "prompt is too long" in error["message"]

    replayed = run_conversations(ScriptedModel.from_file(path))

    assert len(replayed) == len(recorded) == 5
    for original, again in zip(recorded, replayed, strict=True):
        if isinstance(original, ModelAPIError):
            assert isinstance(again, ModelAPIError)
            assert (again.status, again.retryable) == (original.status, original.retryable)
            assert str(original) in str(again)
        else:
            assert again == original
    assert recorded[1].tool_calls[0].id == "toolu_orig_1"
    assert recorded[1].usage.cache_read_tokens == 7


def test_request_summary_lets_a_replay_detect_drift(fake_api: FakeAPI, tmp_path: Path) -> None:
    script_provider(fake_api, "anthropic")
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    recording = RecordingModel(provider_model("anthropic", fake_api), SessionRecorder(first))
    run_conversations(recording)
    replay = RecordingModel(ScriptedModel.from_file(first), SessionRecorder(second))
    run_conversations(replay)

    def digests(path: Path) -> dict[str, list[str]]:
        agents = json.loads(path.read_text(encoding="utf-8"))["agents"]
        return {key: [t["request"]["sha256"] for t in turns] for key, turns in agents.items()}

    assert digests(first) == digests(second)
    turn = json.loads(first.read_text(encoding="utf-8"))["agents"]["backend-dev:TASK-001"][1]
    request = turn["request"]
    assert request["model"] == "claude-test" and request["messages"] == 4
    assert request["tools"] == ["read_file", "finish_task"] and request["output_schema"] is False
    assert request["last_message"] == {"role": "tool", "content": "contents of db.py",
                                       "name": "read_file", "is_error": False}
    assert turn["tool_calls"][0] == {"id": "toolu_orig_3", "name": "finish_task",
                                     "arguments": {}}
    plan = json.loads(first.read_text(encoding="utf-8"))["agents"]["manager:plan"][0]
    assert plan["request"]["output_schema"] is True


def test_no_key_header_or_secret_value_is_written(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("DEPLOY_TOKEN", "hunter2-hunter2")
    fake_api.enqueue(anthropic_message(f"The key is {KEY}", [
        {"id": "toolu_1", "name": "read_file", "input": {"path": "hunter2-hunter2"}}]))
    path = tmp_path / "session.json"
    recording = RecordingModel(provider_model("anthropic", fake_api, KEY), SessionRecorder(path))
    recording.recorder.set_feature(f"Rotate {KEY}")
    keyed(recording, "backend-dev", "T-1").complete(
        f"System with {KEY}", [Message.user("token hunter2-hunter2 " + "x" * 2000)])
    recording.recorder.close()

    assert any(KEY in value for value in fake_api.requests[0].headers.values())  # it was sent
    text = path.read_text(encoding="utf-8")
    assert KEY not in text and "hunter2-hunter2" not in text
    assert "x-api-key" not in text.lower() and "authorization" not in text.lower()
    session = json.loads(text)
    turn = session["agents"]["backend-dev:T-1"][0]
    assert turn["text"] == "The key is [REDACTED:ANTHROPIC_API_KEY]"
    assert turn["tool_calls"][0]["arguments"] == {"path": "[REDACTED:DEPLOY_TOKEN]"}
    assert session["feature"] == "Rotate [REDACTED:ANTHROPIC_API_KEY]"
    last = turn["request"]["last_message"]["content"]
    assert last.startswith("token [REDACTED:DEPLOY_TOKEN] xxx")
    assert len(last) < LAST_MESSAGE_CHARS + 40 and last.endswith("chars]")


def test_each_exchange_is_saved_so_a_crash_leaves_a_replayable_session(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "session.json"
    inner = ScriptedModel({"dev:T-1": [{"text": "one"}, {"text": "two"}, {"text": "three"}]})
    agent = keyed(RecordingModel(inner, SessionRecorder(path)), "dev", "T-1")
    for expected in ("one", "two"):
        agent.complete("s", [Message.user("go")])
        saved = json.loads(path.read_text(encoding="utf-8"))
        assert saved["complete"] is False
        assert saved["agents"]["dev:T-1"][-1]["text"] == expected
    replay = keyed(ScriptedModel.from_file(path), "dev", "T-1")
    assert [replay.complete("s", []).text for _ in range(2)] == ["one", "two"]
    assert not list(path.parent.glob(".*.tmp"))


def test_flush_interval_throttles_saves_until_close(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "session.json"
    recorder = SessionRecorder(path, flush_interval=10.0, clock=lambda: now[0])
    agent = RecordingModel(ScriptedModel([{"text": "a"}, {"text": "b"}, {"text": "c"}]),
                           recorder)
    agent.complete("s", [])
    agent.complete("s", [])
    assert len(json.loads(path.read_text())["agents"]["*"]) == 1
    now[0] = 10.0
    agent.complete("s", [])
    assert len(json.loads(path.read_text())["agents"]["*"]) == 3


def test_a_queue_is_written_up_to_its_first_exchange_in_flight() -> None:
    recorder = SessionRecorder()
    pending = recorder.begin("dev:T-1")
    later = recorder.begin("dev:T-1")
    recorder.finish(later, {"text": "second"})
    recorder.finish(recorder.begin("qa"), {"text": "qa"})
    assert recorder.turns() == {"qa": [{"text": "qa"}]}
    recorder.finish(pending, {"text": "first"})
    assert recorder.turns()["dev:T-1"] == [{"text": "first"}, {"text": "second"}]


class _Interrupting(ChatModel):
    provider, model = "test", "interrupting"

    def complete(self, system: str, messages: Sequence[Message], **kwargs: Any) -> Reply:
        raise KeyboardInterrupt


def test_an_interrupted_request_leaves_no_turn() -> None:
    recording = RecordingModel(_Interrupting())
    with pytest.raises(KeyboardInterrupt):
        keyed(recording, "dev", "T-1").complete("s", [])
    assert recording.recorder.turns() == {}


def test_a_failed_save_is_noted_and_does_not_fail_the_call(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recorder = SessionRecorder(blocker / "session.json")
    reply = RecordingModel(ScriptedModel([{"text": "ok"}]), recorder).complete("s", [])
    assert reply.text == "ok"
    assert recorder.write_errors and "session.json" in recorder.write_errors[0]
    with pytest.raises(OSError):
        recorder.flush()


def test_parallel_agents_keep_their_own_order(tmp_path: Path) -> None:
    agents = {f"dev:T-{i}": [{"text": f"{i}-{n}", "tool_calls": [
        {"id": f"id-{i}-{n}", "name": "read_file", "arguments": {"n": n}}]} for n in range(15)]
        for i in range(8)}
    path = tmp_path / "session.json"
    recording = RecordingModel(ScriptedModel(agents), SessionRecorder(path))

    def work(i: int) -> None:
        bound = keyed(recording, "dev", f"T-{i}")
        for _ in range(15):
            bound.complete("s", [Message.user("go")])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recording.recorder.close()

    saved = json.loads(path.read_text(encoding="utf-8"))["agents"]
    assert {k: [t["text"] for t in v] for k, v in saved.items()} == {
        k: [t["text"] for t in v] for k, v in agents.items()}
    assert saved["dev:T-3"][4]["tool_calls"][0]["id"] == "id-3-4"


def test_digest_is_stable_and_sensitive() -> None:
    messages = [Message.user("hello")]
    assert request_digest("s", messages) == request_digest("s", list(messages))
    assert request_digest("s", messages) != request_digest("t", messages)
    assert request_digest("s", messages) != request_digest("s", [Message.user("hello!")])


def test_several_wrapped_models_share_one_session(tmp_path: Path) -> None:
    recorder = SessionRecorder(tmp_path / "s.json")
    strong = RecordingModel(ScriptedModel({"manager": [{"text": "p"}]}, model="big"), recorder)
    cheap = RecordingModel(ScriptedModel({"dev:T-1": [{"text": "d"}]}, model="small"), recorder)
    keyed(strong, "manager").complete("s", [])
    keyed(cheap, "dev", "T-1").complete("s", [])
    session = json.loads(recorder.close().read_text(encoding="utf-8"))  # type: ignore[union-attr]
    assert session["model"] == "big" and session["models"] == ["scripted/big", "scripted/small"]
    assert set(session["agents"]) == {"manager", "dev:T-1"}


def test_a_recorded_orchestration_replays_to_the_same_result(tmp_path: Path) -> None:
    agents = {
        "manager:plan": [plan_turn([task("X", "backend-dev"), task("Y", "frontend-dev", ["X"])])],
        "backend-dev:X": [tool_turn(read_call("app.txt")), *write_and_finish("x.txt", "x\n")],
        "frontend-dev:Y": write_and_finish("y.txt", "y\n"),
        "manager:integration": [integration_turn()],
    }
    feature = "Two files feature"
    first, second = tmp_path / "first", tmp_path / "second"
    for project in (first, second):
        make_repo(project, {"README.md": "# p\n", "app.txt": "hello\n"})
    recorded, replayed = tmp_path / "recorded.json", tmp_path / "replayed.json"

    recording = RecordingModel(ScriptedModel(agents), SessionRecorder(recorded))
    recording.recorder.set_feature(feature)
    FileBasedOrchestrator(first, model=recording, output=lambda _: None,
                          test_command=PASSING_TESTS).run(feature)
    recording.recorder.close()
    replay = ScriptedModel.from_file(recorded)
    watched = RecordingModel(replay, SessionRecorder(replayed))
    summary = FileBasedOrchestrator(second, model=watched, output=lambda _: None,
                                    test_command=PASSING_TESTS).run(feature)
    watched.recorder.close()

    replay.assert_complete()
    assert summary["exit_code"] == 0
    branch = "feature/two-files-feature"
    for name in ("x.txt", "y.txt"):
        assert file_at(first, branch, name) == file_at(second, branch, name) is not None
    sessions = [json.loads(p.read_text(encoding="utf-8")) for p in (recorded, replayed)]
    assert sessions[0]["feature"] == feature
    assert list(sessions[0]["agents"]) == list(agents)
    strip = [{k: [{**t, "request": {**t["request"], "duration_s": 0}} for t in turns]
              for k, turns in s["agents"].items()} for s in sessions]
    assert strip[0] == strip[1]
