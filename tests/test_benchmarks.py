"""Smoke test of the benchmarks: each one's --quick mode runs offline and prints its table.

No timing is asserted: the numbers belong to the machine, the shape of the output to the code.
The four run at once to keep the suite fast; their figures are meaningless under that load.
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
    "state_load": ["| writers", "| tasks", "Lost updates across all scenarios: 0."],
}


@pytest.mark.slow
def test_quick_modes_print_their_tables(tmp_path: Path) -> None:
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick",
             "--json", str(tmp_path / f"{name}.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in EXPECTED
    }
    outputs = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=110)
        assert proc.returncode == 0, f"{name} --quick failed:\n{out}\n{err}"
        outputs[name] = out
    for name, needles in EXPECTED.items():
        out = outputs[name]
        assert out.startswith("machine: "), out[:200]
        assert "\n|-" in out, f"{name} printed no table:\n{out}"
        for needle in needles:
            assert needle in out, f"{name}: {needle!r} missing from:\n{out}"
        data = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        assert data["benchmark"] == name and data["quick"] is True
