"""Running the project's tests: the orchestrator runs them itself and parses real counts.

Agents may say anything about tests; the figures in the state file and the summary come from
here only: the exit code of a process we started and counts parsed from its output.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .process import interpreter_argv, run_process
from .sandbox import SandboxPolicy, run_sandboxed
from .state_schema import utc_now

OUTPUT_TAIL_CHARS = 4000
#: Bytes of test output kept from each end while it runs: memory stays bounded however much
#: a suite prints, and the summary lines every framework prints last are always in the tail.
KEEP_OUTPUT_BYTES = 64 * 1024

_PYTEST_SUMMARY = re.compile(
    r"^=+ (?P<body>.*?(?:passed|failed|error|skipped|deselected|no tests ran).*?) =+$"
)
# pytest -q ends with the counts and always a duration ("3 passed in 0.12s"); requiring the
# duration keeps a plain "3 passed, 1 failed" line for the plain-format rule below.
_PYTEST_QUIET = re.compile(
    r"^(?P<body>(?:(?:\d+ (?:passed|failed|skipped|errors?|deselected|xfailed|xpassed|"
    r"warnings?)(?:, )?)+|no tests ran)) in [\d.]+s.*$"
)
_VITEST = re.compile(r"^Tests\s+(?P<body>(?:\d+ \w+(?: \| )?)+)\s*\(\d+\)$")
_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")
_JEST = re.compile(r"^Tests:\s+(?P<body>.*\d+ total)")
_MOCHA = re.compile(r"^\s*(\d+) (passing|failing|pending)\b")
_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in")
_UNITTEST_END = re.compile(r"^(OK|FAILED)(?: \((?P<body>[^)]*)\))?")
_PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")


@dataclass(frozen=True)
class TestResults:
    """What one run of the test command really produced."""

    command: str
    exit_code: int | None
    passed: int | None = None
    failed: int | None = None
    skipped: int | None = None
    errors: int | None = None
    framework: str | None = None
    timed_out: bool = False
    duration_seconds: float = 0.0
    output_tail: str = ""
    ran_at: str = ""
    ref: str | None = None

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not (self.failed or self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": self.errors,
            "framework": self.framework,
            "success": self.success,
            "timed_out": self.timed_out,
            "duration_seconds": round(self.duration_seconds, 3),
            "output_tail": self.output_tail,
            "ran_at": self.ran_at,
            "ref": self.ref,
        }

    def describe(self) -> str:
        """One line for people: counts when known, always the exit code."""
        if self.timed_out:
            return f"timed out after {self.duration_seconds:.0f}s ({self.command})"
        counts = []
        for label, value in (("passed", self.passed), ("failed", self.failed),
                             ("skipped", self.skipped), ("errors", self.errors)):
            if value:
                counts.append(f"{value} {label}")
        if self.passed == 0 and not counts:
            counts.append("0 passed")
        text = ", ".join(counts) if counts else "no counts parsed"
        return f"{text} (exit code {self.exit_code}, {self.command})"


def parse_counts(output: str) -> dict[str, Any]:
    """Counts from pytest, jest/vitest, mocha, unittest, or a plain 'N passed, N failed' line."""
    counts: dict[str, Any] = {}
    lines = output.splitlines()
    for line in reversed(lines):
        stripped = line.strip()
        match = _PYTEST_SUMMARY.match(stripped) or _PYTEST_QUIET.match(stripped)
        if match:
            found = dict.fromkeys(("passed", "failed", "skipped", "errors"), 0)
            for number, label in _COUNT.findall(match.group("body")):
                key = "errors" if label.startswith("error") else label
                if key in found:
                    found[key] += int(number)
            return {**found, "framework": "pytest"}
        if match := _JEST.match(stripped):
            found = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "framework": "jest"}
            for number, label in re.findall(r"(\d+) (passed|failed|skipped|todo)", match["body"]):
                if label in found:
                    found[label] = int(number)
            return found
        if match := _VITEST.match(stripped):
            found = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "framework": "vitest"}
            for number, label in re.findall(r"(\d+) (passed|failed|skipped)", match["body"]):
                found[label] = int(number)
            return found
        if match := _PLAIN.match(stripped):
            return {
                "passed": int(match[1]), "failed": int(match[2]),
                "skipped": int(match[3] or 0), "errors": 0, "framework": "plain",
            }
    mocha = {label: int(n) for line in lines for n, label in _MOCHA.findall(line)}
    if mocha:
        return {
            "passed": mocha.get("passing", 0), "failed": mocha.get("failing", 0),
            "skipped": mocha.get("pending", 0), "errors": 0, "framework": "mocha",
        }
    ran = next((int(m[1]) for line in lines if (m := _UNITTEST_RAN.match(line))), None)
    if ran is not None:
        end = next((m for line in reversed(lines) if (m := _UNITTEST_END.match(line))), None)
        failures = errors = skipped = 0
        if end and end["body"]:
            for key, value in re.findall(r"([\w ]+)=(\d+)", end["body"]):
                key = key.strip()
                if key == "failures":
                    failures = int(value)
                elif key == "errors":
                    errors = int(value)
                elif key == "skipped":
                    skipped = int(value)
        counts = {
            "passed": ran - failures - errors - skipped, "failed": failures,
            "skipped": skipped, "errors": errors, "framework": "unittest",
        }
    return counts


def detect_test_command(project_dir: Path) -> str | None:
    """A sensible default: pytest for Python projects, `npm test` when package.json has one."""
    package = project_dir / "package.json"
    if package.is_file():
        try:
            scripts = json.loads(package.read_text(encoding="utf-8")).get("scripts", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            scripts = {}
        if isinstance(scripts, dict) and "test" in scripts:
            return "npm test"
    markers = ("pytest.ini", "conftest.py", "pyproject.toml", "setup.cfg", "tox.ini")
    if any((project_dir / m).is_file() for m in markers) or (project_dir / "tests").is_dir():
        return f"{Path(sys.executable).name} -m pytest -q"
    return None


def split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"Test command {command!r} cannot be parsed: {exc}.") from None
    if not argv:
        raise ConfigError("The test command is empty. Pass --test-command or set test_command.")
    return interpreter_argv(argv)


def run_tests(
    command: str,
    cwd: Path,
    *,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    ref: str | None = None,
    sandbox: SandboxPolicy | None = None,
) -> TestResults:
    """Run the test command in `cwd` (no shell), with a timeout that kills its process group.

    Output is read as it comes and only its first and last KEEP_OUTPUT_BYTES are kept; counts
    are parsed from those (the summary lines come last), `output_tail` is the last
    OUTPUT_TAIL_CHARS. `env=None` runs the tests with `command_environment()`. With `sandbox`
    the tests run inside it (`cwd` writable, git read-only, no keys) and `env` is ignored.
    """
    argv = split_command(command)
    ran_at = utc_now()
    try:
        if sandbox is not None:
            outcome = run_sandboxed(argv, workdir=cwd, policy=sandbox, timeout=timeout,
                                    keep_bytes=KEEP_OUTPUT_BYTES)
        else:
            outcome = run_process(
                argv, cwd=cwd, timeout=timeout, env=env, keep_bytes=KEEP_OUTPUT_BYTES
            )
    except OSError as exc:
        return TestResults(
            command=command, exit_code=None, output_tail=f"could not start: {exc}",
            ran_at=ran_at, ref=ref,
        )
    counts = parse_counts(outcome.output)
    return TestResults(
        command=command,
        exit_code=None if outcome.timed_out else outcome.exit_code,
        timed_out=outcome.timed_out,
        duration_seconds=outcome.duration,
        output_tail=outcome.output[-OUTPUT_TAIL_CHARS:],
        ran_at=ran_at,
        ref=ref,
        **counts,
    )
