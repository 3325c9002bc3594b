"""Orchestrator overhead per task, with the model's time excluded, by target repository size.

The real FileBasedOrchestrator runs on generated repositories of 100, 1,000 and 10,000 files
with scripted agents that answer at once and write one small file each, one task at a time so
the phases never overlap. Each phase is timed by wrapping the orchestrator's GitWorkspace and
TeamState methods on the instance (the engine carries no timing code); a wrapped call made
inside another one is charged to the inner phase only, so the phases add up to the task's time.

    python benchmarks/overhead.py [--quick] [--json FILE] [--tasks N]
"""

from __future__ import annotations

import functools
import itertools
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    PASSING_TESTS,
    ROLES,
    machine_line,
    make_repo,
    parser,
    plan_task,
    table,
    team_session,
    write_json,
)
from agent_team.scripted import ScriptedModel
from file_based_orchestrator import FileBasedOrchestrator

#: Phase of each wrapped method; anything else inside a task is "other".
GIT_PHASES = {
    "commit_all": "commit",
    "head_commit": "refs/diff",
}
STATE_PHASES = {"update": "state", "read": "state", "record": "state"}
#: setup_worktrees: a fresh worktree or a pooled one switched to the task's branch.
ORCHESTRATOR_PHASES = {"call_agent": "agent (scripted)", "agent_execute_task": "other",
                       "setup_worktrees": "worktree add"}
#: Functions of the facade module: removing (or parking) a task's worktree.
MODULE_PHASES = {"remove_task_worktree": "cleanup"}
PHASES = ("worktree add", "agent (scripted)", "commit", "refs/diff", "merge", "cleanup",
          "state", "other")


class PhaseTimer:
    """Exclusive time per phase: a nested timed call is taken out of its caller's phase."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.task_walls: list[float] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, obj: Any, name: str, phase: str) -> None:
        original: Callable[..., Any] = getattr(obj, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack: list[list[Any]] = self._local.__dict__.setdefault("stack", [])
            stack.append([name, 0.0])
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = stack.pop()[1]
                if stack:
                    stack[-1][1] += elapsed
                in_task = name == "agent_execute_task" or (
                    bool(stack) and stack[0][0] == "agent_execute_task"
                )
                if in_task:
                    with self._lock:
                        self.totals[phase] += elapsed - nested
                        self.calls[phase] += 1
                        if name == "agent_execute_task":
                            self.task_walls.append(elapsed)

        setattr(obj, name, timed)


def generate_files(count: int, rng: random.Random) -> dict[str, str]:
    """`count` small Python-like files, 50 to a directory, two directory levels deep."""
    files: dict[str, str] = {"README.md": "# generated target repository\n"}
    for i in range(count - 1):
        name = f"src/pkg{i // 500:02d}/sub{(i // 50) % 10}/mod{i:05d}.py"
        body = "\n".join(
            f"def f{j}(x):\n    return x * {rng.randint(1, 99)} + {j}\n" for j in range(4)
        )
        files[name] = f'"""Module {i}."""\n\n{body}'
    return files


def run_size(files: int, tasks: int, seed: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(seed + files)
    repo = make_repo(workdir / f"repo-{files}", generate_files(files, rng))
    plan = [plan_task(f"TASK-{i + 1:03d}", ROLES[i % len(ROLES)]) for i in range(tasks)]
    model = ScriptedModel(team_session(plan))
    orchestrator = FileBasedOrchestrator(
        repo, model=model, max_workers=1, output=lambda line: None,
        test_command=PASSING_TESTS,
    )
    timer = PhaseTimer()
    for name, phase in GIT_PHASES.items():
        timer.wrap(orchestrator.git, name, phase)
    for name, phase in STATE_PHASES.items():
        timer.wrap(orchestrator.state, name, phase)
    for name, phase in ORCHESTRATOR_PHASES.items():
        timer.wrap(orchestrator, name, phase)
    timer.wrap(orchestrator.git.history, "changed_files", "refs/diff")
    timer.wrap(orchestrator.git.merges, "merge", "merge")
    for name, phase in MODULE_PHASES.items():
        timer.wrap(sys.modules[FileBasedOrchestrator.__module__], name, phase)
    started = time.perf_counter()
    summary = orchestrator.run(f"overhead benchmark on {files} files")
    total = time.perf_counter() - started
    model.assert_complete()
    if summary["exit_code"] != 0:
        raise RuntimeError(f"the run on {files} files failed: {summary.get('status')}")
    in_tasks = sum(timer.task_walls)
    per_task = {phase: timer.totals.get(phase, 0.0) / tasks for phase in PHASES}
    return {
        "files": files,
        "tasks": tasks,
        "per_task_seconds": in_tasks / tasks,
        "phases_per_task_seconds": per_task,
        "fixed_seconds": total - in_tasks,
        "run_seconds": total,
        "state_calls_per_task": timer.calls.get("state", 0) / tasks,
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, help="tasks per repository size (default 8, quick 3)")
    ap.add_argument("--sizes", help="comma-separated file counts (default 100,1000,10000)")
    args = ap.parse_args()
    sizes = [50, 200] if args.quick else [100, 1000, 10000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    tasks = args.tasks or (3 if args.quick else 8)
    print(machine_line())
    print(f"Overhead per task: FileBasedOrchestrator, {tasks} independent tasks per size, "
          "max_workers=1, scripted agents with zero delay writing one file each.\n")
    results = []
    with tempfile.TemporaryDirectory(prefix="agent-team-overhead-") as tmp:
        for files in sizes:
            results.append(run_size(files, tasks, args.seed, Path(tmp)))
    headers = ["files", "per task (s)", *PHASES, "fixed per run (s)"]
    rows = [
        [r["files"], r["per_task_seconds"],
         *(f"{r['phases_per_task_seconds'][p] * 1000:.0f} ms" for p in PHASES),
         r["fixed_seconds"]]
        for r in results
    ]
    print(table(headers, rows))
    print()
    growth = []
    for before, after in itertools.pairwise(results):
        factor = after["files"] / before["files"]
        growth.append([
            f"{before['files']} -> {after['files']} (x{factor:g})",
            after["per_task_seconds"] / before["per_task_seconds"],
            *(_ratio(after, before, p) for p in ("worktree add", "commit", "merge", "cleanup")),
        ])
    if growth:
        print("Growth of the per-task time (x) when the repository grows:")
        print(table(["files", "per task", "worktree add", "commit", "merge", "cleanup"], growth))
    target = next((r for r in results if r["files"] == 1000), None)
    if target is not None:
        verdict = "met" if target["per_task_seconds"] < 0.5 else "missed"
        print(f"\nTarget < 0.5 s per task at 1,000 files: {verdict} "
              f"({target['per_task_seconds']:.3f} s).")
    write_json(args.json, "overhead", args, {"results": results})


def _ratio(after: dict[str, Any], before: dict[str, Any], phase: str) -> str:
    low = before["phases_per_task_seconds"][phase]
    high = after["phases_per_task_seconds"][phase]
    return f"{high / low:.1f}" if low > 0 else "-"


if __name__ == "__main__":
    main()
