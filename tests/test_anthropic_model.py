"""AnthropicModel against the real anthropic SDK and a loopback server speaking the Messages API."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from agent_team.anthropic_model import AnthropicModel, to_anthropic_messages, to_anthropic_schema
from agent_team.errors import ConfigError, ModelAPIError
from agent_team.models import Message, ToolCall, ToolSpec
from agent_team.retry import RetryPolicy

from tests.fake_api import (
    ANTHROPIC_PATH,
    FakeAPI,
    anthropic_message,
    fake_api_server,  # noqa: F401
)

EPHEMERAL = {"type": "ephemeral"}
READ = ToolSpec(
    "read_file",
    "Read a file of the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
WRITE = ToolSpec(
    "write_file",
    "Write a file of the workspace.",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)


def make_model(api: FakeAPI, **kwargs: Any) -> tuple[AnthropicModel, list[float]]:
    slept: list[float] = []
    kwargs.setdefault("retry", RetryPolicy(max_retries=4, jitter=False))
    model = AnthropicModel(
        "claude-test",
        api_key="sk-ant-test",
        base_url=api.anthropic_base_url,
        sleep=slept.append,
        **kwargs,
    )
    return model, slept


def count_breakpoints(body: dict[str, Any]) -> int:
    return json.dumps(body).count('"cache_control"')


def test_two_turn_tool_exchange(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        anthropic_message(
            "Reading both files.",
            [
                {"id": "toolu_a", "name": "read_file", "input": {"path": "app.py"}},
                {"id": "toolu_b", "name": "read_file", "input": {"path": "missing.py"}},
            ],
        )
    )
    fake_api.enqueue(anthropic_message("Done."))
    model, _ = make_model(fake_api)
    history = [Message.user("Add a login endpoint.")]

    first = model.complete("You are backend-dev.", history, tools=[READ, WRITE])

    assert first.text == "Reading both files."
    assert first.stop_reason == "tool_use"
    assert first.tool_calls == (
        ToolCall("toolu_a", "read_file", {"path": "app.py"}),
        ToolCall("toolu_b", "read_file", {"path": "missing.py"}),
    )
    history.append(Message.assistant(first.text, first.tool_calls))
    history.append(Message.tool(first.tool_calls[0], "print('hi')"))
    history.append(Message.tool(first.tool_calls[1], "no such file", is_error=True))

    second = model.complete("You are backend-dev.", history, tools=[READ, WRITE])

    assert second.text == "Done." and second.stop_reason == "end_turn"
    assert second.tool_calls == ()
    first_body, second_body = fake_api.bodies(ANTHROPIC_PATH)
    assert first_body["system"] == [
        {"type": "text", "text": "You are backend-dev.", "cache_control": EPHEMERAL}
    ]
    assert second_body["model"] == "claude-test" and second_body["max_tokens"] == 8000
    assert "temperature" not in second_body and "output_config" not in second_body
    assert "tool_choice" not in second_body
    assert second_body["tools"] == [
        {"name": "read_file", "description": READ.description, "input_schema": READ.parameters},
        {
            "name": "write_file",
            "description": WRITE.description,
            "input_schema": WRITE.parameters,
            "cache_control": EPHEMERAL,
        },
    ]
    assert second_body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Add a login endpoint."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading both files."},
                {
                    "type": "tool_use",
                    "id": "toolu_a",
                    "name": "read_file",
                    "input": {"path": "app.py"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_b",
                    "name": "read_file",
                    "input": {"path": "missing.py"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_a",
                    "content": "print('hi')",
                    "is_error": False,
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_b",
                    "content": "no such file",
                    "is_error": True,
                    "cache_control": EPHEMERAL,
                },
            ],
        },
    ]
    assert count_breakpoints(first_body) == 3 and count_breakpoints(second_body) == 3
    request = fake_api.requests[0]
    assert "sk-ant-test" in (request.headers.get("x-api-key") or request.headers["authorization"])
    assert request.headers["anthropic-version"]
    fake_api.assert_all_used()


def test_user_message_after_tool_results_joins_that_turn() -> None:
    call = ToolCall("toolu_1", "read_file", {"path": "a"})
    turns = to_anthropic_messages(
        [
            Message.user("go"),
            Message.assistant("", [call]),
            Message.tool(call, "contents"),
            Message.user("You seem stuck; write the file now."),
        ]
    )
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a"}}
    ]
    assert [b["type"] for b in turns[2]["content"]] == ["tool_result", "text"]
    assert turns[2]["content"][-1]["cache_control"] == EPHEMERAL
    assert "cache_control" not in turns[2]["content"][0]


def test_usage_includes_cache_reads_and_writes(fake_api: FakeAPI) -> None:
    fake_api.enqueue(
        anthropic_message(
            "a",
            usage={
                "input_tokens": 12,
                "output_tokens": 40,
                "cache_creation_input_tokens": 1500,
                "cache_read_input_tokens": 0,
            },
        )
    )
    fake_api.enqueue(
        anthropic_message(
            "b",
            usage={
                "input_tokens": 30,
                "output_tokens": 8,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": 1500,
            },
        )
    )
    model, _ = make_model(fake_api)
    first = model.complete("s", [Message.user("x")])
    second = model.complete("s", [Message.user("y")])
    assert first.usage.to_dict() == {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_read_tokens": 0,
        "cache_write_tokens": 1500,
    }
    assert second.usage.to_dict() == {
        "input_tokens": 30,
        "output_tokens": 8,
        "cache_read_tokens": 1500,
        "cache_write_tokens": 0,
    }
    assert (first.usage + second.usage).total_tokens == 12 + 40 + 1500 + 30 + 8 + 1500


def test_structured_output_uses_native_json_schema_format(fake_api: FakeAPI) -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Manager plan",
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["task_id"],
                    "properties": {
                        "task_id": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"},
                        "priority": {"enum": ["high", "low"]},
                    },
                },
            }
        },
    }
    plan = {"tasks": [{"task_id": "TASK-001", "priority": "high"}]}
    fake_api.enqueue(anthropic_message(json.dumps(plan)))
    model, _ = make_model(fake_api, temperature=0.2)

    reply = model.complete("Plan the feature.", [Message.user("Auth")], output_schema=schema)

    assert json.loads(reply.text) == plan
    body = fake_api.requests[0].body
    assert "tool_choice" not in body and "tools" not in body
    assert body["temperature"] == 0.2
    sent = body["output_config"]["format"]
    assert sent["type"] == "json_schema"
    assert sent["schema"] == to_anthropic_schema(schema)
    assert "$schema" not in sent["schema"]
    assert sent["schema"]["additionalProperties"] is False
    item = sent["schema"]["properties"]["tasks"]["items"]
    assert item["additionalProperties"] is False
    assert "pattern" not in item["properties"]["task_id"]
    assert "^[A-Z]+-[0-9]+$" in item["properties"]["task_id"]["description"]
    assert sent["schema"]["properties"]["tasks"]["minItems"] == 1


def test_schema_converter_rewrites_unsupported_keywords() -> None:
    original = {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "n": {"type": "integer", "minimum": 1, "description": "How many."},
            "either": {"oneOf": [{"type": "string"}, {"type": "null"}]},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 3},
            "meta": {"type": "object", "properties": {"k": {"type": "string"}}},
        },
        "$defs": {"x": {"type": "object", "properties": {}}},
    }
    converted = to_anthropic_schema(original)
    assert converted["additionalProperties"] is False
    props = converted["properties"]
    assert props["n"] == {"type": "integer", "description": "How many.\n\n{minimum: 1}"}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert props["when"]["format"] == "date-time"
    assert props["tags"]["description"] == "{maxItems: 3}"
    assert props["meta"]["additionalProperties"] is False
    assert converted["$defs"]["x"]["additionalProperties"] is False
    assert original["additionalProperties"] is True  # the caller's schema is untouched


def test_rate_limit_honours_retry_after_then_succeeds(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(
        429,
        "Number of request tokens has exceeded your per-minute rate limit",
        headers={"retry-after": "2"},
    )
    fake_api.enqueue(anthropic_message("ok"))
    retries: list[tuple[int, float, int | None]] = []
    model, slept = make_model(
        fake_api,
        retry=RetryPolicy(jitter=True),
        on_retry=lambda n, delay, err: retries.append((n, delay, err.status)),
    )

    reply = model.complete("s", [Message.user("x")])

    assert reply.text == "ok"
    assert slept == [2.0]
    assert retries == [(1, 2.0, 429)]
    assert len(fake_api.requests) == 2
    assert [r.headers["x-stainless-retry-count"] for r in fake_api.requests] == ["0", "0"]


def test_server_errors_and_overload_are_retried(fake_api: FakeAPI) -> None:
    for status in (500, 503, 529):
        fake_api.enqueue_error(status, f"trouble {status}")
    fake_api.enqueue(anthropic_message("finally"))
    model, slept = make_model(fake_api)
    assert model.complete("s", [Message.user("x")]).text == "finally"
    assert slept == [1.0, 2.0, 4.0]
    fake_api.assert_all_used()


def test_bad_request_is_not_retried_and_keeps_the_api_message(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(400, "messages.1.content.0: unexpected `tool_use_id` found")
    model, slept = make_model(fake_api)
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", [Message.user("x")])
    error = info.value
    assert error.status == 400 and error.retryable is False
    assert "unexpected `tool_use_id` found" in str(error)
    assert "invalid_request_error" in str(error)
    assert slept == [] and len(fake_api.requests) == 1


def test_overload_gives_up_after_retries(fake_api: FakeAPI) -> None:
    for _ in range(3):
        fake_api.enqueue_error(529, "Overloaded")
    model, slept = make_model(fake_api, retry=RetryPolicy(max_retries=2, jitter=False))
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", [Message.user("x")])
    assert info.value.status == 529
    assert "Overloaded" in str(info.value) and "gave up after 3 attempts" in str(info.value)
    assert len(slept) == 2


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_then_fails() -> None:
    slept: list[float] = []
    model = AnthropicModel(
        "claude-test",
        api_key="k",
        base_url=f"http://127.0.0.1:{unused_port()}",
        retry=RetryPolicy(max_retries=2, jitter=False),
        sleep=slept.append,
    )
    with pytest.raises(ModelAPIError) as info:
        model.complete("s", [Message.user("x")])
    assert info.value.status is None and info.value.retryable is True
    assert "Could not reach the Anthropic API" in str(info.value)
    assert slept == [1.0, 2.0]


def test_timeout_is_retried(fake_api: FakeAPI) -> None:
    fake_api.enqueue(anthropic_message("late"), delay=1.0)
    fake_api.enqueue(anthropic_message("in time"))
    model, slept = make_model(fake_api, timeout=0.2)
    assert model.complete("s", [Message.user("x")]).text == "in time"
    assert len(slept) == 1


def test_stop_reasons_are_normalised(fake_api: FakeAPI) -> None:
    fake_api.enqueue(anthropic_message("cut", stop_reason="max_tokens"))
    fake_api.enqueue(anthropic_message("stopped", stop_reason="stop_sequence"))
    model, _ = make_model(fake_api)
    assert model.complete("s", [Message.user("x")]).stop_reason == "max_tokens"
    assert model.complete("s", [Message.user("x")]).stop_reason == "end_turn"


def test_missing_key_is_an_actionable_config_error() -> None:
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicModel("claude-test")


def test_key_from_environment_and_v1_suffix(
    fake_api: FakeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    fake_api.enqueue(anthropic_message("ok"))
    model = AnthropicModel("claude-test", base_url=fake_api.anthropic_base_url + "/v1/")
    assert model.provider == "anthropic"
    assert model.complete("", [Message.user("x")]).text == "ok"
    request = fake_api.requests[0]
    assert request.path == "/v1/messages"  # a pasted ".../v1" base URL is not doubled
    assert "sk-ant-from-env" in (
        request.headers.get("x-api-key") or request.headers["authorization"]
    )
    assert "system" not in request.body


def test_injected_client_is_used(fake_api: FakeAPI) -> None:
    import anthropic

    client = anthropic.Anthropic(
        api_key="injected", base_url=fake_api.anthropic_base_url, max_retries=0
    )
    fake_api.enqueue(anthropic_message("ok"))
    assert (
        AnthropicModel("claude-test", client=client).complete("s", [Message.user("x")]).text == "ok"
    )
    assert "injected" in (
        fake_api.requests[0].headers.get("x-api-key")
        or fake_api.requests[0].headers["authorization"]
    )
