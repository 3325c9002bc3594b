"""The orchestrator's own test runs: real processes, real exit codes, counts parsed from output."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from agent_team.errors import ConfigError
from agent_team.testrun import (
    OUTPUT_TAIL_CHARS,
    detect_test_command,
    parse_counts,
    run_tests,
    split_command,
)
from agent_team.testrun import TestResults as Results

PYTEST_VERBOSE_FAILURES = """\
============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-9.0.3, pluggy-1.6.0 -- /usr/bin/python
cachedir: .pytest_cache
rootdir: /home/dev/my-app
configfile: pyproject.toml
collecting ... collected 6 items

tests/test_auth.py::test_login PASSED                                    [ 16%]
tests/test_auth.py::test_register FAILED                                 [ 33%]
tests/test_auth.py::test_token ERROR                                     [ 50%]
tests/test_auth.py::test_refresh SKIPPED (not yet)                       [ 66%]
tests/test_auth.py::test_expiry XFAIL                                    [ 83%]
tests/test_auth.py::test_logout XPASS                                    [100%]

==================================== ERRORS ====================================
_________________________ ERROR at setup of test_token _________________________
E   RuntimeError: no database
=================================== FAILURES ===================================
________________________________ test_register _________________________________
E   assert 400 == 201
tests/test_auth.py:12: AssertionError
=========================== short test summary info ============================
FAILED tests/test_auth.py::test_register - assert 400 == 201
ERROR tests/test_auth.py::test_token - RuntimeError: no database
==== 1 failed, 1 passed, 1 skipped, 1 xfailed, 1 xpassed, 1 error in 0.55s =====
"""

PYTEST_QUIET_FAILURES = """\
..F.s                                                                    [100%]
=================================== FAILURES ===================================
_________________________________ test_divide __________________________________
E   ZeroDivisionError: division by zero
=========================== short test summary info ============================
FAILED tests/test_calc.py::test_divide - ZeroDivisionError: division by zero
1 failed, 3 passed, 1 skipped in 0.04s
"""

JEST_OUTPUT = """\
 FAIL  src/auth.test.js
  ● auth › rejects a bad password

    expect(received).toBe(expected) // Object.is equality

 PASS  src/math.test.js

Test Suites: 1 failed, 1 passed, 2 total
Tests:       1 failed, 3 passed, 4 total
Snapshots:   0 total
Time:        1.234 s
Ran all test suites.
"""

MOCHA_OUTPUT = """\

  auth
    ✓ logs in (45ms)
    ✓ registers
    - refreshes a token
    1) rejects a bad password
    ✓ logs out

  3 passing (62ms)
  1 pending
  1 failing

  1) auth
       rejects a bad password:
     AssertionError: expected 200 to equal 401
"""

UNITTEST_OUTPUT = """\
test_a (test_calc.T.test_a) ... ok
test_b (test_calc.T.test_b) ... FAIL
test_c (test_calc.T.test_c) ... ERROR
test_d (test_calc.T.test_d) ... skipped 'later'
test_e (test_calc.T.test_e) ... ok

======================================================================
ERROR: test_c (test_calc.T.test_c)
----------------------------------------------------------------------
RuntimeError
======================================================================
FAIL: test_b (test_calc.T.test_b)
----------------------------------------------------------------------
AssertionError: 1 != 2

----------------------------------------------------------------------
Ran 5 tests in 0.002s

FAILED (failures=1, errors=1, skipped=1)
"""


def counts(passed: int, failed: int, skipped: int, errors: int, framework: str,
           **extra: int) -> dict:
    return {
        "passed": passed, "failed": failed, "skipped": skipped, "errors": errors,
        "xfailed": 0, "xpassed": 0, "todo": 0, **extra, "framework": framework,
    }


# -- parse_counts ----------------------------------------------------------------------------


def test_pytest_verbose_with_every_outcome() -> None:
    expected = counts(1, 1, 1, 1, "pytest", xfailed=1, xpassed=1)
    assert parse_counts(PYTEST_VERBOSE_FAILURES) == expected


def test_pytest_quiet_with_failures() -> None:
    assert parse_counts(PYTEST_QUIET_FAILURES) == counts(3, 1, 1, 0, "pytest")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("============================== 12 passed in 0.31s ==============================",
         counts(12, 0, 0, 0, "pytest")),
        ("=== 2 passed, 3 warnings in 65.12s (0:01:05) ===", counts(2, 0, 0, 0, "pytest")),
        ("=============== 2 errors in 0.10s ===============", counts(0, 0, 0, 2, "pytest")),
        ("=== 1 passed, 1 error in 0.10s ===", counts(1, 0, 0, 1, "pytest")),
        ("4 passed, 2 skipped, 1 deselected in 0.20s", counts(4, 0, 2, 0, "pytest")),
        ("1 passed, 2 errors in 0.10s", counts(1, 0, 0, 2, "pytest")),
        ("3 passed, 1 warning in 0.10s", counts(3, 0, 0, 0, "pytest")),
        ("2 xfailed in 0.01s", counts(0, 0, 0, 0, "pytest", xfailed=2)),
        ("============================ no tests ran in 0.52s =============================",
         counts(0, 0, 0, 0, "pytest")),
    ],
)
def test_pytest_summary_lines(line: str, expected: dict) -> None:
    assert parse_counts(f"collected some items\n\n{line}\n") == expected


def test_pytest_xfailed_and_xpassed_are_not_counted_as_failed_or_passed() -> None:
    result = parse_counts("=== 2 passed, 3 xfailed, 4 xpassed in 0.1s ===")
    assert result == counts(2, 0, 0, 0, "pytest", xfailed=3, xpassed=4)



def test_pytest_quiet_no_tests_ran() -> None:
    assert parse_counts("\nno tests ran in 0.51s\n") == counts(0, 0, 0, 0, "pytest")


def test_every_session_summary_is_summed() -> None:
    text = ("=== test session starts ===\n=== 1 failed in 0.1s ===\nrerunning\n"
            "=== test session starts ===\n=== 2 passed in 0.1s ===\n")
    assert parse_counts(text) == counts(2, 1, 0, 0, "pytest")


def test_jest() -> None:
    assert parse_counts(JEST_OUTPUT) == counts(3, 1, 0, 0, "jest")


def test_jest_with_skipped() -> None:
    text = "Tests:       2 skipped, 1 todo, 5 passed, 8 total\n"
    assert parse_counts(text) == counts(5, 0, 2, 0, "jest", todo=1)


def test_jest_style_line_from_the_brief() -> None:
    assert parse_counts("Tests:  1 failed, 3 passed, 4 total") == counts(3, 1, 0, 0, "jest")



def test_vitest() -> None:
    text = (
        " Test Files  1 failed | 1 passed (2)\n"
        "      Tests  1 failed | 3 passed (4)\n"
        "   Start at  10:00:00\n"
        "   Duration  1.20s\n"
    )
    assert parse_counts(text) == counts(3, 1, 0, 0, "vitest")


def test_mocha() -> None:
    assert parse_counts(MOCHA_OUTPUT) == counts(3, 1, 1, 0, "mocha")


def test_mocha_all_passing() -> None:
    assert parse_counts("\n  12 passing (1s)\n") == counts(12, 0, 0, 0, "mocha")


def test_unittest_failed() -> None:
    assert parse_counts(UNITTEST_OUTPUT) == counts(2, 1, 1, 1, "unittest")


def test_unittest_ok() -> None:
    text = "......\n------------------\nRan 6 tests in 0.010s\n\nOK\n"
    assert parse_counts(text) == counts(6, 0, 0, 0, "unittest")


def test_unittest_ok_with_skips() -> None:
    text = "-" * 70 + "\nRan 1 test in 0.001s\n\nOK (skipped=1)\n"
    assert parse_counts(text) == counts(0, 0, 1, 0, "unittest")


def test_unittest_brief_example() -> None:
    text = ("=" * 70 + "\nERROR: test_c (m.T.test_c)\n" + "=" * 70 + "\nFAIL: test_b (m.T.test_b)\n"
            + "-" * 70 + "\nRan 5 tests in 0.003s\n\nFAILED (failures=1, errors=1)\n")
    assert parse_counts(text) == counts(3, 1, 0, 1, "unittest")


def test_unittest_expected_failures_are_not_failures() -> None:
    text = "-" * 70 + "\nRan 3 tests in 0.001s\n\nOK (expected failures=1)\n"
    assert parse_counts(text) == counts(2, 0, 0, 0, "unittest", xfailed=1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Results: 3 passed, 1 failed", counts(3, 1, 0, 0, "plain")),
        ("Summary: 7 passed, 0 failed, 2 skipped", counts(7, 0, 2, 0, "plain")),
    ],
)
def test_plain_summary_line(line: str, expected: dict) -> None:
    assert parse_counts(f"running checks\n{line}\n") == expected


def test_plain_line_without_label_is_counted() -> None:
    result = parse_counts("3 passed, 1 failed\n")
    assert (result["passed"], result["failed"]) == (3, 1)


@pytest.mark.parametrize(
    "text",
    ["", "Build finished.\n", "all good!\n", "passed the vibe check\n", "OK\n"],
)
def test_output_without_counts(text: str) -> None:
    assert parse_counts(text) == {}


# -- results ---------------------------------------------------------------------------


def test_success_needs_exit_zero_and_no_failures() -> None:
    assert Results("t", 0, passed=3, failed=0).success
    assert Results("t", 0).success
    assert not Results("t", 1, passed=3, failed=0).success
    assert not Results("t", 0, passed=3, failed=1).success, "counts outrank a lying exit code"
    assert not Results("t", 0, errors=1).success
    assert not Results("t", None, timed_out=True).success
    assert not Results("t", None).success


def test_describe_and_to_dict() -> None:
    result = Results("pytest -q", 1, passed=3, failed=1, skipped=0, errors=0,
                         framework="pytest", duration_seconds=1.23456)
    assert result.describe() == "3 passed, 1 failed (exit code 1, pytest -q)"
    data = result.to_dict()
    assert data["success"] is False
    assert data["duration_seconds"] == 1.235
    assert json.loads(json.dumps(data)) == data
    assert Results("x", 5, passed=0).describe() == "0 passed (exit code 5, x)"
    assert Results("x", 2).describe() == "no counts parsed (exit code 2, x)"
    assert "timed out after 3s" in Results("x", None, timed_out=True,
                                               duration_seconds=3.2).describe()


# -- run_tests -----------------------------------------------------------------------------


def write_suite(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_sample.py").write_text(body, encoding="utf-8")
    return root


PYTEST = "python -m pytest -q -p no:cacheprovider"


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child pytest loads no third-party plugins, so it starts fast and behaves the same."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.mark.slow
@pytest.mark.usefixtures("fast_env")
def test_run_tests_passing_suite(tmp_path: Path) -> None:
    project = write_suite(
        tmp_path / "ok", "def test_one():\n    assert 1\n\ndef test_two():\n    assert 2\n"
    )
    result = run_tests(PYTEST, project, timeout=60, ref="feature/x")
    assert result.exit_code == 0
    assert (result.passed, result.failed, result.errors) == (2, 0, 0)
    assert result.framework == "pytest"
    assert result.success
    assert not result.timed_out
    assert result.ref == "feature/x"
    assert result.ran_at.endswith("Z")
    assert result.duration_seconds > 0
    assert "2 passed" in result.output_tail


@pytest.mark.slow
@pytest.mark.usefixtures("fast_env")
def test_run_tests_failing_suite(tmp_path: Path) -> None:
    project = write_suite(
        tmp_path / "bad",
        "import pytest\n\n"
        "def test_ok():\n    assert True\n\n"
        "def test_wrong():\n    assert 1 + 1 == 3\n\n"
        "@pytest.mark.skip(reason='later')\ndef test_later():\n    pass\n",
    )
    result = run_tests(PYTEST, project, timeout=60)
    assert result.exit_code == 1
    assert (result.passed, result.failed, result.skipped, result.errors) == (1, 1, 1, 0)
    assert not result.success
    assert "assert 1 + 1 == 3" in result.output_tail or "assert 2 == 3" in result.output_tail


@pytest.mark.slow
@pytest.mark.usefixtures("fast_env")
def test_run_tests_with_no_tests_reports_pytest_exit_code_5(tmp_path: Path) -> None:
    project = tmp_path / "empty"
    project.mkdir()
    result = run_tests(PYTEST, project, timeout=60)
    assert result.exit_code == 5
    assert not result.success


def test_run_tests_sees_no_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real-0000000000")
    monkeypatch.setenv("AGENT_TEAM_X", "yes")
    script = "import os; print(os.environ.get('ANTHROPIC_API_KEY'), os.environ['AGENT_TEAM_X'])"
    result = run_tests(f'python -c "{script}"', tmp_path, timeout=30)
    assert result.exit_code == 0
    assert result.output_tail.strip() == "None yes"


def test_run_tests_real_exit_code_without_counts(tmp_path: Path) -> None:
    result = run_tests("python -c 'import sys; print(\"boom\"); sys.exit(3)'", tmp_path)
    assert result.exit_code == 3
    assert result.passed is None and result.failed is None
    assert result.framework is None
    assert result.output_tail == "boom\n"
    assert not result.success


def test_run_tests_keeps_only_the_output_tail(tmp_path: Path) -> None:
    script = "print('x' * 10000); print('12 passed, 0 failed')"
    result = run_tests(f'python -c "{script}"', tmp_path)
    assert len(result.output_tail) == OUTPUT_TAIL_CHARS
    assert result.output_tail.endswith("12 passed, 0 failed\n")
    assert result.passed == 12


def _process_gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        return "State:\tZ" in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_run_tests_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "slow.py").write_text(script, encoding="utf-8")
    started = time.monotonic()
    result = run_tests("python slow.py", tmp_path, timeout=1.5)
    assert time.monotonic() - started < 30
    assert result.timed_out
    assert result.exit_code is None
    assert not result.success
    assert result.output_tail == "started\n"
    assert result.describe().startswith("timed out after")
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _process_gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(child), "the test command's child process survived the timeout"


def test_run_tests_command_that_cannot_start(tmp_path: Path) -> None:
    result = run_tests("no-such-test-runner-3f9a --all", tmp_path, timeout=5)
    assert result.exit_code is None
    assert not result.timed_out
    assert not result.success
    assert result.output_tail.startswith("could not start:")
    assert "no-such-test-runner-3f9a" in result.output_tail
    assert result.ran_at


def test_run_tests_in_a_missing_directory(tmp_path: Path) -> None:
    result = run_tests("python -c pass", tmp_path / "gone")
    assert result.exit_code is None
    assert result.output_tail.startswith("could not start:")


# -- commands --------------------------------------------------------------------------------


def test_split_command_uses_this_interpreter_for_python() -> None:
    assert split_command("python -m pytest -q") == [sys.executable, "-m", "pytest", "-q"]
    assert split_command("python3 -m pytest")[0] == sys.executable
    assert split_command("npm test") == ["npm", "test"]
    assert split_command("pytest -k 'login and not slow'") == ["pytest", "-k", "login and not slow"]


@pytest.mark.parametrize("command", ["", "   "])
def test_split_command_refuses_empty(command: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        split_command(command)


def test_split_command_refuses_unbalanced_quotes() -> None:
    with pytest.raises(ConfigError, match="cannot be parsed"):
        split_command("pytest -k 'oops")


def test_detect_nothing(tmp_path: Path) -> None:
    assert detect_test_command(tmp_path) is None
    (tmp_path / "README.md").write_text("# hi\n", encoding="utf-8")
    assert detect_test_command(tmp_path) is None


@pytest.mark.parametrize("marker", ["pytest.ini", "conftest.py", "pyproject.toml", "setup.cfg",
                                    "tox.ini"])
def test_detect_python_markers(tmp_path: Path, marker: str) -> None:
    (tmp_path / marker).write_text("", encoding="utf-8")
    command = detect_test_command(tmp_path)
    assert command is not None
    assert command.endswith(" -m pytest -q")
    assert split_command(command)[0] == sys.executable


def test_detect_tests_directory(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    assert detect_test_command(tmp_path).endswith("-m pytest -q")


def test_detect_npm_test(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text(
        json.dumps({"name": "app", "scripts": {"test": "jest"}}), encoding="utf-8"
    )
    (tmp_path / "tests").mkdir()
    assert detect_test_command(tmp_path) == "npm test"


@pytest.mark.parametrize(
    "package", ['{"name": "app"}', '{"scripts": {"build": "tsc"}}', "{not json", "[1, 2]",
                '{"scripts": ["test"]}'],
)
def test_detect_package_json_without_a_test_script(tmp_path: Path, package: str) -> None:
    (tmp_path / "package.json").write_text(package, encoding="utf-8")
    assert detect_test_command(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")
    assert detect_test_command(tmp_path).endswith("-m pytest -q")
