"""OpenAIModel against the real openai SDK and a loopback server speaking Chat Completions.

The same server stands in for local OpenAI-compatible servers (Ollama, vLLM, llama.cpp), which
all serve `/v1/chat/completions`.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from agent_team.errors import ConfigError, ModelAPIError
from agent_team.models import Message, ToolCall, ToolSpec
from agent_team.openai_model import OpenAIModel, schema_name, to_strict_schema
from agent_team.retry import RetryPolicy

from tests.fake_api import (
    OPENAI_PATH,
    FakeAPI,
    fake_api_server,  # noqa: F401
    openai_completion,
)

READ = ToolSpec(
    "read_file",
    "Read a file of the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
RUN = ToolSpec("run_tests", "Run the test suite.", {"type": "object", "properties": {}})


def make_model(api: FakeAPI, **kwargs: Any) -> tuple[OpenAIModel, list[float]]:
    slept: list[float] = []
    kwargs.setdefault("retry", RetryPolicy(max_retries=4, jitter=False))
    model = OpenAIModel(
        "gpt-test",
        api_key="sk-test",
        base_url=api.openai_base_url,
        sleep=slept.append,
        **kwargs,
    )
    return model, slept


def test_two_turn_tool_exchange(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        openai_completion(
            None,
            [
                {"id": "call_a", "name": "read_file", "arguments": {"path": "app.py"}},
                {"id": "call_b", "name": "run_tests", "arguments": {}},
            ],
        )
    )
    fake_api.enqueue(openai_completion("All green."))
    model, _ = make_model(fake_api)
    history = [Message.user("Add a login endpoint.")]

    first = model.complete("You are backend-dev.", history, tools=[READ, RUN])

    assert first.text == "" and first.stop_reason == "tool_use"
    assert first.tool_calls == (
        ToolCall("call_a", "read_file", {"path": "app.py"}),
        ToolCall("call_b", "run_tests", {}),
    )
    history.append(Message.assistant(first.text, first.tool_calls))
    history.append(Message.tool(first.tool_calls[0], "print('hi')"))
    history.append(Message.tool(first.tool_calls[1], "2 failed", is_error=True))

    second = model.complete("You are backend-dev.", history, tools=[READ, RUN])

    assert second.text == "All green." and second.stop_reason == "end_turn"
    first_body, second_body = fake_api.bodies(OPENAI_PATH)
    assert first_body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": READ.description,
                "parameters": READ.parameters,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "run_tests",
                "description": RUN.description,
                "parameters": RUN.parameters,
            },
        },
    ]
    assert second_body["model"] == "gpt-test"
    assert second_body["max_tokens"] == 8000 and "max_completion_tokens" not in second_body
    assert "temperature" not in second_body and "response_format" not in second_body
    assert second_body["messages"] == [
        {"role": "system", "content": "You are backend-dev."},
        {"role": "user", "content": "Add a login endpoint."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "app.py"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "run_tests", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "print('hi')"},
        {"role": "tool", "tool_call_id": "call_b", "content": "ERROR: 2 failed"},
    ]
    assert fake_api.requests[0].headers["authorization"] == "Bearer sk-test"
    fake_api.assert_all_used()


def test_usage_separates_cached_prompt_tokens(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        openai_completion("a", prompt_tokens=1200, completion_tokens=30, cached_tokens=1024)
    )
    fake_api.enqueue(openai_completion("b", prompt_tokens=50, completion_tokens=7))
    fake_api.enqueue(openai_completion("c", usage={}))
    model, _ = make_model(fake_api)
    cached, plain, missing = (model.complete("s", [Message.user(x)]) for x in "abc")
    assert cached.usage.to_dict() == {
        "input_tokens": 176,
        "output_tokens": 30,
        "cache_read_tokens": 1024,
        "cache_write_tokens": 0,
    }
    assert plain.usage.to_dict() == {
        "input_tokens": 50,
        "output_tokens": 7,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert missing.usage.total_tokens == 0


PLAN_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Manager plan",
    "type": "object",
    "required": ["tasks"],
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["task_id", "dependencies"],
                "properties": {
                    "task_id": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                    "dependencies": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    },
}


def test_structured_output_strict_when_compatible(fake_api: FakeAPI) -> None:
    plan = {"tasks": [{"task_id": "TASK-1", "dependencies": []}]}
    fake_api.enqueue(openai_completion(json.dumps(plan)))
    model, _ = make_model(fake_api, temperature=0.0)

    reply = model.complete("Plan.", [Message.user("Auth")], output_schema=PLAN_SCHEMA)

    assert json.loads(reply.text) == plan
    body = fake_api.requests[0].body
    assert body["temperature"] == 0.0
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    sent = response_format["json_schema"]
    assert sent["name"] == "Manager_plan" and sent["strict"] is True
    assert "$schema" not in sent["schema"]
    assert sent["schema"]["additionalProperties"] is False
    item = sent["schema"]["properties"]["tasks"]["items"]
    assert item["additionalProperties"] is False
    assert item["properties"]["task_id"]["pattern"] == "^[A-Z]+-[0-9]+$"
    assert "additionalProperties" not in PLAN_SCHEMA  # the caller's schema is untouched


def test_structured_output_not_strict_with_optional_fields(fake_api: FakeAPI) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": []}
    fake_api.enqueue(openai_completion('{"a": "x"}'))
    model, _ = make_model(fake_api)
    model.complete("s", [Message.user("x")], output_schema=schema)
    sent = fake_api.requests[0].body["response_format"]["json_schema"]
    assert sent["strict"] is False and sent["name"] == "response"
    assert sent["schema"] == {**schema, "additionalProperties": False}


def test_strict_schema_reports_each_problem() -> None:
    _, problems = to_strict_schema(
        {
            "type": "object",
            "properties": {
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "u": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "required": ["m", "u"],
        }
    )
    assert any("additionalProperties must be false" in p for p in problems)
    assert any("oneOf" in p for p in problems)
    assert to_strict_schema({"type": "array", "items": {"type": "string"}})[1] == [
        "$: the root must be an object"
    ]
    assert schema_name({"title": "Plan: v2 (final)!"}) == "Plan_v2_final"


def test_malformed_tool_arguments_become_arguments_error(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        openai_completion(
            None,
            [
                {"id": "c1", "name": "read_file", "arguments": '{"path": "a.py"'},
                {"id": "c2", "name": "read_file", "arguments": "[1, 2]"},
                {"id": "c3", "name": "run_tests", "arguments": ""},
            ],
        )
    )
    model, _ = make_model(fake_api)
    calls = model.complete("s", [Message.user("x")], tools=[READ, RUN]).tool_calls
    assert calls[0].arguments == {} and "not valid JSON" in calls[0].arguments_error
    assert '{"path": "a.py"' in calls[0].arguments_error
    assert calls[1].arguments == {} and "JSON object" in calls[1].arguments_error
    assert calls[2] == ToolCall("c3", "run_tests", {})


def test_finish_reasons_are_normalised(fake_api: FakeAPI) -> None:
    fake_api.enqueue(openai_completion("cut", finish_reason="length"))
    fake_api.enqueue(openai_completion(None, [("run_tests", {})], finish_reason="stop"))
    fake_api.enqueue(openai_completion("", finish_reason="content_filter"))
    model, _ = make_model(fake_api)
    reasons = [model.complete("s", [Message.user("x")]).stop_reason for _ in range(3)]
    assert reasons == ["max_tokens", "tool_use", "content_filter"]


def test_rate_limit_honours_retry_after_then_succeeds(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(
        429, "Rate limit reached for gpt-test", flavor="openai", headers={"retry-after": "3"}
    )
    fake_api.enqueue(openai_completion("ok"))
    retries: list[tuple[int, float]] = []
    model, slept = make_model(
        fake_api, retry=RetryPolicy(), on_retry=lambda n, delay, err: retries.append((n, delay))
    )
    assert model.complete("s", [Message.user("x")]).text == "ok"
    assert slept == [3.0] and retries == [(1, 3.0)]
    assert [r.headers["x-stainless-retry-count"] for r in fake_api.requests] == ["0", "0"]


def test_service_unavailable_is_retried(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(503, "The server is overloaded", flavor="openai")
    fake_api.enqueue_error(502, "Bad gateway", flavor="openai")
    fake_api.enqueue(openai_completion("ok"))
    model, slept = make_model(fake_api)
    assert model.complete("s", [Message.user("x")]).text == "ok"
    assert slept == [1.0, 2.0]


def test_bad_request_is_not_retried_and_keeps_the_api_message(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        {
            "error": {
                "message": "Invalid parameter: messages with role 'tool' must be a response "
                "to a preceeding message with 'tool_calls'.",
                "type": "invalid_request_error",
                "param": "messages.[2].role",
                "code": None,
            }
        },
        status=400,
    )
    model, slept = make_model(fake_api)
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", [Message.user("x")])
    assert info.value.status == 400 and info.value.retryable is False
    assert "must be a response to a preceeding message" in str(info.value)
    assert slept == [] and len(fake_api.requests) == 1


def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    slept: list[float] = []
    model = OpenAIModel(
        "llama3",
        base_url=f"http://127.0.0.1:{port}/v1",
        retry=RetryPolicy(max_retries=3, jitter=False),
        sleep=slept.append,
    )
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", [Message.user("x")])
    assert info.value.status is None and info.value.retryable is True
    assert "gave up after 4 attempts" in str(info.value)
    assert slept == [1.0, 2.0, 4.0]


def test_local_server_from_env_needs_no_key(
    fake_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_api.openai_base_url)
    fake_api.enqueue(openai_completion("hello from llama"))
    model = OpenAIModel("llama3.1:8b", max_tokens=512)
    assert model.provider == "openai" and model.token_field == "max_tokens"
    assert model.complete("s", [Message.user("x")]).text == "hello from llama"
    request = fake_api.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer not-needed"
    assert request.body["max_tokens"] == 512 and "max_completion_tokens" not in request.body


def test_missing_key_without_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY.*OPENAI_BASE_URL"):
        OpenAIModel("gpt-test")


def test_official_endpoint_uses_max_completion_tokens(
    fake_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert OpenAIModel("gpt-test").token_field == "max_completion_tokens"
    fake_api.enqueue(openai_completion("ok"))
    model, _ = make_model(fake_api, token_field="max_completion_tokens", max_tokens=100)
    model.complete("s", [Message.user("x")])
    body = fake_api.requests[0].body
    assert body["max_completion_tokens"] == 100 and "max_tokens" not in body
