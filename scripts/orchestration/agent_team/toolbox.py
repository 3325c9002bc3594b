"""The tool contract of role agents: what a tool is, and the Toolbox that calls them safely.

Every tool returns a `ToolResult`; nothing a model sends can raise out of `Toolbox.call`,
because a bad call is the model's mistake to fix on its next turn, not a crash of the run.
Arguments are checked against each tool's JSON Schema first, and every result is capped, since
every turn re-sends all earlier tool output. The default tools themselves live in `tools.py`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from jsonschema import Draft202012Validator

from .errors import AgentTeamError, ConfigError, ToolError
from .models import ToolCall, ToolSpec

__all__ = [
    "DEFAULT_MAX_OUTPUT_CHARS",
    "Handler",
    "Tool",
    "ToolResult",
    "Toolbox",
    "cap_text",
    "define_tool",
    "schema_errors",
]

DEFAULT_MAX_OUTPUT_CHARS = 12_000

Handler = Callable[..., "str | ToolResult"]


@dataclass(frozen=True)
class ToolResult:
    """What one tool call produced; `finished` and `report` are set only by finish_task."""

    content: str
    is_error: bool
    finished: bool = False
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class Tool:
    """A spec and the function that runs it.

    `validate=False` skips argument validation against the spec, for tools that validate
    (and normalise) their own arguments.
    """

    spec: ToolSpec
    handler: Handler
    validate: bool = True


def define_tool(
    name: str,
    description: str,
    properties: Mapping[str, Any],
    handler: Handler,
    *,
    required: Sequence[str] = (),
) -> Tool:
    """Build a Tool whose parameters are an object refusing unknown arguments."""
    parameters = {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }
    return Tool(ToolSpec(name, description, parameters), handler)


def cap_text(text: str, limit: int) -> str:
    """Keep the head and tail of a long text: every turn re-sends all earlier tool output."""
    if len(text) <= limit:
        return text
    keep = max(limit - 80, 2)
    head, tail = keep // 2, keep - keep // 2
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut:,} characters cut from the middle ...]\n{text[-tail:]}"


def schema_errors(validator: Draft202012Validator, instance: Any) -> list[str]:
    """Up to ten violations as `path: message` lines, in a stable order a model can act on."""
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(arguments)'}: {error.message}"
        for error in errors[:10]
    ]


def _describe_parameters(spec: ToolSpec) -> str:
    required = set(spec.parameters.get("required", ()))
    fields = [
        f"{name} ({schema.get('type', 'any')}{', required' if name in required else ''})"
        for name, schema in spec.parameters.get("properties", {}).items()
    ]
    return f"Parameters of {spec.name}: {', '.join(fields) or 'none'}."


@functools.lru_cache(maxsize=512)
def _check_schema_text(text: str) -> None:
    Draft202012Validator.check_schema(json.loads(text))


def _check_schema(parameters: Mapping[str, Any]) -> None:
    """Check a tool's parameter schema once per distinct schema, not once per toolbox.

    Every task builds its toolbox anew; checking the same dozen schemas against the
    metaschema each time cost 15-20 ms per task.
    """
    try:
        text = json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError):
        Draft202012Validator.check_schema(parameters)  # let jsonschema say what is wrong
        return
    _check_schema_text(text)


class Toolbox:
    """The tools one agent may call; turns every failure into an error result."""

    def __init__(
        self, tools: Iterable[Tool] = (), *, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
    ) -> None:
        self.max_output_chars = max_output_chars
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        """Register a tool; a duplicate name or a broken schema is a programming error."""
        name = tool.spec.name
        if name in self._tools:
            raise ValueError(f"A tool named {name!r} is already registered.")
        _check_schema(tool.spec.parameters)
        self._tools[name] = tool
        self._validators[name] = Draft202012Validator(tool.spec.parameters)

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(tool.spec for tool in self._tools.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def select(self, names: Iterable[str]) -> Toolbox:
        """A toolbox with only the named tools, for roles that get a subset."""
        names = list(names)
        unknown = [name for name in names if name not in self._tools]
        if unknown:
            raise ConfigError(
                f"Unknown tool name(s): {', '.join(unknown)}. Available: {', '.join(self._tools)}."
            )
        return Toolbox((self._tools[n] for n in names), max_output_chars=self.max_output_chars)

    def call(self, call: ToolCall) -> ToolResult:
        """Run one call; errors in the call or the tool come back as is_error results.

        Engine errors other than ToolError (a budget or state failure raised by an injected
        callback) propagate: they stop the run rather than the tool.
        """
        result = self._dispatch(call)
        return replace(result, content=cap_text(result.content, self.max_output_chars))

    def _dispatch(self, call: ToolCall) -> ToolResult:
        tool = self._tools.get(call.name)
        if tool is None:
            return ToolResult(
                f"There is no tool named {call.name!r}. Available tools: {', '.join(self._tools)}.",
                is_error=True,
            )
        if call.arguments_error is not None or not isinstance(call.arguments, dict):
            return ToolResult(
                f"The arguments for {call.name} were not a JSON object "
                f"({call.arguments_error or type(call.arguments).__name__}). Call it again "
                f"with a JSON object. {_describe_parameters(tool.spec)}",
                is_error=True,
            )
        if tool.validate:
            problems = schema_errors(self._validators[call.name], call.arguments)
            if problems:
                return ToolResult(
                    f"Invalid arguments for {call.name}:\n- "
                    + "\n- ".join(problems)
                    + f"\n{_describe_parameters(tool.spec)}",
                    is_error=True,
                )
        try:
            outcome = tool.handler(**call.arguments)
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        except AgentTeamError:
            raise
        except Exception as exc:
            return ToolResult(
                f"{call.name} failed unexpectedly: {type(exc).__name__}: {exc}", is_error=True
            )
        return outcome if isinstance(outcome, ToolResult) else ToolResult(str(outcome), False)
