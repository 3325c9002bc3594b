"""Running the project's tests: the orchestrator runs them itself and reads real counts.

Agents may say anything about tests; the figures in the state file and the summary come from
here only: the exit code of a process we started, and counts from the runner's own report
(`testreport`) or, failing that, from its console summary (`testconsole`).
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .editable import editable_environment
from .errors import ConfigError
from .process import CommandOutcome, command_environment, interpreter_argv, run_process
from .sandbox import SandboxPolicy, run_sandboxed
from .state_schema import utc_now
from .testconsole import Counts, parse_console
from .testdetect import detect_tests
from .testreport import go_json_text, plan_reports, read_reports

OUTPUT_TAIL_CHARS = 4000
#: Bytes of test output kept from each end while it runs: memory stays bounded however much
#: a suite prints, and the summary lines every framework prints last are always in the tail.
KEEP_OUTPUT_BYTES = 64 * 1024

#: How a test command is started: `run_process`'s signature, so a sandbox can wrap it.
Runner = Callable[..., CommandOutcome]


@dataclass(frozen=True)
class TestResults:
    """What one run of the test command really produced.

    Counts are None when neither a report nor a console summary gave them; `source` says
    where they came from: "junit", "jest-json", "go-json", "console" or "exit-code".
    """

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
    xfailed: int | None = None
    xpassed: int | None = None
    todo: int | None = None
    source: str = "exit-code"

    @property
    def verdict(self) -> str:
        """"passed", "failed", "timed out" or "not run" (the command could not start)."""
        if self.timed_out:
            return "timed out"
        if self.exit_code is None:
            return "not run"
        if self.exit_code != 0 or self.failed or self.errors:
            return "failed"
        return "passed"

    @property
    def success(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "passed": self.passed,
            "failed": self.failed,
            "skipped": self.skipped,
            "errors": self.errors,
            "xfailed": self.xfailed,
            "xpassed": self.xpassed,
            "todo": self.todo,
            "framework": self.framework,
            "source": self.source,
            "verdict": self.verdict,
            "success": self.success,
            "timed_out": self.timed_out,
            "duration_seconds": round(self.duration_seconds, 3),
            "output_tail": self.output_tail,
            "ran_at": self.ran_at,
            "ref": self.ref,
        }

    def describe(self) -> str:
        """One line for people: counts when known (errors and skips too), always the exit code."""
        if self.timed_out:
            return f"timed out after {self.duration_seconds:.0f}s ({self.command})"
        counts = []
        for label, value in (("passed", self.passed), ("failed", self.failed),
                             ("errors", self.errors), ("skipped", self.skipped),
                             ("xfailed", self.xfailed), ("xpassed", self.xpassed),
                             ("todo", self.todo)):
            if value:
                counts.append(f"{value} {label}")
        if self.passed == 0 and not counts:
            counts.append("0 passed")
        text = ", ".join(counts) if counts else "no counts parsed"
        return f"{text} (exit code {self.exit_code}, {self.command})"


def parse_counts(output: str) -> dict[str, Any]:
    """Counts from the console summaries in `output` (all of them, summed); {} when none."""
    found = parse_console(output)
    if found is None:
        return {}
    return {**found.counts.as_dict(), "framework": found.framework}


def detect_test_command(project_dir: Path) -> str | None:
    """The project's test command (see `testdetect.detect_tests`), None when nothing fits."""
    detection = detect_tests(project_dir)
    return detection.command if detection else None


def split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"Test command {command!r} cannot be parsed: {exc}.") from None
    if not argv:
        raise ConfigError("The test command is empty. Pass --test-command or set test_command.")
    return interpreter_argv(argv)


def execute(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float,
    runner: Runner = run_process,
) -> CommandOutcome:
    """The one place a test command is started; `runner` may wrap it (e.g. in a sandbox)."""
    return runner(argv, cwd=cwd, timeout=timeout, env=env, keep_bytes=KEEP_OUTPUT_BYTES)


def _sandboxed_runner(policy: SandboxPolicy, reports: Path,
                      added: Mapping[str, str]) -> Runner:
    """A runner that starts the test command in the sandbox, able to write its report."""

    def run(argv: Sequence[str], *, cwd: Path, timeout: float, env: Mapping[str, str],
            keep_bytes: int) -> CommandOutcome:
        return run_sandboxed(argv, workdir=cwd, policy=policy, timeout=timeout,
                             keep_bytes=keep_bytes, writable=[reports], extra_env=added)

    return run


def _counts_fields(counts: Counts) -> dict[str, int]:
    return counts.as_dict()


def run_tests(
    command: str,
    cwd: Path,
    *,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    ref: str | None = None,
    checkout: Path | None = None,
    runner: Runner = run_process,
    sandbox: SandboxPolicy | None = None,
) -> TestResults:
    """Run the test command in `cwd` (no shell), with a timeout that kills its process group.

    The runner is asked for its report in a temporary directory outside the worktree; counts
    come from that report, else from the console summaries, else only the exit code decides.
    With `checkout` (the user's repository, when `cwd` is a worktree of it), an editable
    install pointing at the checkout is redirected to `cwd`'s sources. `env=None` runs the
    tests with `command_environment()`. With `sandbox`
    the tests run inside it (`cwd` writable, git read-only, no keys; only the variables the
    report and the editable-install fix need are added to its environment).
    """
    argv = split_command(command)
    environment = dict(command_environment() if env is None else env)
    added: dict[str, str] = {}
    if checkout is not None:
        added.update(editable_environment(checkout, cwd, argv, environment))
    environment.update(added)
    ran_at = utc_now()
    with tempfile.TemporaryDirectory(prefix="agent-team-reports-") as directory:
        plan = plan_reports(argv, cwd, Path(directory), environment)
        if sandbox is not None:
            runner = _sandboxed_runner(sandbox, Path(directory), {**added, **plan.env})
        try:
            outcome = execute(plan.argv, cwd, {**environment, **plan.env}, timeout, runner)
        except OSError as exc:
            return TestResults(
                command=command, exit_code=None, output_tail=f"could not start: {exc}",
                ran_at=ran_at, ref=ref,
            )
        output = go_json_text(outcome.output) if plan.go_json else outcome.output
        console = parse_console(output)
        report = read_reports(plan, outcome.output, console)
    fields: dict[str, Any] = {}
    if report is not None:
        fields = {**_counts_fields(report.counts), "framework": report.framework,
                  "source": report.source}
    elif console is not None:
        fields = {**_counts_fields(console.counts), "framework": console.framework,
                  "source": "console"}
    return TestResults(
        command=command,
        exit_code=None if outcome.timed_out else outcome.exit_code,
        timed_out=outcome.timed_out,
        duration_seconds=outcome.duration,
        output_tail=output[-OUTPUT_TAIL_CHARS:],
        ran_at=ran_at,
        ref=ref,
        **fields,
    )
