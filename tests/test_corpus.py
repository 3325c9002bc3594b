"""Every captured runner output in tests/corpus/test-outputs parses to its true counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_team.testconsole import parse_console
from agent_team.testreport import (
    ReportPlan,
    go_json_counts,
    jest_counts,
    junit_counts,
    read_reports,
)

CORPUS = Path(__file__).parent / "corpus" / "test-outputs"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))


def test_every_capture_has_expected_counts() -> None:
    captured = {p.name for p in CORPUS.iterdir() if p.suffix in (".txt", ".xml", ".jsonl")}
    captured.add("jest-report.json")
    assert captured == set(EXPECTED["console"]) | set(EXPECTED["reports"])


@pytest.mark.parametrize("name", sorted(EXPECTED["console"]))
def test_console_capture(name: str) -> None:
    found = parse_console((CORPUS / name).read_text(encoding="utf-8"))
    expected = EXPECTED["console"][name]
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found.counts.as_dict() == expected


@pytest.mark.parametrize("name", sorted(EXPECTED["reports"]))
def test_report_capture(name: str) -> None:
    path = CORPUS / name
    if name.endswith(".jsonl"):  # `go test -json` events
        found = go_json_counts(path.read_text(encoding="utf-8"))
        assert found is not None
        counts = found
    else:
        counts = jest_counts(path) if name.endswith(".json") else junit_counts(path)
    assert counts.as_dict() == EXPECTED["reports"][name]


@pytest.mark.parametrize("case", EXPECTED["combined"], ids=lambda c: c["report"])
def test_report_completed_by_its_console(case: dict) -> None:
    """pytest's JUnit has no XPASS and vitest's no todo: the console summary adds them."""
    output = (CORPUS / case["console"]).read_text(encoding="utf-8")
    plan = ReportPlan(argv=[], env={}, junit=[CORPUS / case["report"]])
    found = read_reports(plan, output, parse_console(output))
    assert found is not None and found.source == "junit"
    assert found.counts.as_dict() == case["expected"]


def test_pytest_report_of_the_last_run_gives_way_to_the_sum_of_several(tmp_path: Path) -> None:
    """pytest rewrites one JUnit file per run; after two runs it holds only the last."""
    report = tmp_path / "pytest.xml"
    report.write_bytes((CORPUS / "pytest-junit.xml").read_bytes())
    plan = ReportPlan(argv=[], env={}, junit=[report])
    one_run = (CORPUS / "pytest-junit.txt").read_text(encoding="utf-8")
    assert read_reports(plan, one_run, parse_console(one_run)) is not None
    two_runs = (CORPUS / "pytest-two-runs.txt").read_text(encoding="utf-8")
    console = parse_console(two_runs)
    assert console is not None and console.runs == {"pytest": 2}
    assert read_reports(plan, two_runs, console) is None


def test_counts_are_never_negative_with_failing_subtests() -> None:
    found = parse_console((CORPUS / "unittest-plain.txt").read_text(encoding="utf-8"))
    assert found is not None
    assert min(found.counts.as_dict().values()) >= 0
    assert found.counts.passed == 2 and found.counts.failed == 2


def test_go_json_ignores_a_failure_a_passing_test_printed() -> None:
    """Before Go 1.20, test2json turned a printed "--- FAIL: TestNothing" into a fail event."""
    text = (CORPUS / "go-test-json.jsonl").read_text(encoding="utf-8")
    assert '"Test":"TestNothing"' in text and '"Action":"fail"' in text
    found = go_json_counts(text)
    assert found is not None and found.failed == 1
