"""Smoke test of the benchmarks: each one's --quick mode runs offline and prints its table.

No timing is asserted: the numbers belong to the machine, the shape of the output to the code.
Their figures are meaningless in a test run; only the shape of the output is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
EXPECTED = {
    "makespan": ["Makespan / critical path", "| graph", "FileBasedOrchestrator"],
    "overhead": ["| files", "worktree add", "Growth of the per-task time"],
    "tokens": ["| turn", "cacheable share", "breakpoints ok"],
    "claims": ["| backend", "claim median ms", "exactly once per fence"],
    "scaling": ["Per-task time at", "writes/task", "orch / lean", "Lock wait:"],
    "state_load": ["| writers", "| tasks", "Lost updates across all scenarios: 0."],
    "cli_workers": ["| measure", "run_invocation + parse", "its child gone"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_mode_prints_its_table(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick",
         "--json", str(tmp_path / f"{name}.json")],
        capture_output=True, text=True, timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, f"{name} --quick failed:\n{out}\n{result.stderr}"
    assert out.startswith("machine: "), out[:2000]
    assert "\n|-" in out, f"{name} printed no table:\n{out}"
    for needle in EXPECTED[name]:
        assert needle in out, f"{name}: {needle!r} missing from:\n{out}"
    data = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    assert data["benchmark"] == name and data["quick"] is True
