"""What the sandbox costs per command: the same commands bare and inside bubblewrap.

Prints a Markdown table of median wall time per command and the ratio. Offline, seconds.

    python benchmarks/sandbox_cost.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "orchestration"))

from agent_team.process import run_process  # noqa: E402
from agent_team.sandbox import SandboxPolicy, run_sandboxed, sandbox_status  # noqa: E402

COMMANDS = {
    "true": ["true"],
    "python -c pass": [sys.executable, "-c", "pass"],
    "git status": ["git", "status", "--short"],
}


def median_seconds(run: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs
    if not sandbox_status().available:
        sys.exit(f"the sandbox does not work here: {sandbox_status().detail}")
    policy = SandboxPolicy()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        run_process(["git", "init", "-q"], cwd=work, timeout=30)
        print(f"| command ({runs} runs, median) | bare ms | sandboxed ms | ratio |")
        print("|---|---|---|---|")
        for name, argv in COMMANDS.items():
            bare = median_seconds(lambda a=argv: run_process(a, cwd=work, timeout=30), runs)
            boxed = median_seconds(
                lambda a=argv: run_sandboxed(a, workdir=work, policy=policy, timeout=30), runs)
            print(f"| {name} | {bare * 1000:.1f} | {boxed * 1000:.1f} | x{boxed / bare:.2f} |")


if __name__ == "__main__":
    main()
