"""How the orchestrator's own cost scales: with the plan, against bare git, and under threads.

One run prints four tables, all with scripted agents that answer at once (so every second is
the orchestrator's or git's):

1. Plan size: one-turn independent tasks on a one-file repository with 2 workers; wall time
   per task at 50 and 500 tasks and their ratio (linear total cost means a ratio near 1).
2. State file: writes and bytes written per task (whole-file saves + journal appends) at 10,
   50 and 200 tasks; linear total cost means flat figures per task.
3. The git floor: on generated repositories of 1,000 and 10,000 files, the orchestrator's
   time per task (wall / tasks, and the marginal cost of one more task from runs of N and 2N
   tasks, which leaves out the run's fixed part) next to the bare git commands a task needs
   run one after another in a shell loop (worktree add, commit, merge, worktree remove), a
   lean sequence (worktree without a checkout, `merge-tree --write-tree`, no working tree for
   the merge) and a pooled worktree switched between tasks (`checkout -B` writes only the
   files that differ); ratios to each.
4. Lock wait: with 4 workers on the 1,000-file repository, the seconds threads waited for the
   repository lock, and how long it was held, against the run's wall time.

    python benchmarks/scaling.py [--quick] [--json FILE] [--seed N]
    python benchmarks/scaling.py --repo-files 100000 --repo-tasks 5   # table 3 only, those sizes
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    PASSING_TESTS,
    ROLES,
    failure_cause,
    git,
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
from overhead import generate_files


def orchestrate(repo: Path, tasks: int, workers: int) -> dict[str, Any]:
    """One run of the real orchestrator: wall time, state-file I/O and repository lock."""
    plan = [plan_task(f"TASK-{i + 1:03d}", ROLES[i % len(ROLES)]) for i in range(tasks)]
    model = ScriptedModel(team_session(plan))
    config = repo.parent / f"{repo.name}-config.json"  # plans above the default 100 tasks
    config.write_text(json.dumps({"coordination": {"max_tasks": 1000}}), encoding="utf-8")
    orchestrator = FileBasedOrchestrator(repo, model=model, max_workers=workers,
                                         output=lambda line: None, test_command=PASSING_TESTS,
                                         config_path=config)
    lock = orchestrator.team.git._lock
    waited, held = lock.wait_seconds, lock.held_seconds
    started = time.perf_counter()
    summary = orchestrator.run(f"scaling benchmark, {tasks} tasks")
    wall = time.perf_counter() - started
    model.assert_complete()
    if summary["exit_code"] != 0:
        raise RuntimeError(f"the {tasks}-task run on {repo} ended {summary.get('status')}: "
                           + failure_cause(orchestrator.state.read()))
    stats = orchestrator.state.stats.as_dict()
    return {"tasks": tasks, "workers": workers, "wall_s": wall, "per_task_s": wall / tasks,
            "state": stats, "writes_per_task": stats["writes"] / tasks,
            "bytes_per_task": stats["bytes_written"] / tasks,
            "lock_wait_s": lock.wait_seconds - waited, "lock_held_s": lock.held_seconds - held}


def _sh(repo: Path, *args: str) -> str:
    return git(repo, *args)


def floor_full(repo: Path, tasks: int) -> float:
    """The bare git a task costs today: full worktree, commit, merge in a worktree, remove."""
    integ = repo.parent / f"{repo.name}-integ"
    _sh(repo, "branch", "floor-feature", "main")
    _sh(repo, "worktree", "add", "-q", str(integ), "floor-feature")
    started = time.perf_counter()
    for i in range(tasks):
        path = repo.parent / f"{repo.name}-t{i}"
        _sh(repo, "worktree", "add", "-q", "--no-track", "-b", f"floor/t{i}", str(path),
            "floor-feature")
        (path / "bench").mkdir(exist_ok=True)
        (path / "bench" / f"t{i}.txt").write_text(f"{i}\n", encoding="utf-8")
        _sh(path, "add", "--all")
        _sh(path, "commit", "-q", "-m", f"t{i}")
        _sh(integ, "merge", "-q", "--no-ff", "--no-edit", f"floor/t{i}")
        _sh(repo, "worktree", "remove", str(path))
    return (time.perf_counter() - started) / tasks


def floor_lean(repo: Path, tasks: int) -> float:
    """A lean sequence: no checkout for the task, a merge without any working tree."""
    _sh(repo, "branch", "lean-feature", "main")
    started = time.perf_counter()
    for i in range(tasks):
        path = repo.parent / f"{repo.name}-l{i}"
        _sh(repo, "worktree", "add", "-q", "--no-checkout", "--no-track", "-b", f"lean/t{i}",
            str(path), "lean-feature")
        (path / "bench").mkdir(exist_ok=True)
        (path / "bench" / f"l{i}.txt").write_text(f"{i}\n", encoding="utf-8")
        _sh(path, "reset", "-q")  # the index from HEAD, no files written
        _sh(path, "add", "bench")
        _sh(path, "commit", "-q", "-m", f"l{i}")
        tree = _sh(repo, "merge-tree", "--write-tree", "lean-feature", f"lean/t{i}").split()[0]
        old = _sh(repo, "rev-parse", "lean-feature").strip()
        new = _sh(repo, "commit-tree", tree, "-p", old, "-p", f"lean/t{i}", "-m",
                  f"merge l{i}").strip()
        _sh(repo, "update-ref", "refs/heads/lean-feature", new, old)
        _sh(repo, "worktree", "remove", "--force", str(path))
    return (time.perf_counter() - started) / tasks


def floor_pool(repo: Path, tasks: int) -> float:
    """A pooled worktree: switched to each task's branch (only differing files written)."""
    integ = repo.parent / f"{repo.name}-pinteg"
    slot = repo.parent / f"{repo.name}-slot"
    _sh(repo, "branch", "pool-feature", "main")
    _sh(repo, "worktree", "add", "-q", str(integ), "pool-feature")
    _sh(repo, "worktree", "add", "-q", "--detach", str(slot), "pool-feature")
    started = time.perf_counter()
    for i in range(tasks):
        _sh(slot, "checkout", "-q", "--no-track", "-B", f"pool/t{i}", "pool-feature")
        (slot / "bench").mkdir(exist_ok=True)
        (slot / "bench" / f"p{i}.txt").write_text(f"{i}\n", encoding="utf-8")
        _sh(slot, "add", "--all")
        _sh(slot, "commit", "-q", "-m", f"p{i}")
        _sh(integ, "merge", "-q", "--no-ff", "--no-edit", f"pool/t{i}")
        _sh(slot, "clean", "-q", "-ffdx")
    return (time.perf_counter() - started) / tasks


def repo_size(files: int, tasks: int, seed: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(seed + files)
    content = generate_files(files, rng)
    floors = {}
    for name, fn in (("full", floor_full), ("lean", floor_lean), ("pool", floor_pool)):
        repo = make_repo(workdir / f"{name}-{files}", content)
        os.sync()  # each measurement starts with no other one's writes still being flushed
        floors[name] = fn(repo, tasks)
    repo = make_repo(workdir / f"orch-{files}", content)
    os.sync()
    run = orchestrate(repo, tasks, workers=1)
    repo = make_repo(workdir / f"orch2-{files}", content)
    os.sync()
    double = orchestrate(repo, 2 * tasks, workers=1)
    # What one more task costs: the run's fixed part (plan, first checkouts, tests, report)
    # cancels out between the two plan sizes.
    marginal = (double["wall_s"] - run["wall_s"]) / tasks
    return {"files": files, "tasks": tasks, "orchestrator_s": run["per_task_s"],
            "marginal_s": marginal, "fixed_s": run["wall_s"] - marginal * tasks,
            "floor_s": floors, "run": run, "double": double}


def floor_table(sizes: list[dict[str, Any]], tasks: int) -> str:
    """Table 3: the orchestrator's time per task next to the bare git sequences."""
    rows = []
    for r in sizes:
        f = r["floor_s"]
        rows.append([r["files"], f"{r['orchestrator_s']:.3f}", f"{r['marginal_s']:.3f}",
                     f"{r['fixed_s']:.2f}", f"{f['full']:.3f}",
                     f"{f['lean']:.3f}", f"{f['pool']:.3f}",
                     f"{r['orchestrator_s'] / f['full']:.2f}",
                     f"{r['orchestrator_s'] / f['lean']:.2f}",
                     f"{r['marginal_s'] / f['lean']:.2f}"])
    return (f"\nThe git floor: {tasks} tasks one at a time; seconds per task. 'orchestrator': "
            f"run wall / tasks; 'marginal': what one more task adds (runs of {tasks} and "
            f"{2 * tasks} tasks), without the run's fixed part.\n\n"
            + table(["files", "orchestrator", "marginal", "fixed per run (s)", "git: full",
                     "git: lean", "git: pool", "orch / full", "orch / lean",
                     "marginal / lean"], rows))


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--repo-files", metavar="N[,N...]",
                    help="only the git-floor table, on repositories of these file counts")
    ap.add_argument("--repo-tasks", type=int, metavar="N",
                    help="tasks per git-floor run (default 20, 3 with --quick)")
    args = ap.parse_args()
    quick = args.quick
    plan_sizes = (10, 30) if quick else (50, 500)
    state_sizes = (10, 30) if quick else (10, 50, 200)
    repo_files = (200,) if quick else (1000, 10000)
    repo_tasks = args.repo_tasks or (3 if quick else 20)
    print(machine_line())
    results: dict[str, Any] = {}
    if args.repo_files:
        files = [int(n) for n in args.repo_files.split(",")]
        with tempfile.TemporaryDirectory(prefix="agent-team-scaling-") as tmp:
            sizes = [repo_size(n, repo_tasks, args.seed, Path(tmp)) for n in files]
        print(floor_table(sizes, repo_tasks))
        write_json(args.json, "scaling", args, {"floor": sizes})
        return
    with tempfile.TemporaryDirectory(prefix="agent-team-scaling-") as tmp:
        work = Path(tmp)
        runs: dict[int, dict[str, Any]] = {}
        for size in sorted(set(plan_sizes) | set(state_sizes)):
            repo = make_repo(work / f"plan-{size}", {"README.md": "x\n"})
            os.sync()
            runs[size] = orchestrate(repo, size, workers=2)
        small, large = (runs[s] for s in plan_sizes)
        print("\nPlan size: one-file repository, 2 workers, one-turn tasks.\n")
        print(table(["tasks", "wall (s)", "per task (s)"],
                    [[r["tasks"], r["wall_s"], f"{r['per_task_s']:.3f}"]
                     for r in (small, large)]))
        ratio = large["per_task_s"] / small["per_task_s"]
        print(f"\nPer-task time at {large['tasks']} / at {small['tasks']} tasks: {ratio:.2f} "
              f"(target <= 1.25)")
        print("\nState file: writes and bytes per task (whole-file saves + journal appends).\n")
        print(table(["tasks", "writes/task", "KB written/task", "file saves", "journal appends",
                     "KB read/task"],
                    [[s, f"{runs[s]['writes_per_task']:.1f}",
                      f"{runs[s]['bytes_per_task'] / 1024:.1f}",
                      runs[s]["state"]["snapshot_writes"], runs[s]["state"]["journal_appends"],
                      f"{runs[s]['state']['bytes_read'] / 1024 / s:.1f}"]
                     for s in state_sizes]))
        sizes = [repo_size(files, repo_tasks, args.seed, work) for files in repo_files]
        print(floor_table(sizes, repo_tasks))
        lock_repo = make_repo(work / "lock", generate_files(repo_files[0],
                                                             random.Random(args.seed)))
        os.sync()
        locked = orchestrate(lock_repo, repo_tasks * 2, workers=4)
        print(f"\nLock wait: {locked['tasks']} tasks, 4 workers, {repo_files[0]} files: wall "
              f"{locked['wall_s']:.2f} s, threads waited {locked['lock_wait_s']:.2f} s in all "
              f"for the repository lock (held {locked['lock_held_s']:.2f} s).")
        results = {"plan": {str(k): v for k, v in runs.items()}, "plan_ratio": ratio,
                   "floor": sizes, "lock": locked}
    write_json(args.json, "scaling", args, results)


if __name__ == "__main__":
    main()
