"""Counts scraped from test runners' console output: the fallback when no report was written.

Every parser anchors on the block the runner itself prints last (pytest's `=== ... in 0.1s ===`,
unittest's `Ran N tests` after its dashed rule, mocha's `N passing (5ms)`, libtest's
`test result:`), so a line a test prints is not taken for a summary. ANSI colour codes are
stripped first. A command that runs several suites prints several summaries; all are summed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields

__all__ = ["ConsoleCounts", "Counts", "parse_console", "strip_ansi"]

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


@dataclass(frozen=True)
class Counts:
    """Test outcomes by kind. Expected failures, unexpected passes and todos are their own."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    xfailed: int = 0
    xpassed: int = 0
    todo: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                         for f in fields(self)})

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ConsoleCounts:
    """What the console showed: summed counts, and how many runs of which framework."""

    counts: Counts
    runs: dict[str, int]

    @property
    def framework(self) -> str:
        return "+".join(sorted(self.runs))


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n")


def _number(word: str, body: str) -> int:
    match = re.search(rf"(\d+) {word}", body)
    return int(match[1]) if match else 0


# -- pytest ---------------------------------------------------------------------------------

_PYTEST_WORDS = r"(?:passed|failed|skipped|deselected|xfailed|xpassed|errors?|warnings?)"
_PYTEST_BODY = rf"(?:\d+ {_PYTEST_WORDS}(?:, )?)+|no tests ran"
_PYTEST_BANNER = re.compile(rf"^=+ (?P<body>(?:{_PYTEST_BODY})) in [\d.]+s(?: \([\d:]+\))? =+$")
_PYTEST_QUIET = re.compile(rf"^(?P<body>(?:{_PYTEST_BODY})) in [\d.]+s(?: \([\d:]+\))?$")
_PYTEST_START = re.compile(r"^=+ test session starts =+$")
_PYTEST_PROGRESS = re.compile(r"^\S*[.FEsxX]+\s*\[\s*\d+%\]$")


def _pytest_counts(body: str) -> Counts:
    return Counts(
        passed=_number("passed", body), failed=_number("failed", body),
        errors=_number("errors?", body), skipped=_number("skipped", body),
        xfailed=_number("xfailed", body), xpassed=_number("xpassed", body),
    )


def _pytest(lines: list[str]) -> list[Counts]:
    """The last summary of each session; a session starts at its banner or progress line.

    With -rA, output a passing test printed is shown before the real summary, so within one
    session only the last summary line counts.
    """
    runs: list[Counts] = []
    current: Counts | None = None
    for line in lines:
        stripped = line.strip()
        starts = _PYTEST_START.match(stripped) or (
            current is not None and _PYTEST_PROGRESS.match(stripped)
        )
        if starts and current is not None:
            runs.append(current)
            current = None
        match = _PYTEST_BANNER.match(stripped) or _PYTEST_QUIET.match(stripped)
        if match:
            current = _pytest_counts(match["body"])
    if current is not None:
        runs.append(current)
    return runs


# -- unittest -------------------------------------------------------------------------------

_UNITTEST_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$")
_UNITTEST_END = re.compile(r"^(OK|FAILED)(?: \((?P<body>[^)]*)\))?$")
_UNITTEST_PROBLEM = re.compile(r"^(FAIL|ERROR): (\S+ \([^)]*\))")


def _unittest(lines: list[str]) -> list[Counts]:
    """`Ran N tests` right after the dashed rule, with the OK/FAILED line after it.

    unittest counts failures per subTest but `Ran` per test method, so passed is N minus the
    distinct tests that failed or errored (never below zero), not N minus the failure count.
    """
    runs: list[Counts] = []
    problems: set[str] = set()
    for index, line in enumerate(lines):
        if match := _UNITTEST_PROBLEM.match(line):
            problems.add(match[2])
            continue
        ran = _UNITTEST_RAN.match(line)
        if not ran or index == 0 or not re.fullmatch(r"-{10,}", lines[index - 1].strip()):
            continue
        end = next((m for text in lines[index + 1:index + 4]
                    if (m := _UNITTEST_END.match(text.strip()))), None)
        if end is None:
            continue
        values: dict[str, int] = {}
        for key, value in re.findall(r"([\w ]+)=(\d+)", end["body"] or ""):
            values[key.strip()] = int(value)
        counts = Counts(
            failed=values.get("failures", 0), errors=values.get("errors", 0),
            skipped=values.get("skipped", 0), xfailed=values.get("expected failures", 0),
            xpassed=values.get("unexpected successes", 0),
        )
        not_passed = len(problems) + counts.skipped + counts.xfailed + counts.xpassed
        runs.append(Counts(**{**counts.as_dict(), "passed": max(0, int(ran[1]) - not_passed)}))
        problems = set()
    return runs


# -- JavaScript runners ---------------------------------------------------------------------

_JEST = re.compile(r"^Tests:\s+(?P<body>.*\d+ total)$")
_VITEST_FILES = re.compile(r"^\s*Test Files\s+")
_VITEST = re.compile(r"^\s*Tests\s+(?P<body>(?:\d+ [\w ]+?(?: \| )?)+)\s*\(\d+\)$")
_MOCHA_PASSING = re.compile(r"^\s+(\d+) passing \(\S+\)$")
_MOCHA_MORE = re.compile(r"^\s+(\d+) (pending|failing)$")
_NODE_INFO = re.compile(r"^[ℹ#] (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$")


def _jest(lines: list[str]) -> list[Counts]:
    return [
        Counts(passed=_number("passed", m["body"]), failed=_number("failed", m["body"]),
               skipped=_number("skipped", m["body"]), todo=_number("todo", m["body"]))
        for line in lines if (m := _JEST.match(line.rstrip()))
    ]


def _vitest(lines: list[str]) -> list[Counts]:
    runs = []
    for index, line in enumerate(lines):
        match = _VITEST.match(line.rstrip())
        if match and index > 0 and _VITEST_FILES.match(lines[index - 1]):
            body = match["body"]
            runs.append(Counts(
                passed=_number("passed", body), failed=_number("failed", body),
                skipped=_number("skipped", body), todo=_number("todo", body),
                xfailed=_number("expected fail", body),
            ))
    return runs


def _mocha(lines: list[str]) -> list[Counts]:
    """`N passing (5ms)` and the pending / failing lines right under it."""
    runs = []
    for index, line in enumerate(lines):
        match = _MOCHA_PASSING.match(line.rstrip())
        if not match:
            continue
        more: dict[str, int] = {}
        for following in lines[index + 1:index + 3]:
            extra = _MOCHA_MORE.match(following.rstrip())
            if not extra:
                break
            more[extra[2]] = int(extra[1])
        runs.append(Counts(passed=int(match[1]), failed=more.get("failing", 0),
                           skipped=more.get("pending", 0)))
    return runs


def _node_summary(lines: list[str]) -> list[Counts]:
    """node --test's closing block (`ℹ tests 7`, `ℹ pass 4`, ... or `# tests 7` in TAP)."""
    runs = []
    for index, line in enumerate(lines):
        match = _NODE_INFO.match(line.strip())
        if not match or match[1] != "tests":
            continue
        values: dict[str, int] = {}
        for following in lines[index + 1:index + 9]:
            item = _NODE_INFO.match(following.strip())
            if not item:
                break
            values[item[1]] = int(item[2])
        if "suites" in values and "cancelled" in values:  # node's own block, not tape's
            runs.append(Counts(passed=values.get("pass", 0), failed=values.get("fail", 0),
                               errors=values["cancelled"], skipped=values.get("skipped", 0),
                               todo=values.get("todo", 0)))
    return runs


_TAP_POINT = re.compile(r"^(not )?ok\b(?: \d+)?(?P<rest>.*)$")
_TAP_DIRECTIVE = re.compile(r"#\s*(SKIP|TODO)\b", re.IGNORECASE)


def _tap(lines: list[str]) -> list[Counts]:
    """TAP test points at column 0 (mocha's tap reporter, tape), one stream per `TAP version`.

    node --test's TAP is read from its own closing block instead (`_node_summary`).
    """
    if any(line.startswith("# suites ") for line in lines):
        return []
    runs: list[Counts] = []
    current: dict[str, int] | None = None
    for line in lines:
        if line.startswith("TAP version") and current is not None:
            runs.append(Counts(**current))
            current = None
        match = _TAP_POINT.match(line.rstrip())
        if not match:
            continue
        current = current or {"passed": 0, "failed": 0, "skipped": 0, "todo": 0}
        directive = _TAP_DIRECTIVE.search(match["rest"])
        if directive:
            current["skipped" if directive[1].upper() == "SKIP" else "todo"] += 1
        else:
            current["failed" if match[1] else "passed"] += 1
    if current is not None:
        runs.append(Counts(**current))
    return runs if any(line.startswith(("TAP version", "1..")) for line in lines) else []


# -- cargo (libtest) --------------------------------------------------------------------------

_LIBTEST = re.compile(
    r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored; "
    r"\d+ measured; \d+ filtered out; finished in"
)
_LIBTEST_CAPTURE = re.compile(r"^---- .+ std(?:out|err) ----$")


def _libtest(lines: list[str]) -> list[Counts]:
    """One `test result:` per test binary (unit, integration, doctests), not in captured output."""
    runs = []
    captured = False
    for line in lines:
        if _LIBTEST_CAPTURE.match(line):
            captured = True
        elif line in ("failures:", "successes:"):
            captured = False
        elif not captured and (match := _LIBTEST.match(line)):
            runs.append(Counts(passed=int(match[1]), failed=int(match[2]),
                               skipped=int(match[3])))
    return runs


# -- a plain line ---------------------------------------------------------------------------

_PLAIN = re.compile(r"^(?:\w+: )?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$")


def _plain(lines: list[str]) -> list[Counts]:
    for line in reversed(lines):
        if match := _PLAIN.match(line.strip()):
            return [Counts(passed=int(match[1]), failed=int(match[2]),
                           skipped=int(match[3] or 0))]
    return []


_PARSERS: tuple[tuple[str, Callable[[list[str]], list[Counts]]], ...] = (
    ("pytest", _pytest),
    ("unittest", _unittest),
    ("jest", _jest),
    ("vitest", _vitest),
    ("mocha", _mocha),
    ("node", _node_summary),
    ("tap", _tap),
    ("cargo", _libtest),
)


def parse_console(output: str) -> ConsoleCounts | None:
    """Counts from every summary the output holds, summed; None when there is none."""
    lines = strip_ansi(output).split("\n")
    runs: dict[str, int] = {}
    total = Counts()
    for name, parser in _PARSERS:
        found = parser(lines)
        if found:
            runs[name] = len(found)
            for counts in found:
                total = total + counts
    if not runs and (found := _plain(lines)):
        runs["plain"] = 1
        total = found[0]
    return ConsoleCounts(total, runs) if runs else None
