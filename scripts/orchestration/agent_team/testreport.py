"""Test counts from the runners' own machine-readable reports.

Each runner is asked for its report: pytest writes JUnit XML (through `PYTEST_ADDOPTS`, so it
works under make, tox or npm too), vitest and `node --test` add a JUnit reporter next to their
console one, jest writes its `--json` file, `go test` prints `-json` events. JUnit XML is read
with junitparser; console scraping (`testconsole`) is only the fallback.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped, TestCase, TestSuite

from .testconsole import ConsoleCounts, Counts

__all__ = ["Counts", "ReportPlan", "junit_counts", "plan_reports", "read_reports"]

_SHELL_SYNTAX = re.compile(r"[;&|<>`$()]")


@dataclass(frozen=True)
class ReportPlan:
    """The command as run (report options added) and where its reports will be."""

    argv: list[str]
    env: dict[str, str]
    junit: list[Path] = field(default_factory=list)
    jest_json: Path | None = None
    go_json: bool = False


@dataclass(frozen=True)
class ReportCounts:
    counts: Counts
    source: str  # "junit", "jest-json" or "go-json"
    framework: str


def _name(arg: str) -> str:
    return Path(arg).name


@lru_cache(maxsize=4)
def _node_has_junit(node: str) -> bool:
    """node's JUnit reporter arrived in 20.13 / 21.3."""
    try:
        version = subprocess.run([node, "-p", "process.versions.node"], capture_output=True,
                                 text=True, timeout=30, check=False).stdout.strip()
        major, minor = (int(part) for part in version.split(".")[:2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return (major, minor) >= (20, 13) and (major, minor) != (21, 0)


def _runner_in(argv: Sequence[str]) -> tuple[str, int] | None:
    """Which runner the argv starts directly, and the index its own options begin at."""
    if not argv:
        return None
    first = _name(argv[0])
    if first in ("npx", "pnpx") or (first in ("pnpm", "yarn") and len(argv) > 1
                                     and argv[1] == "exec"):
        start = 2 if first in ("pnpm", "yarn") else 1
        start += sum(1 for arg in argv[start:start + 1] if arg in ("--no-install", "--yes"))
        inner = _runner_in(argv[start:])
        return (inner[0], inner[1] + start) if inner else None
    if first in ("jest", "vitest", "mocha"):
        return first, 1
    if first == "node" and "--test" in argv[1:]:
        return "node", 1
    if first == "go" and len(argv) > 1 and argv[1] == "test":
        return "go", 2
    return None


def _report_args(runner: str, argv: Sequence[str], directory: Path) -> tuple[list[str], ReportPlan]:
    """Options that make `runner` write its report into `directory` (nothing if it has one)."""
    plan = ReportPlan(argv=list(argv), env={})
    text = " ".join(argv)
    if runner == "vitest" and "--reporter" not in text:
        path = directory / "vitest.xml"
        args = ["--reporter=default", "--reporter=junit", f"--outputFile.junit={path}"]
        return args, replace(plan, junit=[path])
    if runner == "node" and "--test-reporter" not in text and _node_has_junit(argv[0]):
        path = directory / "node-test.xml"
        args = ["--test-reporter=spec", "--test-reporter-destination=stdout",
                "--test-reporter=junit", f"--test-reporter-destination={path}"]
        return args, replace(plan, junit=[path])
    if runner == "jest" and "--json" not in text and "--outputFile" not in text:
        path = directory / "jest.json"
        return ["--json", f"--outputFile={path}"], replace(plan, jest_json=path)
    if runner == "go" and "-json" not in argv:
        return ["-json"], replace(plan, go_json=True)
    return [], plan


def _npm_script(cwd: Path, argv: Sequence[str]) -> list[str] | None:
    """The words of the package.json script `npm test` / `npm run test` runs, if one command."""
    if len(argv) < 2 or _name(argv[0]) != "npm":
        return None
    rest = list(argv[1:])
    if rest[0] in ("run", "run-script"):
        rest = rest[1:]
    if rest not in (["test"], ["t"], ["tst"]):
        return None
    try:
        scripts = json.loads((cwd / "package.json").read_text(encoding="utf-8"))["scripts"]
        script = scripts["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(script, str) or _SHELL_SYNTAX.search(script):
        return None
    try:
        return shlex.split(script)
    except ValueError:
        return None


def plan_reports(argv: Sequence[str], cwd: Path, directory: Path,
                 env: Mapping[str, str]) -> ReportPlan:
    """Ask the runner behind `argv` for a machine-readable report written into `directory`.

    pytest is asked through `PYTEST_ADDOPTS`, which reaches it however it is started. Other
    runners get options only when the command starts them directly, or when `npm test` runs a
    package.json script that is one plain runner command (the options follow `--`).
    """
    pytest_xml = directory / "pytest.xml"
    addopts = " ".join(filter(None, [env.get("PYTEST_ADDOPTS", ""),
                                     f"--junitxml={shlex.quote(str(pytest_xml))}"]))
    extra_env = {"PYTEST_ADDOPTS": addopts}
    found = _runner_in(argv)
    through_npm = False
    if found is None and (script := _npm_script(cwd, argv)):
        found = _runner_in(script)
        through_npm = found is not None
        words = script
    else:
        words = list(argv)
    if found is None:
        return ReportPlan(argv=list(argv), env=extra_env, junit=[pytest_xml])
    runner, index = found
    args, plan = _report_args(runner, words, directory)
    if through_npm:
        new_argv = [*argv, "--", *args] if args else list(argv)
    else:
        new_argv = [*words[:index], *args, *words[index:]]
    return replace(plan, argv=new_argv, env=extra_env, junit=[*plan.junit, pytest_xml])


# -- reading ---------------------------------------------------------------------------------


def _case_outcome(case: TestCase) -> str:
    results = list(case.result)
    skips = [r for r in results if isinstance(r, Skipped)]
    kinds = {str(r.type or "").lower() for r in skips}
    if "todo" in kinds:
        return "todo"
    if "pytest.xfail" in kinds:
        return "xfailed"
    if any(isinstance(r, Error) for r in results):
        return "errors"
    if any(isinstance(r, Failure) for r in results):
        return "failed"
    if skips:
        return "skipped"
    return "passed"


def _cases(node: JUnitXml | TestSuite) -> list[TestCase]:
    """Every test case under a report root, nested suites included (node nests them)."""
    # junitparser iterates one level; node's reporter puts cases in <testsuites> directly and
    # nests a suite per describe block, so walk the element tree.
    return [TestCase.fromelem(child) for child in node._elem.iter("testcase")]


def junit_counts(path: Path) -> Counts:
    """Counts of one JUnit XML file, one outcome per test case.

    Raises:
        JUnitXmlError, OSError, ValueError: the file is missing or not JUnit XML.
    """
    report = JUnitXml.fromfile(str(path))
    tally: dict[str, int] = {}
    for case in _cases(report):
        outcome = _case_outcome(case)
        tally[outcome] = tally.get(outcome, 0) + 1
    return Counts(**tally)


def jest_counts(path: Path) -> Counts:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Counts(
        passed=int(data.get("numPassedTests", 0)), failed=int(data.get("numFailedTests", 0)),
        skipped=int(data.get("numPendingTests", 0)), todo=int(data.get("numTodoTests", 0)),
        errors=int(data.get("numRuntimeErrorTestSuites", 0)),
    )


def go_json_counts(output: str) -> Counts | None:
    """Counts from `go test -json` events; a package failing with no failed test is an error.

    Only tests that were started (a "run" event) count: before Go 1.20, test2json read the
    text stream, so a passing test that printed "--- FAIL: TestX" gave a "fail" event for a
    TestX that never ran.
    """
    tally = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failed_in: dict[str, int] = {}
    started: set[tuple[str, str]] = set()
    seen = False
    for line in output.splitlines():
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            continue
        if not isinstance(event, dict) or "Action" not in event:
            continue
        seen = True
        action, test, package = event["Action"], event.get("Test"), str(event.get("Package"))
        if action == "run" and test:
            started.add((package, test))
        elif action in ("pass", "fail", "skip") and test:
            if (package, test) not in started:
                continue
            tally[{"pass": "passed", "fail": "failed", "skip": "skipped"}[action]] += 1
            if action == "fail":
                failed_in[package] = failed_in.get(package, 0) + 1
        elif action == "fail" and not test and not failed_in.get(package):
            tally["errors"] += 1  # build failure, TestMain or a panic outside tests
    return Counts(**tally) if seen else None


def go_json_text(output: str) -> str:
    """The console text carried inside `go test -json` events, for people to read."""
    parts = []
    for line in output.splitlines():
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            event = None
        parts.append(event.get("Output", "") if isinstance(event, dict) else line + "\n")
    return "".join(parts)


def _refine(found: ReportCounts, console: ConsoleCounts | None) -> ReportCounts:
    """Add what JUnit cannot say (pytest's XPASS is a pass there, vitest's todo a skip).

    Taken from the console summary only when it describes the same tests (same total).
    """
    if console is None or console.counts.total != found.counts.total:
        return found
    counts = found.counts
    xpassed = min(console.counts.xpassed, counts.passed)
    todo = min(console.counts.todo, counts.skipped) if counts.todo == 0 else 0
    counts = replace(counts, passed=counts.passed - xpassed, xpassed=counts.xpassed + xpassed,
                     skipped=counts.skipped - todo, todo=counts.todo + todo)
    return replace(found, counts=counts)


def read_reports(plan: ReportPlan, output: str,
                 console: ConsoleCounts | None) -> ReportCounts | None:
    """The counts of the reports the run wrote; None when it wrote none that can be read.

    pytest writes one JUnit file per run; when the console shows several pytest runs, that
    file holds the last only and the console's sum is the better figure.
    """
    found: list[ReportCounts] = []
    for path in plan.junit:
        if not path.is_file():
            continue
        if path.name == "pytest.xml" and console is not None and console.runs.get("pytest", 0) > 1:
            continue
        try:
            counts = junit_counts(path)
        except (JUnitXmlError, OSError, ValueError, SyntaxError):
            continue
        found.append(ReportCounts(counts, "junit", path.stem))
    if plan.jest_json is not None and plan.jest_json.is_file():
        with contextlib.suppress(OSError, ValueError, TypeError):
            found.append(ReportCounts(jest_counts(plan.jest_json), "jest-json", "jest"))
    if plan.go_json and (go_counts := go_json_counts(output)) is not None:
        found.append(ReportCounts(go_counts, "go-json", "go"))
    if not found:
        return None
    total = Counts()
    for item in found:
        total = total + item.counts
    merged = ReportCounts(total, found[0].source if len({f.source for f in found}) == 1
                          else "+".join(sorted({f.source for f in found})),
                          "+".join(f.framework for f in found))
    return _refine(merged, console)
