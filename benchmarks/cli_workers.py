"""What running a coding-agent CLI through the orchestrator costs on top of the CLI itself.

Part 1: the fake `claude` of the tests (a Python script printing the real result object) run
N times through `run_invocation` plus the output parser, against `subprocess.run` of the same
argument list. Part 2: how long a stop (budget or Ctrl-C) takes to end a CLI and the child it
spawned, measured from the moment the stop is raised to the moment both are gone.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_line, parser
from agent_team.cli_agents import claude_code
from agent_team.cli_agents.runner import Invocation, cli_environment, run_invocation

from tests.cli_fakes import FAKE_SOURCE


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    runs = 3 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake = root / "claude"
        fake.write_text(f"#!{sys.executable}\n{FAKE_SOURCE}", encoding="utf-8")
        fake.chmod(0o755)
        log = root / "log"
        log.mkdir()
        (log / "plan.json").write_text(json.dumps({"T1": {}, "T2": {"sleep": 60}}))
        os.environ["FAKE_CLI_DIR"] = str(log)
        argv = (str(fake), "-p", "Task: T1 - benchmark", "--output-format", "json")
        env = cli_environment(())
        plain, ours = [], []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(argv, cwd=root, env=env, capture_output=True, check=True)
            plain.append(time.perf_counter() - started)
            scratch = Path(tempfile.mkdtemp(dir=root))
            started = time.perf_counter()
            done = run_invocation(Invocation(argv, env, root), timeout=60, scratch=scratch)
            report = claude_code.parse(done.stdout, done.stderr, done.exit_code)
            ours.append(time.perf_counter() - started)
            assert not report.is_error, report.error
        stops = []
        for _ in range(max(runs // 4, 2)):
            scratch = Path(tempfile.mkdtemp(dir=root))
            marker = log / "pids-T2.json"
            marker.unlink(missing_ok=True)
            raised: list[float] = []

            def should_stop(marker: Path = marker, raised: list[float] = raised) -> str | None:
                if marker.exists():
                    raised.append(time.perf_counter())
                    return "stop"
                return None

            run_invocation(Invocation((str(fake), "-p", "Task: T2 - sleep"), env, root),
                           timeout=60, scratch=scratch, should_stop=should_stop)
            ended = time.perf_counter()
            alive = [pid for pid in json.loads(marker.read_text())
                     if Path(f"/proc/{pid}").exists()
                     and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]
            assert not alive, alive
            stops.append(ended - raised[0])
    median_plain, median_ours = statistics.median(plain), statistics.median(ours)
    print(machine_line())
    print()
    print("| measure | median | ratio |")
    print("|---|---|---|")
    print(f"| fake claude, subprocess.run ({runs} runs) | {median_plain * 1000:.0f} ms | 1.00 |")
    print(f"| fake claude, run_invocation + parse | {median_ours * 1000:.0f} ms | "
          f"{median_ours / median_plain:.2f} |")
    print(f"| stop raised -> CLI and its child gone ({len(stops)} runs) | "
          f"{statistics.median(stops) * 1000:.0f} ms | - |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "benchmark": "cli_workers", "quick": args.quick, "plain_s": plain, "ours_s": ours,
            "stop_s": stops}, indent=2))


if __name__ == "__main__":
    main()
