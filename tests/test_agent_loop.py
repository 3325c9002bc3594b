"""The agent loop against scripted models and real temporary workspaces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agent_team.agent_loop import (
    CUT_OFF_REMINDER,
    NO_TOOL_CALL_REMINDER,
    SKIPPED_AFTER_FINISH,
    AgentHooks,
    run_agent,
)
from agent_team.errors import MaxTurnsExceeded, UsageLimitExceeded
from agent_team.models import Message, Reply, ToolCall, Usage
from agent_team.scripted import ScriptedModel
from agent_team.toolbox import Toolbox, ToolResult
from agent_team.tools import Workspace, build_toolbox

FINISH = {"name": "finish_task", "arguments": {"status": "completed", "summary": "Done."}}


def write(path: str, content: str) -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def toolbox(root: Path) -> Toolbox:
    return build_toolbox(Workspace(root))


def tool_messages(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role == "tool"]


def test_write_then_finish(root: Path, toolbox: Toolbox) -> None:
    model = ScriptedModel(
        [
            {
                "tool_calls": [write("hello.py", "print('hi')\n")],
                "usage": {"input_tokens": 100, "output_tokens": 20},
            },
            {
                "tool_calls": [FINISH],
                "usage": {"input_tokens": 150, "output_tokens": 10, "cache_read_tokens": 80},
            },
        ]
    )
    result = run_agent(model, "You are a developer.", "Create hello.py.", toolbox)
    assert (root / "hello.py").read_text() == "print('hi')\n"
    assert result.report["status"] == "completed" and result.report["summary"] == "Done."
    assert result.turns == 2 and result.tool_calls == 2
    assert result.usage == Usage(250, 30, 80, 0)
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant", "tool"]
    first = model.calls[0]
    assert first.system == "You are a developer."
    assert first.messages == (Message.user("Create hello.py."),)
    assert "finish_task" in first.tool_names and "run_command" in first.tool_names
    model.assert_complete()


def test_tool_error_goes_back_and_loop_continues(root: Path, toolbox: Toolbox) -> None:
    model = ScriptedModel(
        [
            {"tool_calls": [{"name": "read_file", "arguments": {"path": "../../etc/passwd"}}]},
            {"tool_calls": [{"name": "frobnicate", "arguments": {}}]},
            {"tool_calls": [write("ok.txt", "fine")]},
            {"tool_calls": [FINISH]},
        ]
    )
    result = run_agent(model, "sys", "task", toolbox)
    tools = tool_messages(result.messages)
    assert [m.is_error for m in tools] == [True, True, False, False]
    assert "outside the workspace" in tools[0].content
    assert "no tool named 'frobnicate'" in tools[1].content
    assert model.calls[1].messages[-1].is_error  # the model saw the error result
    assert (root / "ok.txt").read_text() == "fine"
    assert result.turns == 4


def test_invalid_report_corrected_on_next_turn(toolbox: Toolbox) -> None:
    model = ScriptedModel(
        [
            {"tool_calls": [{"name": "finish_task", "arguments": {"status": "done"}}]},
            {
                "tool_calls": [
                    {
                        "name": "finish_task",
                        "arguments": {
                            "status": "blocked",
                            "summary": "Needs a database.",
                            "blockers": ["no DB"],
                        },
                    }
                ]
            },
        ]
    )
    result = run_agent(model, "sys", "task", toolbox)
    rejected = model.calls[1].messages[-1]
    assert rejected.role == "tool" and rejected.is_error
    assert "'summary' is a required property" in rejected.content
    assert result.turns == 2
    assert result.report["status"] == "blocked" and result.report["blockers"] == ["no DB"]


def test_text_only_reply_gets_reminder(toolbox: Toolbox) -> None:
    model = ScriptedModel(
        [
            {"text": "I would create the file like this..."},
            {"text": "def very_long(", "stop_reason": "max_tokens"},
            {"tool_calls": [FINISH]},
        ]
    )
    result = run_agent(model, "sys", "task", toolbox)
    assert result.turns == 3 and result.tool_calls == 1
    assert model.calls[1].messages[-1] == Message.user(NO_TOOL_CALL_REMINDER)
    assert model.calls[2].messages[-1] == Message.user(CUT_OFF_REMINDER)
    assert "finish_task" in NO_TOOL_CALL_REMINDER and "smaller" in CUT_OFF_REMINDER


def test_max_turns_exceeded(toolbox: Toolbox) -> None:
    model = ScriptedModel([{"text": "thinking"}] * 3)
    with pytest.raises(MaxTurnsExceeded) as caught:
        run_agent(model, "sys", "task", toolbox, max_turns=3)
    assert caught.value.turns == 3 and "3 turns" in str(caught.value)
    model.assert_complete()


def test_calls_after_finish_are_not_run(root: Path, toolbox: Toolbox) -> None:
    model = ScriptedModel([{"tool_calls": [write("a.txt", "a"), FINISH, write("b.txt", "b")]}])
    result = run_agent(model, "sys", "task", toolbox)
    assert (root / "a.txt").exists() and not (root / "b.txt").exists()
    last = result.messages[-1]
    assert last.is_error and last.content == SKIPPED_AFTER_FINISH
    assert result.tool_calls == 2


class Recorder(AgentHooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def extra_messages(self, turn: int) -> list[Message]:
        self.events.append(("extra", turn))
        return [Message.user("Guidance: finish now.")] if turn == 2 else []

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.events.append(("before", turn, len(messages)))

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.events.append(("after_model", turn, reply.usage.input_tokens))

    def after_tool_call(self, turn: int, call: ToolCall, result: ToolResult) -> None:
        self.events.append(("after_tool", turn, call.name, result.is_error))


def test_hooks_called_in_order(toolbox: Toolbox) -> None:
    model = ScriptedModel(
        [
            {
                "tool_calls": [write("a.txt", "a"), {"name": "nope", "arguments": {}}],
                "usage": {"input_tokens": 7},
            },
            {"tool_calls": [FINISH], "usage": {"input_tokens": 9}},
        ]
    )
    hooks = Recorder()
    run_agent(model, "sys", "task", toolbox, hooks=hooks)
    assert hooks.events == [
        ("extra", 1),
        ("before", 1, 1),
        ("after_model", 1, 7),
        ("after_tool", 1, "write_file", False),
        ("after_tool", 1, "nope", True),
        ("extra", 2),
        ("before", 2, 5),
        ("after_model", 2, 9),
        ("after_tool", 2, "finish_task", False),
    ]
    assert model.calls[1].messages[-1] == Message.user("Guidance: finish now.")


def test_before_model_call_can_stop_before_spending(toolbox: Toolbox) -> None:
    class Budget(AgentHooks):
        def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
            if turn == 2:
                raise UsageLimitExceeded("token budget spent", limit="tokens")

    model = ScriptedModel([{"tool_calls": [write("a.txt", "a")]}, {"tool_calls": [FINISH]}])
    with pytest.raises(UsageLimitExceeded):
        run_agent(model, "sys", "task", toolbox, hooks=Budget())
    assert len(model.calls) == 1
