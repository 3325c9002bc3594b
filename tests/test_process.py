"""run_process (bounded output, timeouts, safe environment) and the test runner built on it."""

from __future__ import annotations

import shlex
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from agent_team.process import OutputBuffer, run_process
from agent_team.testrun import OUTPUT_TAIL_CHARS, run_tests

from tests.conftest import process_alive


def _wait_dead(pid: int, seconds: float = 3) -> bool:
    deadline = time.monotonic() + seconds
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)


def python(code: str) -> str:
    """A test command line running `code` with this interpreter."""
    return f"python -c {shlex.quote(code)}"


# -- OutputBuffer and run_process -------------------------------------------------------------


def test_output_buffer_keeps_head_and_tail() -> None:
    buffer = OutputBuffer(4)
    for chunk in (b"ab", b"cdef", b"ghij", b"kl"):
        buffer.add(chunk)
    assert (bytes(buffer.head), bytes(buffer.tail), buffer.dropped) == (b"abcd", b"ijkl", 4)
    assert buffer.text() == "abcd\n[... 4 bytes of output cut ...]\nijkl"
    small = OutputBuffer(4)
    small.add(b"abcdef")
    assert small.text() == "abcdef" and small.dropped == 0


def test_huge_output_is_capped_with_bounded_memory(tmp_path: Path) -> None:
    script = "import sys\nchunk = 'x' * 1_000_000\nfor _ in range(50): sys.stdout.write(chunk)\n"
    tracemalloc.start()
    try:
        outcome = run_process(
            [sys.executable, "-c", script], cwd=tmp_path, timeout=60, keep_bytes=4096
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.exit_code == 0
    assert outcome.dropped_bytes == 50_000_000 - 2 * 4096
    assert len(outcome.output) < 10_000 and "bytes of output cut" in outcome.output
    assert peak < 4_000_000


def test_exit_code_stderr_and_cwd(tmp_path: Path) -> None:
    code = "import os, sys; print(os.getcwd()); sys.stderr.write('oops\\n'); sys.exit(4)"
    outcome = run_process([sys.executable, "-c", code], cwd=tmp_path, timeout=30)
    assert outcome.exit_code == 4 and not outcome.timed_out
    assert str(tmp_path.resolve()) in outcome.output and "oops" in outcome.output
    assert outcome.argv == (sys.executable, "-c", code) and outcome.duration > 0


def test_default_environment_has_no_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOO_API_KEY", "sk-fake-123")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    code = "import os; print(os.environ.get('FOO_API_KEY'), os.environ.get('HARMLESS_SETTING'))"
    outcome = run_process([sys.executable, "-c", code], cwd=tmp_path, timeout=30)
    assert outcome.output.split() == ["None", "visible"]
    explicit = run_process(
        [sys.executable, "-c", code], cwd=tmp_path, timeout=30, env={"FOO_API_KEY": "given"}
    )
    assert explicit.output.split() == ["given", "None"]


def test_missing_command_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_process(["definitely-not-a-command-xyz"], cwd=tmp_path, timeout=5)


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    started = time.monotonic()
    outcome = run_process(
        ["sh", "-c", "sleep 100 & echo $! > child.pid; echo started; sleep 100"],
        cwd=tmp_path,
        timeout=1,
    )
    assert outcome.timed_out and "started" in outcome.output
    assert time.monotonic() - started < 5
    assert _wait_dead(int((tmp_path / "child.pid").read_text()))


# -- run_tests on run_process (real pytest runs are in test_testrun.py) ---------------------------


def test_summary_at_the_end_of_huge_output_is_parsed(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for _ in range(40): sys.stdout.write('y' * 100_000 + '\\n')\n"
        "print('=' * 10 + ' 7 passed, 2 failed, 1 skipped in 1.23s ' + '=' * 10)\n"
        "sys.exit(1)\n"
    )
    tracemalloc.start()
    try:
        results = run_tests(python(code), tmp_path, timeout=60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (results.passed, results.failed, results.skipped, results.errors) == (7, 2, 1, 0)
    assert results.framework == "pytest" and results.exit_code == 1 and not results.success
    assert len(results.output_tail) == OUTPUT_TAIL_CHARS
    assert results.output_tail.rstrip().endswith("1.23s " + "=" * 10)
    assert peak < 2_000_000  # about 4 MB of output went by


def test_jest_summary_after_much_output_is_parsed(tmp_path: Path) -> None:
    code = (
        "print('log line ' * 50_000)\n"
        "print('Tests:       1 failed, 5 passed, 6 total')\n"
        "print('Snapshots:   0 total')\n"
        "print('Time:        1.5 s')\n"
    )
    results = run_tests(python(code), tmp_path, timeout=60)
    assert (results.framework, results.passed, results.failed) == ("jest", 5, 1)
    assert results.exit_code == 0 and not results.success


def test_a_command_that_cannot_start(tmp_path: Path) -> None:
    results = run_tests("definitely-not-a-command-xyz --flag", tmp_path, ref="r1")
    assert results.exit_code is None and not results.timed_out and not results.success
    assert results.output_tail.startswith("could not start: ") and results.ref == "r1"
    assert results.passed is None and results.framework is None
