"""Stuck detection end to end: scripted agents in real temporary workspaces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from agent_team.agent_loop import AgentHooks, run_agent
from agent_team.errors import AgentStuck, AgentTeamError
from agent_team.models import Message, Reply, ToolCall
from agent_team.scripted import ScriptedModel
from agent_team.stuck import (
    StuckDetector,
    StuckEscalation,
    StuckHooks,
    call_signature,
    guidance_prompt,
    nudge_message,
)
from agent_team.toolbox import Toolbox, ToolResult
from agent_team.tools import Workspace, build_toolbox

FINISH = {"name": "finish_task", "arguments": {"status": "completed", "summary": "Done."}}
READ_A = {"name": "read_file", "arguments": {"path": "a.py"}}


def turn(*calls: dict[str, Any], text: str = "") -> dict[str, Any]:
    return {"text": text, "tool_calls": list(calls)}


def write(path: str, content: str = "x = 1\n") -> dict[str, Any]:
    return {"name": "write_file", "arguments": {"path": path, "content": content}}


def listing(path: str) -> dict[str, Any]:
    return {"name": "list_files", "arguments": {"path": path}}


def nudges(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if m.role == "user" and "seem to be stuck" in m.content]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    (path / "a.py").write_text("print('a')\n")
    for i in range(8):
        (path / f"d{i}").mkdir()
    return path


@pytest.fixture
def toolbox(root: Path) -> Toolbox:
    return build_toolbox(Workspace(root))


class Recorder(AgentHooks):
    """Inner hooks that log every call and add one message of their own on turn 1."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def extra_messages(self, turn: int) -> list[Message]:
        self.log.append(("extra", turn))
        return [Message.user("Guidance from the manager.")] if turn == 1 else []

    def before_model_call(self, turn: int, messages: Sequence[Message]) -> None:
        self.log.append(("before", turn))

    def after_model_call(self, turn: int, reply: Reply) -> None:
        self.log.append(("reply", turn, reply.text))

    def after_tool_call(self, turn: int, call: ToolCall, result: ToolResult) -> None:
        self.log.append(("tool", turn, call.name, result.is_error))


def run(toolbox: Toolbox, turns: list[dict[str, Any]], **kwargs: Any) -> tuple[
    ScriptedModel, StuckHooks, list[tuple[str, str]], Any
]:
    """Run the script through StuckHooks; return the model, hooks, events and result/error."""
    model = ScriptedModel(turns)
    events: list[tuple[str, str]] = []
    hooks = StuckHooks(kwargs.pop("inner", None), StuckDetector(**kwargs),
                       on_stuck=lambda action, reason: events.append((action, reason)))
    try:
        outcome: Any = run_agent(model, "sys", "task", toolbox, max_turns=30, hooks=hooks)
    except AgentStuck as exc:
        outcome = exc
    return model, hooks, events, outcome


def test_repeated_read_is_nudged_then_escalated(toolbox: Toolbox) -> None:
    model, hooks, events, outcome = run(toolbox, [turn(READ_A)] * 6)
    assert not nudges(model.calls[2].messages)
    assert nudges(model.calls[3].messages) == [model.calls[3].messages[-1].content]
    assert 'read_file {"path": "a.py"} was called 3 times' in model.calls[3].messages[-1].content
    assert isinstance(outcome, StuckEscalation) and len(model.calls) == 6
    assert "read_file" in outcome.reason and '"path": "a.py"' in outcome.reason
    assert outcome.reason in str(outcome) and isinstance(outcome, AgentTeamError)
    assert outcome.transcript_tail[-1].startswith("turn 6 called read_file")
    assert [action for action, _ in events] == ["nudge", "escalate"]
    assert events[1][1] == outcome.reason and hooks.nudged


def test_repeats_inside_one_reply_and_key_order_count(toolbox: Toolbox) -> None:
    swapped = {"name": "read_file", "arguments": {"offset": 1, "path": "a.py"}}
    same = {"name": "read_file", "arguments": {"path": "a.py", "offset": 1}}
    script = [turn(listing("d0")), turn(same, swapped, same, same), turn(FINISH)]
    model, _, events, outcome = run(toolbox, script, idle_turns=2)
    assert outcome.report["status"] == "completed"
    assert [action for action, _ in events] == ["nudge"]
    assert len(nudges(model.calls[2].messages)) == 1
    assert "was called 3 times in a row" in events[0][1]


def test_same_text_is_nudged_then_escalated(toolbox: Toolbox) -> None:
    texts = ["I will fix it now.", "I will  fix it\nnow.", " I will fix it now. "] * 2
    model, _, events, outcome = run(toolbox, [{"text": t} for t in texts])
    assert not nudges(model.calls[2].messages)
    assert "same reply text came 3 times" in nudges(model.calls[3].messages)[0]
    assert isinstance(outcome, StuckEscalation) and len(model.calls) == 6
    assert '"I will fix it now."' in outcome.reason
    assert outcome.transcript_tail[-1] == "turn 6 said: I will fix it now."
    assert [action for action, _ in events] == ["nudge", "escalate"]


def test_idle_turns_are_nudged_and_a_write_recovers(root: Path, toolbox: Toolbox) -> None:
    script = [turn(listing(f"d{i}")) for i in range(8)] + [turn(write("b.py")), turn(FINISH)]
    model, _, events, outcome = run(toolbox, script)
    assert not any(nudges(call.messages) for call in model.calls[:8])
    assert "8 turns went by without a file change" in model.calls[8].messages[-1].content
    assert outcome.report["status"] == "completed" and outcome.turns == 10
    assert len(nudges(outcome.messages)) == 1 and (root / "b.py").exists()
    assert [action for action, _ in events] == ["nudge"]


def test_idle_after_a_nudge_escalates(toolbox: Toolbox) -> None:
    script = [turn(listing(f"d{i % 8}"), text=f"Looking {i}.") for i in range(8)]
    model, _, events, outcome = run(toolbox, script, idle_turns=4)
    assert isinstance(outcome, StuckEscalation) and len(model.calls) == 8
    assert outcome.reason.startswith("4 turns went by without a file change")
    assert len(outcome.transcript_tail) == 8
    assert outcome.transcript_tail[0] == "turn 5 said: Looking 4."
    assert [action for action, _ in events] == ["nudge", "escalate"]


def test_productive_agent_never_triggers(root: Path, toolbox: Toolbox) -> None:
    edit = {"name": "edit_file", "arguments": {"path": "a.py", "old": "b", "new": "c"}}
    script = [turn(READ_A, text="Next step."), turn(READ_A, text="Next step.")]
    script += [turn(write("a.py", "print('b')\n"), text="Next step.")]
    script += [turn(listing(f"d{i}"), text=f"Looking at d{i}.") for i in range(7)]
    script += [turn(edit, text="Writing."), turn(write("c.py"), text="Writing.")]
    script += [turn(READ_A, listing("."), READ_A, text="Writing."), turn(write("d.py"))]
    script += [turn({"name": "run_command", "arguments": {"command": "echo hi"}}), turn(FINISH)]
    model, hooks, events, outcome = run(toolbox, script)
    assert outcome.report["status"] == "completed" and outcome.turns == len(script)
    assert events == [] and not hooks.nudged and not nudges(outcome.messages)
    assert (root / "a.py").read_text() == "print('c')\n" and (root / "d.py").exists()
    model.assert_complete()


def test_same_text_while_writing_is_not_a_repeat(toolbox: Toolbox) -> None:
    script = [turn(write(f"f{i}.py"), text="Continuing.") for i in range(5)] + [turn(FINISH)]
    _, _, events, outcome = run(toolbox, script)
    assert outcome.report["status"] == "completed" and events == []


def test_failed_edits_do_not_count_as_changes(toolbox: Toolbox) -> None:
    bad = {"name": "edit_file", "arguments": {"path": "a.py", "old": "nope", "new": "x"}}
    other = {"name": "edit_file", "arguments": {"path": "a.py", "old": "zzz", "new": "x"}}
    script = [turn(bad), turn(other), turn(bad), turn(FINISH)]
    model, _, events, outcome = run(toolbox, script, idle_turns=3)
    assert outcome.report["status"] == "completed"
    assert "3 turns went by without a file change" in nudges(model.calls[3].messages)[0]


def test_finish_after_a_nudge_completes(toolbox: Toolbox) -> None:
    model, _, events, outcome = run(toolbox, [turn(READ_A)] * 3 + [turn(FINISH)])
    assert (outcome.report["status"], outcome.report["summary"]) == ("completed", "Done.")
    assert len(nudges(model.calls[3].messages)) == 1
    assert [action for action, _ in events] == ["nudge"]


def test_finish_in_the_repeating_reply_is_not_interrupted(toolbox: Toolbox) -> None:
    _, _, events, outcome = run(toolbox, [turn(READ_A), turn(READ_A), turn(READ_A, FINISH)])
    assert outcome.report["status"] == "completed" and events == []


def test_finish_attempts_neither_count_nor_reset_idle(toolbox: Toolbox) -> None:
    invalid = {"name": "finish_task", "arguments": {"status": "completed"}}
    script = [turn(listing("d0")), turn(invalid), turn(listing("d1")), turn(invalid)]
    _, _, events, outcome = run(toolbox, [*script, turn(FINISH)], idle_turns=3)
    assert outcome.report["status"] == "completed" and events == []
    model, _, events, outcome = run(toolbox, [*script, turn(listing("d2")), turn(FINISH)],
                                    idle_turns=3)
    assert outcome.report["status"] == "completed"
    assert [action for action, _ in events] == ["nudge"] and nudges(model.calls[5].messages)


def test_inner_hooks_see_every_call(toolbox: Toolbox) -> None:
    script = [turn(READ_A, text="Reading.")] * 3 + [turn(write("b.py"), FINISH, text="Done.")]
    plain, stuck = Recorder(), Recorder()
    run_agent(ScriptedModel(script), "sys", "task", toolbox, hooks=plain)
    model, _, events, outcome = run(toolbox, script, inner=stuck)
    assert stuck.log == plain.log and len(stuck.log) == 4 * 3 + 5
    first = model.calls[0].messages
    assert first[-1] == Message.user("Guidance from the manager.")
    assert nudges(model.calls[3].messages) and outcome.report["status"] == "completed"


def test_inner_hooks_see_the_calls_before_an_escalation(toolbox: Toolbox) -> None:
    inner = Recorder()
    model, _, _, outcome = run(toolbox, [turn(READ_A)] * 6, inner=inner)
    assert isinstance(outcome, StuckEscalation)
    assert [entry for entry in inner.log if entry[0] == "tool"] == [
        ("tool", n, "read_file", False) for n in range(1, 7)
    ]
    assert ("extra", 7) in inner.log and ("before", 7) not in inner.log


def test_defaults_and_limits() -> None:
    hooks = StuckHooks()
    assert hooks.detector.repeat_limit == 3 and hooks.detector.idle_turns == 8
    assert hooks.extra_messages(1) == []
    with pytest.raises(ValueError):
        StuckDetector(repeat_limit=1)
    broken = ToolCall("1", "read_file", {}, arguments_error="not JSON")
    assert call_signature(broken) == "read_file <invalid arguments: not JSON>"
    assert "finish_task" in nudge_message("x was called 3 times")


def test_guidance_prompt_names_the_task_the_loop_and_the_steps() -> None:
    error = StuckEscalation("x was called 3 times", ["turn 1 called x {}", "turn 2 said: hm"])
    prompt = guidance_prompt("TASK-001 - add login", error)
    assert "TASK-001 - add login" in prompt and "x was called 3 times" in prompt
    assert "- turn 1 called x {}\n- turn 2 said: hm" in prompt
    assert "(none recorded)" in guidance_prompt("t", StuckEscalation("r"))
