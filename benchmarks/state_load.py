"""The team state file under load: concurrent writers, lost updates, and its size after 200 tasks.

Part 1: 16 writers (16 threads of one process, 16 processes, and 8 threads + 8 processes) each
run N transactions through `TeamState.update`, each appending an agent update and adding one
API call to the usage totals, the two things every agent turn writes. Afterwards every writer's
updates must all be there exactly once and the API-call counter must equal the number of
transactions: a lost update shows as a shortfall. Processes start first and wait for a "go" on
stdin, so interpreter start-up is not timed.

Part 2: a simulated 200-task run writes the state the way the orchestrator does for every task
(task and agent status, usage per model turn, progress notes, result, merge record), one
transaction per change, and reports the file's size and how the cost of one write grows.

    python benchmarks/state_load.py [--quick] [--json FILE] [--updates N] [--tasks N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import machine_line, median, parser, table, write_json
from agent_team import state_ops
from agent_team.state import TeamState

USAGE = {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 9000,
         "cache_write_tokens": 400}


def one_update(state: TeamState, writer: str, index: int) -> None:
    def apply(data: dict[str, Any]) -> None:
        state_ops.append_update_to(data, writer, None, "progress", f"{writer}#{index}")
        state_ops.add_usage_to(data, writer, USAGE, cost_usd=0.01)

    state.update(apply)


def worker_main(path: str, writer: str, count: int) -> int:
    """Subprocess side: wait for "go", then write."""
    state = TeamState(path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "go":
        return 2
    for index in range(count):
        one_update(state, writer, index)
    return 0


def run_writers(path: Path, threads: int, processes: int, count: int) -> dict[str, Any]:
    """Start the writers, release them at once, time until the last one is done, then check."""
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(path), f"proc-{i}", str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for i in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a writer process did not start")
    state = TeamState(path)
    go = threading.Event()
    errors: list[BaseException] = []

    def thread_writer(name: str) -> None:
        go.wait()
        try:
            for index in range(count):
                one_update(state, name, index)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=thread_writer, args=(f"thread-{i}",)) for i in range(threads)]
    for thread in pool:
        thread.start()
    started = time.perf_counter()
    go.set()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for thread in pool:
        thread.join()
    codes = [proc.wait() for proc in procs]
    elapsed = time.perf_counter() - started
    if errors or any(codes):
        raise RuntimeError(f"writers failed: {errors or codes}")
    return {"seconds": elapsed, **verify(path, threads, processes, count)}


def verify(path: Path, threads: int, processes: int, count: int) -> dict[str, Any]:
    data = TeamState(path).read()
    expected = {f"thread-{t}#{i}" for t in range(threads) for i in range(count)}
    expected |= {f"proc-{p}#{i}" for p in range(processes) for i in range(count)}
    seen = Counter(u["message"] for u in data["agent_updates"] if u["message"] in expected)
    return {
        "expected": len(expected),
        "lost": len(expected - set(seen)),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "api_calls": data["usage"]["api_calls"],
    }


def fresh_file(directory: Path, name: str, base: dict[str, Any] | None = None) -> Path:
    path = directory / name / "team-communication.json"
    path.parent.mkdir(parents=True)
    state = TeamState(path)
    state.create("state-load-benchmark")
    if base is not None:
        state.update(lambda data: data.update(json.loads(json.dumps(base))))
    return path


# -- part 2: a simulated run ----------------------------------------------------------------------


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def run_changes(tasks: int, turns: int) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """The state changes of a run, in order, one per transaction the orchestrator makes."""
    roles = ("backend-dev", "frontend-dev", "qa-tester")
    plan = [
        {"task_id": f"TASK-{i + 1:03d}",
         "description": f"Implement part {i + 1} of the feature: the data model, its API "
                        "endpoint and the tests that cover the happy path and the errors",
         "assigned_to": roles[i % 3],
         "dependencies": [f"TASK-{i:03d}"] if i % 4 else [],
         "deliverables": [f"src/feature/part_{i + 1}.py", f"tests/test_part_{i + 1}.py"],
         "priority": "medium", "status": "pending"}
        for i in range(tasks)
    ]
    yield lambda s: s.update(tasks=plan)
    for i, item in enumerate(plan):
        task_id, role = item["task_id"], item["assigned_to"]
        agent = f"{role}@{task_id}"
        branch = f"feature/state-load-agents/{role}/{task_id}"
        worktree = f"/home/user/project/.ai-agents/worktrees/state-load/tasks/{task_id}"
        yield lambda s, t=task_id, b=branch, w=worktree: state_ops.set_task_in(
            s, t, status="in_progress", started_at=now(), branch=b, worktree=w, attempts=1)
        yield lambda s, a=agent, t=task_id, b=branch, w=worktree: state_ops.set_agent_in(
            s, a, status="working", current_task=t, branch=b, worktree=w, turn=0)
        for turn in range(1, turns + 1):
            yield lambda s, r=role, t=task_id: state_ops.add_usage_to(
                s, r, USAGE, cost_usd=0.012, task_id=t)
            yield lambda s, a=agent, n=turn: state_ops.set_agent_in(
                s, a, turn=n, tokens=n * 10900)
            yield lambda s, a=agent: state_ops.set_agent_in(s, a, last_tool="edit_file")
            if turn % 3 == 0:
                yield lambda s, r=role, t=task_id, n=turn: state_ops.append_update_to(
                    s, r, t, "in_progress",
                    f"Turn {n}: models and endpoint written, running the unit tests now")
        result = {
            "summary": "Added the part's model, endpoint and tests; all new tests pass.",
            "completed_items": item["deliverables"],
            "files_modified": [*item["deliverables"], "src/feature/__init__.py"],
            "test_results": None, "blockers": [], "notes": "",
        }
        yield lambda s, t=task_id, r=result, n=i: state_ops.set_task_in(
            s, t, progress=90, commit=f"{n:040x}", result=r)
        merge = {"task_id": task_id, "branch": branch, "into": "feature/state-load",
                 "status": "merged", "commit": f"{i + 7:040x}", "conflicts": [],
                 "message": "", "timestamp": now()}
        yield lambda s, m=merge: s["integration"].setdefault("merges", []).append(m)
        yield lambda s, t=task_id, n=i: state_ops.set_task_in(
            s, t, status="completed", progress=100, merged=True, merge_commit=f"{n + 7:040x}",
            completed_at=now())
        yield lambda s, a=agent: state_ops.set_agent_in(s, a, status="done")


def simulate_run(path: Path, tasks: int, turns: int) -> dict[str, Any]:
    """Write what the orchestrator writes for `tasks` tasks, one transaction per change."""
    state = TeamState(path)
    timings: list[float] = []
    for change in run_changes(tasks, turns):
        started = time.perf_counter()
        state.update(change)
        timings.append(time.perf_counter() - started)
    data = state.read()
    tenth = max(1, len(timings) // 10)
    return {
        "tasks": tasks,
        "transactions": len(timings),
        "bytes": path.stat().st_size,
        "agent_updates": len(data["agent_updates"]),
        "first_tenth_ms": 1000 * median(timings[:tenth]),
        "last_tenth_ms": 1000 * median(timings[-tenth:]),
        "seconds": sum(timings),
        "state": data,
    }


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, help="transactions per writer (default 25)")
    ap.add_argument("--tasks", type=int, help="tasks in the simulated run (default 200)")
    ap.add_argument("--worker", nargs=3, metavar=("PATH", "NAME", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        raise SystemExit(worker_main(args.worker[0], args.worker[1], int(args.worker[2])))
    count = args.updates or (4 if args.quick else 25)
    tasks = args.tasks or (10 if args.quick else 200)
    turns = 6
    scenarios: tuple[tuple[str, int, int], ...] = (
        ("16 threads", 16, 0), ("16 processes", 0, 16), ("8 threads + 8 processes", 8, 8))
    if args.quick:
        scenarios = (("16 threads", 16, 0), ("2 threads + 2 processes", 2, 2))
    print(machine_line())
    print(f"Part 2 first: a simulated {tasks}-task run, {turns} model turns per task.\n")
    with tempfile.TemporaryDirectory(prefix="agent-team-state-") as tmp:
        directory = Path(tmp)
        run = simulate_run(fresh_file(directory, "run"), tasks, turns)
        print(table(
            ["tasks", "transactions", "file size", "agent_updates", "ms per write, first 10%",
             "ms per write, last 10%", "total (s)"],
            [[run["tasks"], run["transactions"], f"{run['bytes'] / 1024:.0f} KiB",
              run["agent_updates"], f"{run['first_tenth_ms']:.1f}",
              f"{run['last_tenth_ms']:.1f}", run["seconds"]]],
        ))
        big = run.pop("state")
        print(f"\nPart 1: 16 concurrent writers, {count} transactions each, on a fresh file and "
              f"on the {tasks}-task file.\n")
        rows = []
        writers: list[dict[str, Any]] = []
        starts = (("fresh", None), (f"{tasks}-task file", big))
        for start, base in starts[:1] if args.quick else starts:
            for name, threads, processes in scenarios:
                path = fresh_file(directory, f"{name}-{start}".replace(" ", "_"), base)
                result = run_writers(path, threads, processes, count)
                result.update(scenario=name, start=start)
                writers.append(result)
                ok = (result["lost"] == 0 and result["duplicated"] == 0
                      and result["api_calls"] - (big["usage"]["api_calls"] if base else 0)
                      == result["expected"])
                rows.append([name, start, result["expected"],
                             f"{result['expected'] / result['seconds']:.0f}",
                             result["lost"], result["duplicated"], "yes" if ok else "NO"])
        print(table(["writers", "file", "transactions", "updates/s", "lost", "duplicated",
                     "counter exact"], rows))
    lost = sum(w["lost"] for w in writers)
    print(f"\nLost updates across all scenarios: {lost}.")
    write_json(args.json, "state_load", args, {"simulated_run": run, "writers": writers})


if __name__ == "__main__":
    main()
