"""Anthropic Messages API adapter: tool use, prompt caching, native JSON-schema output.

Prompt caching uses three of the four `cache_control` breakpoints a request may carry: the last
tool definition, the system prompt, and the last content block of the conversation. The cache
prefix order is tools, system, messages, so an agent's growing conversation is read back from
the cache turn after turn and only the newest turn is billed at the full input rate.

Structured output uses `output_config.format` (type `json_schema`): the newest Claude models
reject a forced `tool_choice`, and the native format constrains decoding to the schema.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigError
from .models import END_TURN, Message, Reply, ToolCall, ToolSpec, Usage
from .sdk_call import ProviderProfile, SdkChatModel, load_sdk

KEY_VARIABLE = "ANTHROPIC_API_KEY"
EPHEMERAL = {"type": "ephemeral"}

#: Keywords the structured-output grammar accepts; anything else is moved into `description`.
_SUPPORTED_KEYWORDS = frozenset(
    {
        "type", "description", "title", "enum", "const", "properties", "required",
        "additionalProperties", "items", "minItems", "anyOf", "allOf", "$ref", "$defs",
        "definitions", "format",
    }
)
_SUPPORTED_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_DROPPED_KEYWORDS = frozenset({"$schema", "$id", "$comment", "examples", "default"})
_HINTS = {
    401: f"Check {KEY_VARIABLE}.",
    403: "The API key lacks permission for this model or workspace.",
    404: "Check the model name (--model) and the base URL.",
    413: "The request is too large: shorten the conversation or the files sent.",
}
PROFILE = ProviderProfile(
    sdk="anthropic",
    api="Anthropic API",
    label="Anthropic",
    base_error="AnthropicError",
    reply_attribute="content",
    reply_kind="a message",
    request_id_header="request-id",
    code_keys=("type",),
    hints=_HINTS,
)


class AnthropicModel(SdkChatModel):
    """Claude through the Messages API, retried by `retry.call_with_retries`."""

    provider = "anthropic"
    profile = PROFILE

    def make_client(self, api_key: str | None, base_url: str | None, timeout: float) -> Any:
        key = api_key or os.environ.get(KEY_VARIABLE)
        if not key:
            raise ConfigError(
                f"The anthropic provider needs an API key: set {KEY_VARIABLE} in the "
                "environment (https://console.anthropic.com/settings/keys), or choose "
                "another provider with --api-provider."
            )
        if base_url is not None:
            # The SDK appends /v1/messages itself; a pasted ".../v1" would double it.
            base_url = base_url.rstrip("/").removesuffix("/v1")
        return load_sdk("anthropic").Anthropic(
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
        """The keyword arguments of `messages.create` for one call."""
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": to_anthropic_messages(messages),
        }
        if system:
            request["system"] = [{"type": "text", "text": system, "cache_control": EPHEMERAL}]
        if tools:
            request["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
            request["tools"][-1]["cache_control"] = EPHEMERAL
        if output_schema is not None:
            request["output_config"] = {
                "format": {"type": "json_schema", "schema": to_anthropic_schema(output_schema)}
            }
        if self.temperature is not None:
            # SDK 1.0 dropped sampling keywords from `create`; the API still takes them on
            # models that support sampling (newer ones answer 400), so only when asked for.
            request["extra_body"] = {"temperature": self.temperature}
        return request

    def create(self, request: dict[str, Any]) -> Any:
        return self._client.messages.create(**request)

    def parse_reply(self, response: Any) -> Reply:
        return reply_from_response(response, self.model)


# -- conversions ---------------------------------------------------------------------------------


def to_anthropic_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Neutral messages as Messages API turns, with a cache breakpoint on the last block.

    Consecutive tool results become one user turn of `tool_result` blocks (the API requires
    every result of one assistant turn in the next user turn, results first); a user message
    that directly follows them joins that turn as a text block after the results.
    """
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if not turn["content"]:
            turn["content"].append({"type": "text", "text": "(empty)"})
    if turns:
        turns[-1]["content"][-1]["cache_control"] = EPHEMERAL
    return turns


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            block["content"] = message.content
        block["is_error"] = message.is_error
        return [block]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        )
    return blocks


def reply_from_response(response: Any, model: str = "") -> Reply:
    """Text, tool calls, normalised stop reason and usage of a Messages API response."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in response.content or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            texts.append(block.text)
        elif kind == "tool_use":
            arguments = block.input
            if isinstance(arguments, dict):
                calls.append(ToolCall(block.id, block.name, dict(arguments)))
            else:
                calls.append(
                    ToolCall(
                        block.id,
                        block.name,
                        {},
                        arguments_error=f"tool input must be a JSON object, got {arguments!r}",
                    )
                )
    stop = response.stop_reason
    if stop in (None, "stop_sequence"):
        stop = END_TURN
    usage = response.usage
    return Reply(
        text="".join(texts),
        tool_calls=tuple(calls),
        stop_reason=str(stop),
        usage=Usage(
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            cache_read_tokens=_count(usage, "cache_read_input_tokens"),
            cache_write_tokens=_count(usage, "cache_creation_input_tokens"),
        ),
        model=getattr(response, "model", None) or model,
    )


def _count(usage: Any, name: str) -> int:
    return int(getattr(usage, name, None) or 0) if usage is not None else 0


def to_anthropic_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite a JSON Schema into the subset structured outputs accept.

    Every object gets `additionalProperties: false` (required by the API), `oneOf` becomes
    `anyOf`, and unsupported constraints (minimum, maxLength, pattern, ...) move into the
    description so the model still sees them; the caller validates the reply against the
    original schema anyway.
    """
    return _convert(copy.deepcopy(dict(schema)))


def _convert(node: Any) -> Any:
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    leftovers: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key == "oneOf":
            out["anyOf"] = _convert(value)
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf", "allOf"):
            out[key] = _convert(value)
        elif key == "additionalProperties":
            if value is not False:
                leftovers[key] = value
        elif _supported(key, value):
            out[key] = value
        else:
            leftovers[key] = value
    types = out.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        out.setdefault("properties", {})
        out["additionalProperties"] = False
    if leftovers:
        extra = "{" + ", ".join(f"{k}: {v}" for k, v in leftovers.items()) + "}"
        description = out.get("description")
        out["description"] = f"{description}\n\n{extra}" if description else extra
    return out


def _supported(key: str, value: Any) -> bool:
    if key == "minItems":
        return value in (0, 1)
    if key == "format":
        return value in _SUPPORTED_FORMATS
    if key == "enum":
        return isinstance(value, list) and all(
            v is None or isinstance(v, (str, int, float, bool)) for v in value
        )
    return key in _SUPPORTED_KEYWORDS
