"""API faults against the real SDKs and a loopback server: each is retried, sent back to the
model as an error, or fails its task (or, on the planning call, the run) with the API's message.

Adapter-level tests pin the exact classification (retried or not, delay, message, exit code);
orchestrator-level tests show what a user sees: the run's outcome, the console and event log,
a valid state file, and git with nothing lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agent_team.agent_loop import CUT_OFF_CALL, CUT_OFF_REMINDER, NO_TOOL_CALL_REMINDER, run_agent
from agent_team.anthropic_model import AnthropicModel
from agent_team.errors import EXIT_BAD_INPUT, EXIT_FAILED, ModelAPIError
from agent_team.events import read_events
from agent_team.models import MAX_TOKENS, ChatModel, Message
from agent_team.openai_model import OpenAIModel
from agent_team.recording import request_digest
from agent_team.retry import RetryPolicy
from agent_team.scripted import ScriptedModel
from agent_team.tools import Workspace, build_toolbox
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.fake_api import (
    FakeAPI,
    anthropic_message,
    fake_api_server,  # noqa: F401
    openai_completion,
)
from tests.orchestration_helpers import (
    assert_nothing_lost,
    file_at,
    new_branches,
    preserve,
    read_state,
    tasks_by_id,
    write_config,
)

PROVIDERS = ("anthropic", "openai")
KEYS = {"anthropic": ("ANTHROPIC_API_KEY", "sk-ant-api03-faults-test-not-real-0123456789"),
        "openai": ("OPENAI_API_KEY", "sk-proj-faults-test-not-real-0123456789")}
FILES = {"README.md": "# demo\n", "app.py": "print('hi')\n"}
FEATURE = "Fault tolerant feature"
TESTS = "python -c \"print('1 passed')\""

Call = tuple[str, Any]


# -- replies in either wire format -------------------------------------------------------------


def text_reply(provider: str, text: str, *, cut: bool = False) -> dict[str, Any]:
    if provider == "anthropic":
        return anthropic_message(text=text, stop_reason="max_tokens" if cut else None)
    return openai_completion(text or None, finish_reason="length" if cut else None)


def tool_reply(provider: str, *calls: Call, cut: bool = False) -> dict[str, Any]:
    """Tool calls as (name, arguments); string arguments are sent verbatim (not JSON)."""
    if provider == "anthropic":
        uses = [{"name": name, "input": args} for name, args in calls]
        return anthropic_message(tool_uses=uses, stop_reason="max_tokens" if cut else None)
    return openai_completion(None, list(calls), finish_reason="length" if cut else None)


def plan_reply(provider: str, *task_ids: str) -> dict[str, Any]:
    roles = ["backend-dev", "frontend-dev", "qa-tester", "backend-dev"]
    tasks = [{"task_id": t, "description": f"Write {t.lower()}.txt", "assigned_to": roles[i],
              "dependencies": []} for i, t in enumerate(task_ids)]
    return text_reply(provider, json.dumps({"tasks": tasks, "decisions": []}))


def finish(summary: str = "Done.") -> Call:
    return ("finish_task", {"status": "completed", "summary": summary})


def write(path: str, content: str) -> Call:
    return ("write_file", {"path": path, "content": content})


def enqueue_error(api: FakeAPI, provider: str, status: int, message: str,
                  **headers: str) -> None:
    api.enqueue_error(status, message, flavor=provider, headers=headers or None)


def base_url(api: FakeAPI, provider: str) -> str:
    return api.anthropic_base_url if provider == "anthropic" else api.openai_base_url


def feedback(provider: str, body: dict[str, Any]) -> list[str]:
    """What a request told the model after its last reply: tool results and user texts."""
    out: list[str] = []
    if provider == "anthropic":
        last = body["messages"][-1]
        for block in last["content"]:
            text = block.get("text") if block["type"] == "text" else block.get("content")
            out.append(text if isinstance(text, str) else json.dumps(text))
        return out
    for message in reversed(body["messages"]):
        if message["role"] == "assistant":
            break
        out.insert(0, message["content"] or "")
    return out


# -- adapter level -----------------------------------------------------------------------------


def adapter(provider: str, api: FakeAPI, **kwargs: Any) -> tuple[ChatModel, list[float]]:
    slept: list[float] = []
    kwargs.setdefault("retry", RetryPolicy(max_retries=2, base_delay=1.0, jitter=False))
    cls = AnthropicModel if provider == "anthropic" else OpenAIModel
    model = cls("test-model", api_key="test-key", base_url=base_url(api, provider),
                sleep=slept.append, **kwargs)
    return model, slept


HTML_PAGE = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>" + (
    "<p>upstream connect error or disconnect/reset before headers</p>\n" * 60) + "</body></html>"

#: fault id -> (how to inject it, a phrase of the error message, the wait before the retry)
TRANSIENT: dict[str, tuple[Callable[[FakeAPI, str], None], str, float]] = {
    "429-retry-after": (lambda api, p: enqueue_error(api, p, 429, "Rate limit reached",
                                                     **{"retry-after": "7"}),
                        "error 429", 7.0),
    "429-no-retry-after": (lambda api, p: enqueue_error(api, p, 429, "Rate limit reached"),
                           "Rate limit reached", 1.0),
    "500": (lambda api, p: enqueue_error(api, p, 500, "Internal server error"), "error 500", 1.0),
    "503": (lambda api, p: enqueue_error(api, p, 503, "Service unavailable"), "error 503", 1.0),
    "529-overloaded": (lambda api, p: enqueue_error(api, p, 529, "Overloaded"), "error 529", 1.0),
    "connection-reset": (lambda api, p: api.enqueue(None, drop=True), "Could not reach", 1.0),
    "reset-mid-body": (lambda api, p: api.enqueue(text_reply(p, "lost"), drop="partial"),
                       "Could not reach", 1.0),
    "502-html-page": (lambda api, p: api.enqueue(HTML_PAGE, status=502), "502 Bad Gateway", 1.0),
    "200-not-json": (lambda api, p: api.enqueue("{\"id\": \"msg_01\", \"conte", status=200),
                     "answered 200 with a body that is not", 1.0),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_transient_fault_is_retried_then_the_reply_arrives(
    fake_api: FakeAPI, provider: str, fault: str
) -> None:
    inject, phrase, delay = TRANSIENT[fault]
    inject(fake_api, provider)
    fake_api.enqueue(text_reply(provider, "recovered"))
    errors: list[ModelAPIError] = []
    model, slept = adapter(provider, fake_api, on_retry=lambda n, d, e: errors.append(e))

    assert model.complete("system", [Message.user("hello")]).text == "recovered"
    assert slept == [delay]
    assert len(errors) == 1 and errors[0].retryable
    assert phrase in str(errors[0])
    assert "\n" not in str(errors[0]) and len(str(errors[0])) < 600
    fake_api.assert_all_used()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fault_that_persists_gives_up_with_the_api_message(
    fake_api: FakeAPI, provider: str
) -> None:
    for _ in range(3):
        enqueue_error(fake_api, provider, 529, "Overloaded")
    model, slept = adapter(provider, fake_api)
    with pytest.raises(ModelAPIError) as info:
        model.complete("system", [Message.user("hello")])
    message = str(info.value)
    assert "error 529" in message and "Overloaded" in message
    assert "gave up after 3 attempts" in message
    assert info.value.exit_code == EXIT_FAILED and info.value.status == 529
    assert slept == [1.0, 2.0]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_timeout_is_retried_and_named_as_a_timeout(fake_api: FakeAPI, provider: str) -> None:
    fake_api.enqueue(text_reply(provider, "too late"), delay=0.6)
    fake_api.enqueue(text_reply(provider, "in time"))
    errors: list[ModelAPIError] = []
    model, slept = adapter(provider, fake_api, timeout=0.2,
                           on_retry=lambda n, d, e: errors.append(e))

    assert model.complete("system", [Message.user("hello")]).text == "in time"
    assert len(slept) == 1
    assert "did not answer within the client timeout (0.2 s)" in str(errors[0])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(("status", "exit_code"), [(400, EXIT_FAILED), (401, EXIT_BAD_INPUT),
                                                    (403, EXIT_BAD_INPUT), (404, EXIT_BAD_INPUT),
                                                    (413, EXIT_FAILED)])
def test_non_retryable_status_fails_at_once_with_the_api_message(
    fake_api: FakeAPI, provider: str, status: int, exit_code: int
) -> None:
    enqueue_error(fake_api, provider, status, f"the API explains status {status}")
    model, slept = adapter(provider, fake_api)
    with pytest.raises(ModelAPIError) as info:
        model.complete("system", [Message.user("hello")])
    assert f"error {status}" in str(info.value)
    assert f"the API explains status {status}" in str(info.value)
    assert info.value.retryable is False and info.value.exit_code == exit_code
    assert slept == [] and len(fake_api.requests) == 1
    if status == 401:
        assert f"Check {KEYS[provider][0]}" in str(info.value)


def test_should_retry_header_overrides_the_status_table(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(500, "do not retry this one", headers={"x-should-retry": "false"})
    model, slept = adapter("anthropic", fake_api)
    with pytest.raises(ModelAPIError, match="do not retry this one"):
        model.complete("system", [Message.user("hello")])
    assert slept == []


# -- the agent loop ----------------------------------------------------------------------------


def test_reply_cut_at_max_tokens_runs_its_complete_calls_but_not_the_cut_one(
    tmp_path: Path,
) -> None:
    model = ScriptedModel([
        {"tool_calls": [{"name": "write_file", "arguments": {"path": "a.txt", "content": "a\n"}},
                        {"name": "write_file", "arguments": {"path": "b.txt", "content": "ha"}}],
         "stop_reason": MAX_TOKENS},
        {"tool_calls": [{"name": "finish_task", "arguments": {"status": "completed",
                                                              "summary": "a.txt written"}}]},
    ])
    result = run_agent(model, "system", "task", build_toolbox(Workspace(tmp_path)))

    assert (tmp_path / "a.txt").read_text() == "a\n" and not (tmp_path / "b.txt").exists()
    results = [m for m in result.messages if m.role == "tool"]
    assert results[0].content.startswith("Created a.txt") and not results[0].is_error
    assert results[1].content == CUT_OFF_CALL and results[1].is_error
    assert result.report["status"] == "completed" and result.turns == 2


# -- whole runs --------------------------------------------------------------------------------


def orchestrate(cls: type, provider: str, api: FakeAPI, project: Path, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch, **config: Any) -> tuple[dict[str, Any], list]:
    monkeypatch.setenv(*KEYS[provider])
    lines: list[str] = []
    runner = cls(project, api_provider=provider, base_url=base_url(api, provider),
                 config_path=write_config(tmp_path / "config.json", **config),
                 test_command=TESTS, output=lines.append)
    return runner.run(FEATURE), lines


@pytest.mark.parametrize("provider", PROVIDERS)
def test_transient_faults_in_a_run_are_retried_and_the_run_completes(
    fake_api: FakeAPI, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    replies = [plan_reply(provider, "A"), tool_reply(provider, write("a.txt", "a\n")),
               tool_reply(provider, finish()), text_reply(provider, "A wrote a.txt.")]
    faults = [["429-retry-after", "429-no-retry-after"], ["500", "503"],
              ["529-overloaded", "502-html-page"],
              ["connection-reset", "reset-mid-body", "200-not-json"]]
    for reply, injected in zip(replies, faults, strict=True):
        for fault in injected:
            TRANSIENT[fault][0](fake_api, provider)
        fake_api.enqueue(reply)

    summary, lines = orchestrate(SimpleOrchestrator, provider, fake_api, project, tmp_path,
                                 monkeypatch)

    assert summary["exit_code"] == 0, "\n".join(lines)
    fake_api.assert_all_used()
    retries = read_events(project / ".ai-agents" / "logs" / f"{summary['run_id']}.jsonl",
                          kinds=["retry"])
    expected = [fault for group in faults for fault in group]
    assert len(retries) == len(expected)
    for event, fault in zip(retries, expected, strict=True):
        assert TRANSIENT[fault][1] in event["error"], (fault, event["error"])
    assert retries[0]["delay_s"] == 0.05  # retry-after 7 s honoured, up to the ceiling
    assert sum("API error" in line and "retry 1" in line for line in lines) == 4
    state = read_state(project)
    assert state["usage"]["api_calls"] == 4  # failed attempts are not billed calls
    assert tasks_by_id(state)["A"]["status"] == "completed"
    after = assert_nothing_lost(project, before, refs_fixed=True)
    assert new_branches(before, after) == [summary["feature_branch"]]
    assert file_at(project, summary["feature_branch"], "a.txt") == "a\n"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_model_misbehaviour_goes_back_to_the_model_and_the_agent_finishes(
    fake_api: FakeAPI, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    half_json = '{"path": "c.txt", "content": "unfinished'
    cut_call = ("write_file", half_json) if provider == "openai" else write("b.txt", "ha")
    not_json = ("write_file", '{"path": "c.txt" "content": "x"}')
    steps: list[tuple[dict[str, Any], str]] = [
        (text_reply(provider, "Let me explain at length what I am going to", cut=True),
         CUT_OFF_REMINDER),
        (tool_reply(provider, write("a.txt", "complete\n"), cut_call, cut=True), CUT_OFF_CALL),
        (tool_reply(provider, not_json), "were not a JSON object"),
        (text_reply(provider, ""), NO_TOOL_CALL_REMINDER),
        (tool_reply(provider, ("delete_repository", {"confirm": True})),
         "There is no tool named 'delete_repository'. Available tools: read_file"),
    ]
    fake_api.enqueue(plan_reply(provider, "A"))
    for reply, _ in steps:
        fake_api.enqueue(reply)
    fake_api.enqueue(tool_reply(provider, finish("a.txt written after several mistakes.")))
    fake_api.enqueue(text_reply(provider, "A wrote a.txt."))

    summary, lines = orchestrate(SimpleOrchestrator, provider, fake_api, project, tmp_path,
                                 monkeypatch)

    assert summary["exit_code"] == 0, "\n".join(lines)
    fake_api.assert_all_used()
    agent_requests = fake_api.bodies()[2:2 + len(steps)]
    for body, (_, expected) in zip(agent_requests, steps, strict=True):
        assert any(expected in text for text in feedback(provider, body)), (
            expected, feedback(provider, body))
    assert any(t.startswith("Created a.txt") for t in feedback(provider, agent_requests[1]))
    feature = summary["feature_branch"]
    assert file_at(project, feature, "a.txt") == "complete\n"
    assert file_at(project, feature, "b.txt") is None and file_at(project, feature, "c.txt") is None
    state = read_state(project)
    assert tasks_by_id(state)["A"]["status"] == "completed"
    events = read_events(project / ".ai-agents" / "logs" / f"{summary['run_id']}.jsonl")
    tool_errors = [e["tool"] for e in events if e["kind"] == "tool_call" and e["is_error"]]
    assert tool_errors == ["write_file", "delete_repository"]
    assert_nothing_lost(project, before, refs_fixed=True)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fatal_api_errors_fail_their_task_and_independent_tasks_go_on(
    fake_api: FakeAPI, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    fake_api.enqueue(plan_reply(provider, "A", "B", "C", "D"))
    fake_api.enqueue(tool_reply(provider, write("a.txt", "partial work\n")))
    enqueue_error(fake_api, provider, 400, "messages.3: tool_use ids must be unique")
    for _ in range(3):
        enqueue_error(fake_api, provider, 529, "Overloaded")
    enqueue_error(fake_api, provider, 401, "invalid x-api-key")
    fake_api.enqueue(tool_reply(provider, write("d.txt", "d\n")))
    fake_api.enqueue(tool_reply(provider, finish()))
    fake_api.enqueue(text_reply(provider, json.dumps({"summary": "D only.", "decisions": []})))

    summary, lines = orchestrate(FileBasedOrchestrator, provider, fake_api, project, tmp_path,
                                 monkeypatch, coordination={"max_workers": 1},
                                 retry={"max_retries": 2})

    assert summary["exit_code"] == EXIT_FAILED
    fake_api.assert_all_used()
    tasks = tasks_by_id(read_state(project))
    assert tasks["A"]["status"] == "failed"
    assert "error 400" in tasks["A"]["error"]
    assert "tool_use ids must be unique" in tasks["A"]["error"]
    assert tasks["B"]["status"] == "failed"
    assert "Overloaded" in tasks["B"]["error"] and "gave up after 3 attempts" in tasks["B"]["error"]
    assert tasks["C"]["status"] == "failed" and "invalid x-api-key" in tasks["C"]["error"]
    assert f"Check {KEYS[provider][0]}" in tasks["C"]["error"]
    assert tasks["D"]["status"] == "completed" and tasks["D"]["merged"]
    assert any(line.startswith("[Orchestrator] A failed:") and "error 400" in line
               for line in lines)
    after = assert_nothing_lost(project, before, refs_fixed=True)
    feature = summary["feature_branch"]
    assert file_at(project, feature, "d.txt") == "d\n"
    assert file_at(project, feature, "a.txt") is None
    a_branch = f"{feature}-agents/backend-dev/A"
    assert a_branch in new_branches(before, after)
    assert file_at(project, a_branch, "a.txt") == "partial work\n"  # A's work is kept


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unauthorized_planning_call_ends_the_run_as_bad_input(
    fake_api: FakeAPI, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 at planning: exit 2, as for any bad input. The key is wrong, no retry or later task
    can succeed, and nothing was changed: the feature branch is made only after the plan."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    monkeypatch.setenv(*KEYS[provider])
    enqueue_error(fake_api, provider, 401, "invalid x-api-key")
    result = CliRunner().invoke(main, [
        "--feature", FEATURE, "--project-dir", str(project), "--api-provider", provider,
        "--base-url", base_url(fake_api, provider), "--no-progress",
        "--config", str(write_config(tmp_path / "config.json")),
    ], catch_exceptions=False)

    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "invalid x-api-key" in result.stderr and f"Check {KEYS[provider][0]}" in result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
    fake_api.assert_all_used()
    state = read_state(project)
    assert state["current_feature"]["status"] == "failed"
    assert "401" in state["current_feature"]["stop_reason"]
    assert state["runs"][-1]["exit_code"] == EXIT_BAD_INPUT
    after = assert_nothing_lost(project, before, refs_fixed=True)
    assert new_branches(before, after) == []


def test_replayed_unauthorized_planning_call_also_exits_2(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": {"manager:plan": [
        {"error": {"status": 401, "message": "Anthropic API error 401: invalid x-api-key"}}]}}))
    result = CliRunner().invoke(main, [
        "--feature", FEATURE, "--project-dir", str(project), "--api-provider", "scripted",
        "--session", str(session), "--no-progress",
    ], catch_exceptions=False)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "invalid x-api-key" in result.stderr


def test_overloaded_planning_call_fails_the_run_with_exit_1(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    for _ in range(3):
        enqueue_error(fake_api, "anthropic", 529, "Overloaded")
    with pytest.raises(ModelAPIError, match="Overloaded.*gave up after 3 attempts") as info:
        orchestrate(FileBasedOrchestrator, "anthropic", fake_api, project, tmp_path,
                    monkeypatch, retry={"max_retries": 2})
    assert info.value.exit_code == EXIT_FAILED
    state = read_state(project)
    assert state["current_feature"]["status"] == "failed"
    assert state["runs"][-1]["exit_code"] == EXIT_FAILED
    assert new_branches(before, assert_nothing_lost(project, before, refs_fixed=True)) == []


def test_api_error_on_the_integration_review_still_finishes_the_run(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    fake_api.enqueue(plan_reply("anthropic", "A"))
    fake_api.enqueue(tool_reply("anthropic", write("a.txt", "a\n"), finish()))
    for _ in range(2):
        enqueue_error(fake_api, "anthropic", 500, "Internal server error")
    summary, _ = orchestrate(FileBasedOrchestrator, "anthropic", fake_api, project, tmp_path,
                             monkeypatch, retry={"max_retries": 1})
    state = read_state(project)
    assert state["integration"]["test_results"]["exit_code"] == 0
    assert "Internal server error" in state["integration"]["summary"]
    assert (project / ".ai-agents" / "reports" / f"{summary['run_id']}.md").is_file()


def test_request_timeout_is_configurable_for_a_run(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    fake_api.enqueue(plan_reply("anthropic", "A"), delay=0.6)
    fake_api.enqueue(plan_reply("anthropic", "A"))
    fake_api.enqueue(tool_reply("anthropic", finish()))
    fake_api.enqueue(text_reply("anthropic", "Nothing to merge."))
    summary, lines = orchestrate(SimpleOrchestrator, "anthropic", fake_api, project, tmp_path,
                                 monkeypatch, retry={"request_timeout_seconds": 0.2})
    assert summary["exit_code"] == 0
    assert any("did not answer within the client timeout (0.2 s)" in line for line in lines)


def test_recorded_invalid_tool_arguments_replay_as_the_same_error(
    fake_api: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = tmp_path / "recorded"
    make_repo(recorded, FILES)
    fake_api.enqueue(plan_reply("openai", "A"))
    fake_api.enqueue(tool_reply("openai", ("write_file", '{"path": "a.txt", "content": ')))
    fake_api.enqueue(tool_reply("openai", write("a.txt", "a\n"), finish()))
    fake_api.enqueue(text_reply("openai", "A wrote a.txt."))
    monkeypatch.setenv(*KEYS["openai"])
    session = tmp_path / "session.json"
    first = SimpleOrchestrator(recorded, api_provider="openai",
                               base_url=fake_api.openai_base_url, test_command=TESTS,
                               output=lambda _: None, record=session).run(FEATURE)
    assert first["exit_code"] == 0
    original = feedback("openai", fake_api.bodies()[2])[0]
    assert "not valid JSON" in original

    replayed = tmp_path / "replayed"
    make_repo(replayed, FILES)
    model = ScriptedModel.from_file(session)
    second = SimpleOrchestrator(replayed, model=model, test_command=TESTS,
                                output=lambda _: None).run(FEATURE)
    assert second["exit_code"] == 0
    model.assert_complete()
    retried = next(c for c in model.calls if c.key == "backend-dev:A" and len(c.messages) > 1)
    assert "ERROR: " + retried.messages[-1].content == original
    turns = json.loads(session.read_text())["agents"]["backend-dev:A"]
    assert [t["request"]["sha256"] for t in turns] == [
        request_digest(c.system, c.messages) for c in model.calls if c.key == "backend-dev:A"]
