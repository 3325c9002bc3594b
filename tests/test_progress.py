"""The progress display: plain lines, the live block (rich), throttling, many threads at once."""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Any

import pytest
from agent_team.events import EventLog
from agent_team.progress import ProgressDisplay, format_tokens

ANSI = re.compile(r"\x1b\[(\??)(\d*)([A-Za-z])")
USAGE = {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 300,
         "cache_write_tokens": 0}


class Screen:
    """Just enough of a terminal to check what a person would see: \\r, \\n, and the control
    sequences rich's live display writes (cursor up, erase line, erase down, cursor on/off).
    Any other sequence fails the test: it would be garbage on a real terminal too."""

    def __init__(self) -> None:
        self.lines: list[str] = [""]
        self.row = self.col = 0

    def feed(self, data: str) -> Screen:
        position = 0
        for match in ANSI.finditer(data):
            self._text(data[position:match.start()])
            private, number, command = match.groups()
            count = int(number or 1)
            if private:
                assert (number, command) in (("25", "l"), ("25", "h")), match.group()
            elif command == "A":
                self.row = max(0, self.row - count)
            elif command == "K":
                assert number == "2", match.group()
                self.lines[self.row] = ""
            elif command == "J":
                self.lines[self.row] = self.lines[self.row][: self.col]
                del self.lines[self.row + 1:]
            else:
                raise AssertionError(f"unexpected control sequence {match.group()!r}")
            position = match.end()
        self._text(data[position:])
        assert "\x1b" not in data[position:]
        return self

    def _text(self, text: str) -> None:
        for char in text:
            if char == "\n":
                self.row, self.col = self.row + 1, 0
                while len(self.lines) <= self.row:
                    self.lines.append("")
            elif char == "\r":
                self.col = 0
            else:
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + char + line[self.col + 1:]
                self.col += 1

    @property
    def text(self) -> list[str]:
        return [line for line in self.lines if line]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"ts": "2025-01-01T00:00:00.000Z", "run_id": "r", "seq": 0, "kind": kind, **fields}


def model_call(role: str, task_id: str | None, turn: int, **extra: Any) -> dict[str, Any]:
    return ev("model_call", role=role, task_id=task_id, turn=turn, usage=USAGE,
              stop_reason="tool_use", duration_s=1.25, model="claude-test", **extra)


NOTABLE = [
    ev("log", message="Calling manager for a plan (attempt 1/3)..."),
    ev("plan_accepted", tasks=2, task_ids=["TASK-001", "TASK-002"]),
    ev("task_status", task_id="TASK-001", status="in_progress", role="backend-dev", error=None),
    model_call("backend-dev", "TASK-001", 1),
    ev("tool_call", role="backend-dev", task_id="TASK-001", turn=1, tool="read_file",
       is_error=False),
    ev("stuck", role="backend-dev", task_id="TASK-001", action="nudge",
       reason="read_file repeated 3 times"),
    ev("merge", task_id="TASK-001", status="conflict_resolved", conflicts=["todo/cli.py"]),
    ev("task_status", task_id="TASK-001", status="completed", error=None),
    ev("test_run", command="pytest -q", exit_code=0, passed=12, failed=0),
    ev("budget_stop", limit="token_budget", value=510000, maximum=500000),
]


def test_plain_mode_prints_one_line_per_notable_event_and_no_ansi() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=False)
    for event in NOTABLE:
        display(event)
    display.write_line("[Orchestrator] Report written")
    display.close()

    assert "\x1b" not in stream.getvalue()
    assert stream.getvalue().splitlines() == [
        "[Orchestrator] Calling manager for a plan (attempt 1/3)...",
        "[TASK-001] in_progress (backend-dev)",
        "[stuck] backend-dev@TASK-001: nudge (read_file repeated 3 times)",
        "[merge] TASK-001: conflict_resolved (conflicts: todo/cli.py)",
        "[TASK-001] completed",
        "[tests] exit 0: 12 passed, 0 failed (pytest -q)",
        "[budget] stopped: token_budget reached 510000 of 500000",
        "[Orchestrator] Report written",
    ]


def test_verbose_plain_mode_adds_model_and_tool_calls() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=False, verbose=True)
    for event in NOTABLE[3:5]:
        display(event)
    display(ev("tool_call", role="qa-tester", task_id="TASK-002", turn=4, tool="run_command",
               is_error=True))
    assert stream.getvalue().splitlines() == [
        "[backend-dev@TASK-001] turn 1: 1.5k tokens, tool_use, 1.2s",
        "[backend-dev@TASK-001] turn 1: read_file",
        "[qa-tester@TASK-002] turn 4: run_command (error)",
    ]


def test_live_block_shows_each_agent_and_the_totals() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=True, refresh_seconds=0, width=200)
    display(ev("plan_accepted", tasks=3, task_ids=["TASK-001", "TASK-002", "TASK-003"]))
    display(ev("task_status", task_id="TASK-001", status="in_progress", role="backend-dev"))
    display(model_call("backend-dev", "TASK-001", 3, cost_usd=0.25))
    display(ev("tool_call", role="backend-dev", task_id="TASK-001", turn=3, tool="edit_file"))
    display(model_call("frontend-dev", "TASK-002", 1, cost_usd=0.5))
    display.write_line("[Orchestrator] a permanent line")

    output = stream.getvalue()
    assert "\x1b[" in output
    screen = Screen().feed(output).text
    assert screen[:2] == ["[TASK-001] in_progress (backend-dev)",
                          "[Orchestrator] a permanent line"]
    block = screen[2:]
    assert len(block) == 3
    assert block[0].split() == ["backend-dev", "TASK-001", "turn", "3", "edit_file", "1.5k",
                                "tokens"]
    assert block[1].split()[:4] == ["frontend-dev", "TASK-002", "turn", "1"]
    assert block[2] == "Tasks 0/3 done | 2 API calls | 3.0k tokens | $0.75"

    display(ev("task_status", task_id="TASK-001", status="completed"))
    display(ev("task_status", task_id="TASK-002", status="failed", error="tests fail"))
    display.close()
    screen = Screen().feed(stream.getvalue()).text
    assert screen[-3:] == ["[TASK-001] completed", "[TASK-002] failed: tests fail",
                           "Tasks 1/3 done, 1 failed | 2 API calls | 3.0k tokens | $0.75"]


def test_live_redraws_are_throttled_except_for_task_changes() -> None:
    clock = Clock()
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=True, refresh_seconds=2.0, clock=clock, width=120)

    def block() -> list[str]:
        return Screen().feed(stream.getvalue()).text

    display(model_call("dev", "T-1", 1))
    assert display.redraws == 1  # the first event draws at once
    clock.now += 0.5
    display(model_call("dev", "T-1", 2))
    display(ev("tool_call", role="dev", task_id="T-1", turn=2, tool="write_file"))
    display.refresh()
    assert display.redraws == 1 and "turn 1" in block()[0]
    clock.now += 1.6
    display(model_call("dev", "T-1", 3))
    assert display.redraws == 2
    assert "turn 3" in block()[0] and "write_file" in block()[0]
    clock.now += 0.1
    display(ev("plan_accepted", tasks=1, task_ids=["T-1"]))
    assert display.redraws == 3  # task changes are shown at once
    assert block()[-1].startswith("Tasks 0/1 done")
    clock.now += 0.1
    display(ev("tool_call", role="dev", task_id="T-1", turn=3, tool="run_command"))
    assert "run_command" not in block()[0]
    clock.now += 2.0
    display.refresh()
    assert display.redraws == 4 and "run_command" in block()[0]
    display.refresh()
    assert display.redraws == 4  # nothing new to show
    display.close()


def test_the_ticker_shows_a_throttled_change_without_a_new_event() -> None:
    stream = io.StringIO()
    with ProgressDisplay(stream, live=True, refresh_seconds=0.05, width=120) as display:
        display(model_call("dev", "T-1", 1))
        display(ev("tool_call", role="dev", task_id="T-1", turn=1, tool="grep_files"))
        deadline = time.monotonic() + 3
        while "grep_files" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "grep_files" in stream.getvalue()


def test_live_lines_are_cut_to_the_terminal_width() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=True, refresh_seconds=0, width=40)
    display(model_call("a-very-long-custom-role-name", "TASK-WITH-A-LONG-ID", 1))
    display.close()
    screen = Screen().feed(stream.getvalue()).text
    assert screen and all(len(line) <= 40 for line in screen)
    assert screen[0].startswith("  a-very-long-custom-role-name")  # cropped, not wrapped
    assert len(screen) == 2


def test_lines_before_the_run_starts_print_without_a_block() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=True)
    display.write_line("[Orchestrator] Demo project: /tmp/x")
    display(ev("log", message="Pruned worktree record"))
    assert stream.getvalue() == (
        "[Orchestrator] Demo project: /tmp/x\n[Orchestrator] Pruned worktree record\n")
    display.close()


def test_mode_follows_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert ProgressDisplay(Tty()).live is True
    assert ProgressDisplay(io.StringIO()).live is False
    assert ProgressDisplay(Tty(), live=False).live is False
    monkeypatch.setenv("TERM", "dumb")
    assert ProgressDisplay(Tty()).live is False


@pytest.mark.parametrize("live", [False, True])
def test_eight_threads_through_an_event_log_never_garble_lines(live: bool) -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=live, refresh_seconds=0, width=200)
    log = EventLog(None, run_id="r")
    log.add_listener(display)
    log.emit("plan_accepted", tasks=8, task_ids=[f"T-{i}" for i in range(8)])

    def work(i: int) -> None:
        for turn in range(1, 26):
            log.emit("model_call", role=f"dev{i}", task_id=f"T-{i}", turn=turn, usage=USAGE)
            log.emit("tool_call", role=f"dev{i}", task_id=f"T-{i}", turn=turn, tool="read_file")
            display.write_line(f"[Orchestrator] worker {i} line {turn}")
        log.emit("task_status", task_id=f"T-{i}", status="completed")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    display.close()
    assert log.listener_errors == 0

    output = stream.getvalue()
    assert ("\x1b[" in output) is live
    screen = Screen().feed(output).text
    if live:
        assert screen.pop() == "Tasks 8/8 done | 200 API calls | 300.0k tokens | $0.00"
    permanent = re.compile(r"\[Orchestrator\] worker \d line \d+|\[T-\d\] completed")
    assert all(permanent.fullmatch(line) for line in screen), screen
    assert len(screen) == 8 * 25 + 8
    for i in range(8):
        ours = [line for line in screen if line.startswith(f"[Orchestrator] worker {i} ")]
        assert ours == [f"[Orchestrator] worker {i} line {n}" for n in range(1, 26)]


def test_format_tokens() -> None:
    assert [format_tokens(n) for n in (0, 999, 1234, 2_500_000)] == ["0", "999", "1.2k", "2.50M"]


def test_unparsed_test_counts_and_a_resumed_plan() -> None:
    stream = io.StringIO()
    display = ProgressDisplay(stream, live=False)
    display(ev("test_run", command="make test", exit_code=2, passed=None, failed=None,
               timed_out=True))
    display(ev("plan_accepted", tasks=3, task_ids=["A", "B", "C"], completed=["A"]))
    assert stream.getvalue() == "[tests] exit 2 (timed out): ? passed, ? failed (make test)\n"
    assert display.summary().startswith("Tasks 1/3 done |")
