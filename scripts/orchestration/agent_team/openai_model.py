"""OpenAI Chat Completions adapter, also for local OpenAI-compatible servers.

Ollama, vLLM and llama.cpp's server all speak `/v1/chat/completions`: point `base_url` (or
`OPENAI_BASE_URL`) at them and no API key is needed. The official API deprecated `max_tokens`
in favour of `max_completion_tokens` (reasoning models reject the old name) while local servers
such as Ollama and LM Studio only understand `max_tokens`, so the field is chosen by endpoint.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import urlparse

from .errors import ConfigError, ModelBehaviorError
from .models import END_TURN, MAX_TOKENS, TOOL_USE, Message, Reply, ToolCall, ToolSpec, Usage
from .sdk_call import ProviderProfile, SdkChatModel, load_sdk

KEY_VARIABLE = "OPENAI_API_KEY"
BASE_URL_VARIABLE = "OPENAI_BASE_URL"
#: Sent when a local server needs no key; the SDK refuses to build a client without one.
PLACEHOLDER_KEY = "not-needed"
OFFICIAL_HOST = "api.openai.com"
#: Prefix of failed tool results, since Chat Completions has no `is_error` field.
TOOL_ERROR_PREFIX = "ERROR: "

FINISH_REASONS = {
    "stop": END_TURN,
    "tool_calls": TOOL_USE,
    "function_call": TOOL_USE,
    "length": MAX_TOKENS,
}
#: Keywords strict mode does not support; a schema using them is sent with `strict: false`.
_STRICT_UNSUPPORTED = frozenset(
    {
        "oneOf", "not", "if", "then", "else", "patternProperties", "propertyNames",
        "unevaluatedProperties", "unevaluatedItems", "dependentRequired", "dependentSchemas",
        "minProperties", "maxProperties", "contains", "prefixItems",
    }
)
_DROPPED_KEYWORDS = frozenset({"$schema", "$id", "$comment"})
_HINTS = {
    401: f"Check {KEY_VARIABLE} (or the key your OpenAI-compatible server expects).",
    404: "Check the model name (--model) and the base URL; local servers list their models "
    "at GET /v1/models.",
}

PROFILE = ProviderProfile(
    sdk="openai",
    api="OpenAI-compatible API",
    label="OpenAI",
    base_error="OpenAIError",
    reply_attribute="choices",
    reply_kind="a chat completion",
    request_id_header="x-request-id",
    code_keys=("code", "type"),
    hints=_HINTS,
    unreachable_hint=" Is the server running and is the base URL right?",
)

TokenField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIModel(SdkChatModel):
    """A Chat Completions model (OpenAI or a local server), retried by `call_with_retries`."""

    provider = "openai"
    profile = PROFILE

    def __init__(
        self, model: str, *, token_field: TokenField | None = None, **options: Any
    ) -> None:
        """Build the adapter; `options` are those of `SdkChatModel`.

        Args:
            token_field: Force `max_tokens` or `max_completion_tokens`; by default the official
                endpoint gets `max_completion_tokens` and any other server `max_tokens`.
        """
        super().__init__(model, **options)
        if token_field is None:
            host = urlparse(str(getattr(self._client, "base_url", "") or "")).hostname
            token_field = "max_completion_tokens" if host in (None, OFFICIAL_HOST) else "max_tokens"
        self.token_field: TokenField = token_field

    def make_client(self, api_key: str | None, base_url: str | None, timeout: float) -> Any:
        base_url = base_url or os.environ.get(BASE_URL_VARIABLE) or None
        key = api_key or os.environ.get(KEY_VARIABLE)
        if not key:
            if base_url is None:
                raise ConfigError(
                    f"The openai provider needs an API key: set {KEY_VARIABLE} in the "
                    "environment, or set --base-url / "
                    f"{BASE_URL_VARIABLE} to a local OpenAI-compatible server "
                    "(Ollama: http://localhost:11434/v1, vLLM: http://localhost:8000/v1)."
                )
            key = PLACEHOLDER_KEY
        return load_sdk("openai").OpenAI(
            api_key=key, base_url=base_url, max_retries=0, timeout=timeout
        )

    # -- request and reply ---------------------------------------------------------------------

    def build_request(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for one call."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(system, messages),
            self.token_field: self.max_tokens,
        }
        if tools:
            request["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if output_schema is not None:
            schema, problems = to_strict_schema(output_schema)
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name(output_schema),
                    "schema": schema,
                    "strict": not problems,
                },
            }
        if self.temperature is not None:
            request["temperature"] = self.temperature
        return request

    def create(self, request: dict[str, Any]) -> Any:
        return self._client.chat.completions.create(**request)

    def parse_reply(self, response: Any) -> Reply:
        return reply_from_completion(response, self.model)


# -- conversions ---------------------------------------------------------------------------------


def to_openai_messages(system: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Chat Completions messages, the system prompt first."""
    out: list[dict[str, Any]] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "tool":
            content = message.content
            if message.is_error:
                content = TOOL_ERROR_PREFIX + content
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": content})
        elif message.role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": message.content}
            if message.tool_calls:
                entry["content"] = message.content or None
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.name,
                            "arguments": json.dumps(call.arguments, ensure_ascii=False),
                        },
                    }
                    for call in message.tool_calls
                ]
            out.append(entry)
        else:
            out.append({"role": "user", "content": message.content})
    return out


def reply_from_completion(response: Any, model: str = "") -> Reply:
    """Text, tool calls, normalised stop reason and usage of a chat completion."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise ModelBehaviorError(
            f"The OpenAI-compatible server returned no choices for model {model!r}."
        )
    choice = choices[0]
    message = choice.message
    calls = tuple(
        _tool_call(raw)
        for raw in (message.tool_calls or ())
        if getattr(raw, "function", None) is not None
    )
    text = message.content or ""
    finish = choice.finish_reason
    stop = FINISH_REASONS.get(finish, finish) if finish else (TOOL_USE if calls else END_TURN)
    if calls and stop == END_TURN:
        stop = TOOL_USE  # some local servers report "stop" alongside tool calls
    refusal = getattr(message, "refusal", None)
    if refusal and not text:
        text, stop = refusal, "refusal"
    return Reply(
        text=text,
        tool_calls=calls,
        stop_reason=str(stop),
        usage=_usage(getattr(response, "usage", None)),
        model=getattr(response, "model", None) or model,
    )


def _tool_call(raw: Any) -> ToolCall:
    name = raw.function.name
    arguments = raw.function.arguments
    call_id = raw.id or ""
    if not arguments or not arguments.strip():
        return ToolCall(call_id, name, {})
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        return ToolCall(
            call_id, name, {}, arguments_error=f"arguments are not valid JSON ({exc}): {arguments}"
        )
    if not isinstance(parsed, dict):
        return ToolCall(
            call_id, name, {}, arguments_error=f"arguments must be a JSON object, got {arguments}"
        )
    return ToolCall(call_id, name, parsed)


def _usage(usage: Any) -> Usage:
    """Usage with input = the non-cached part of the prompt, as the Anthropic adapter reports."""
    if usage is None:
        return Usage()
    prompt = int(getattr(usage, "prompt_tokens", None) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=int(getattr(usage, "completion_tokens", None) or 0),
        cache_read_tokens=cached,
        cache_write_tokens=0,
    )


def schema_name(schema: Mapping[str, Any]) -> str:
    """A `json_schema.name` from the schema title: letters, digits, `_` and `-`, max 64."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", str(schema.get("title") or "")).strip("_")
    return name[:64] or "response"


def to_strict_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Prepare a schema for `response_format` and say whether strict mode can take it.

    Objects without `additionalProperties` get `false`. Strict mode also needs an object root,
    every property listed in `required`, closed objects and no unsupported keywords; rather
    than silently change the meaning of optional fields, such schemas are reported as problems
    and sent with `strict: false`.

    Returns:
        The converted schema and the list of reasons it is not strict-compatible (empty when
        it is).
    """
    problems: list[str] = []
    converted = _strict(copy.deepcopy(dict(schema)), "$", problems)
    if converted.get("type") != "object":
        problems.append("$: the root must be an object")
    return converted, problems


def _strict(node: Any, path: str, problems: list[str]) -> Any:
    if isinstance(node, list):
        return [_strict(item, f"{path}[{i}]", problems) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key in _STRICT_UNSUPPORTED:
            problems.append(f"{path}: {key} is not supported in strict mode")
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {n: _strict(s, f"{path}.{n}", problems) for n, s in value.items()}
        elif key in ("items", "anyOf", "allOf", "oneOf") or (
            key == "additionalProperties" and isinstance(value, dict)
        ):
            out[key] = _strict(value, f"{path}.{key}", problems)
        else:
            out[key] = value
    types = out.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        out.setdefault("additionalProperties", False)
        if out["additionalProperties"] is not False:
            problems.append(f"{path}: additionalProperties must be false in strict mode")
        missing = sorted(set(out.get("properties", {})) - set(out.get("required", [])))
        if missing:
            problems.append(f"{path}: optional properties {missing} (strict needs all required)")
    return out
