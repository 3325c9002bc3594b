"""The model interface: one method, provider-neutral messages, a small Reply back.

Adapters live in their own modules (`anthropic_model`, `openai_model`, `scripted`) and are
imported lazily, so a user of one provider never needs the other's SDK.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True)
class Usage:
    """Token counts exactly as the provider reported them for one or more calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def total_tokens(self) -> int:
        """All tokens billed in some way: fresh input, cached input (read and write), output."""
        return (
            self.input_tokens + self.output_tokens + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Usage:
        data = data or {}
        return cls(
            int(data.get("input_tokens") or 0),
            int(data.get("output_tokens") or 0),
            int(data.get("cache_read_tokens") or 0),
            int(data.get("cache_write_tokens") or 0),
        )


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked to run.

    `arguments_error` is set when the provider sent arguments that are not a JSON object; the
    agent loop returns that error to the model instead of running the tool.
    """

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    arguments_error: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description and a JSON Schema for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One conversation entry in a provider-neutral shape.

    user: `content`. assistant: `content` and optional `tool_calls`. tool: the result of one
    tool call, `tool_call_id`, `name`, `content` and `is_error`.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
        return cls("assistant", text, tuple(tool_calls))

    @classmethod
    def tool(cls, call: ToolCall, content: str, *, is_error: bool = False) -> Message:
        return cls("tool", content, tool_call_id=call.id, name=call.name, is_error=is_error)


# Normalised stop reasons; adapters map provider values onto these and pass others through.
END_TURN = "end_turn"
TOOL_USE = "tool_use"
MAX_TOKENS = "max_tokens"


@dataclass(frozen=True)
class Reply:
    """What a model returned for one request."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: str = END_TURN
    usage: Usage = field(default_factory=Usage)
    model: str = ""


class ChatModel(ABC):
    """A chat model with tool use. Implementations must be safe to call from several threads."""

    #: Provider name used in reports and price look-ups ("anthropic", "openai", "scripted").
    provider: str = "unknown"
    #: The model identifier sent to the provider.
    model: str = ""

    @abstractmethod
    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        *,
        tools: Sequence[ToolSpec] = (),
        output_schema: Mapping[str, Any] | None = None,
        key: str | None = None,
    ) -> Reply:
        """Send one request and return the reply.

        Args:
            system: The system prompt.
            messages: The conversation so far, oldest first.
            tools: Tools the model may call.
            output_schema: When given, the reply text must be JSON matching this schema.
            key: Which conversation this is, `role:task` or `role` (see `agent_key`). Real
                providers ignore it; the scripted model replays that conversation's turns, so
                parallel agents stay deterministic.
        """


def agent_key(role: str | None, task_id: str | None = None) -> str:
    """The conversation key of an agent: `role:task`, `role`, or `*` for anyone."""
    if role is None:
        return "*"
    return f"{role}:{task_id}" if task_id is not None else role


def split_key(key: str | None) -> tuple[str | None, str | None]:
    """(role, task) of a conversation key; role names and task ids never contain ':'."""
    if key is None or key == "*":
        return None, None
    role, _, task_id = key.partition(":")
    return role, task_id or None


PROVIDERS = ("anthropic", "openai", "scripted")
KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
#: Provider -> (module, class) of its adapter, imported only when chosen.
ADAPTERS = {
    "anthropic": ("anthropic_model", "AnthropicModel"),
    "openai": ("openai_model", "OpenAIModel"),
}
DEFAULT_MODELS = {
    "anthropic": "claude-sonnet-5-5",
    "openai": "gpt-6.1-sol",
    "scripted": "scripted",
}


def detect_provider(environ: Mapping[str, str] | None = None) -> str | None:
    """Choose a provider from which API key is set (Anthropic first), or None."""
    environ = os.environ if environ is None else environ
    for provider, variable in KEY_VARIABLES.items():
        if environ.get(variable):
            return provider
    if environ.get("OPENAI_BASE_URL"):
        return "openai"
    return None


def create_model(
    provider: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    session: str | os.PathLike[str] | None = None,
    max_tokens: int = 8000,
    temperature: float | None = None,
    retry: Mapping[str, float] | None = None,
    timeout: float | None = None,
    on_retry: Callable[[int, float, Exception], None] | None = None,
) -> ChatModel:
    """Build a model adapter by provider name, importing its SDK only now.

    `retry` uses the config file's shape (max_retries, base_delay_seconds, ...).
    """
    if provider == "scripted":
        if session is None:
            raise ConfigError(
                "The scripted provider replays a session file, but none was given. "
                "Pass --session FILE (see examples/sessions/) or use --demo."
            )
        from .scripted import ScriptedModel

        return ScriptedModel.from_file(Path(session))
    if provider in ADAPTERS:
        return _adapter(provider)(
            model=model or DEFAULT_MODELS[provider],
            base_url=base_url,
            max_tokens=max_tokens,
            temperature=temperature,
            retry=_retry_policy(retry),
            on_retry=on_retry,
            **({"timeout": timeout} if timeout else {}),
        )
    raise ConfigError(
        f"Unknown API provider {provider!r}. Choose one of: {', '.join(PROVIDERS)}."
    )


def _adapter(provider: str) -> Any:
    """The adapter class of a real provider; its module loads the SDK only when it is used."""
    module_name, class_name = ADAPTERS[provider]
    try:
        module = importlib.import_module(f".{module_name}", __package__)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from .sdk_call import missing_sdk

        raise missing_sdk(provider, exc) from exc
    return getattr(module, class_name)


def _retry_policy(settings: Mapping[str, float] | None) -> Any:
    from .retry import DEFAULT_RETRY, RetryPolicy

    if not settings:
        return DEFAULT_RETRY
    return RetryPolicy(
        max_retries=int(settings.get("max_retries", DEFAULT_RETRY.max_retries)),
        base_delay=float(settings.get("base_delay_seconds", DEFAULT_RETRY.base_delay)),
        max_delay=float(settings.get("max_delay_seconds", DEFAULT_RETRY.max_delay)),
        retry_after_ceiling=float(
            settings.get("retry_after_ceiling_seconds", DEFAULT_RETRY.retry_after_ceiling)
        ),
    )
