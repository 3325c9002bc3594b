"""Makespan against the critical path: how close dependency-ordered scheduling gets to the limit.

Seeded random task graphs (shallow-wide and deep-narrow) get a random simulated latency per
task. Part 1 drives the real scheduler, `agent_team.scheduler.run_graph` (the function
FileBasedOrchestrator hands its plan to), with an `execute` that sleeps for the task's latency:
the sleep stands in for the agent, so what is measured is the scheduler itself (ready-queue
decisions, worker hand-off, thread start-up). Two baselines run in the same process on the same
graphs and latencies: strictly sequential, and the usage guide's "Advanced: Parallel Execution"
(independent tasks in a ThreadPoolExecutor first, then every dependent task one at a time).

Part 2 runs the real FileBasedOrchestrator on small graphs with ScriptedModel turn delays as the
latency, so worktrees, commits, merges and state writes are all included.

    python benchmarks/makespan.py [--quick] [--json FILE] [--seed N] [--skip-orchestrator]
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    PASSING_TESTS,
    ROLES,
    failure_cause,
    machine_line,
    make_repo,
    median,
    parser,
    plan_task,
    table,
    team_session,
    write_json,
)
from agent_team.scheduler import Job, critical_path_length, run_graph, topological_order
from agent_team.scripted import ScriptedModel
from file_based_orchestrator import FileBasedOrchestrator

SHAPES = ("shallow-wide", "deep-narrow")
WORKERS: tuple[int | None, ...] = (1, 4, 16, None)
GUIDE_WORKERS: tuple[int | None, ...] = (4, None)


@dataclass(frozen=True)
class Graph:
    """A task graph with a latency per task (seconds)."""

    shape: str
    jobs: tuple[Job, ...]
    durations: Mapping[str, float]
    levels: int

    @property
    def name(self) -> str:
        return f"{self.shape}-{len(self.jobs)}"

    @property
    def work(self) -> float:
        return sum(self.durations.values())

    @property
    def critical_path(self) -> float:
        return critical_path_length(self.jobs, self.durations)[0]

    def lower_bound(self, workers: int | None) -> float:
        """No schedule beats the critical path, nor the total work spread over the workers."""
        if workers is None:
            return self.critical_path
        return max(self.critical_path, self.work / workers)


def make_graph(shape: str, size: int, rng: random.Random, low: float, high: float) -> Graph:
    """Shallow-wide: three levels. Deep-narrow: four tasks per level, size/4 levels.

    Every task below the first level depends on one task of the level above (so the depth is
    real) and, half the time, on one more task of any earlier level.
    """
    levels = 3 if shape == "shallow-wide" else max(2, math.ceil(size / 4))
    by_level: list[list[str]] = [[] for _ in range(levels)]
    jobs: list[Job] = []
    for index in range(size):
        level = index * levels // size
        job_id = f"T{index + 1:03d}"
        deps: list[str] = []
        if level > 0:
            deps.append(rng.choice(by_level[level - 1]))
            if rng.random() < 0.5:
                deps.append(rng.choice([j for lv in by_level[:level] for j in lv]))
        by_level[level].append(job_id)
        jobs.append(Job(job_id, tuple(deps)))
    durations = {job.id: rng.uniform(low, high) for job in jobs}
    return Graph(shape, tuple(jobs), durations, levels)


# -- the three ways to run a graph ----------------------------------------------------------------


def sleeper(graph: Graph) -> Callable[[Job], bool]:
    def execute(job: Job) -> bool:
        time.sleep(graph.durations[job.id])
        return True

    return execute


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_scheduler(graph: Graph, workers: int | None) -> float:
    """Wall time of run_graph, thread start-up and validation included."""
    return timed(lambda: run_graph(graph.jobs, sleeper(graph), max_workers=workers))


def run_sequential(graph: Graph) -> float:
    execute = sleeper(graph)
    index = {job.id: job for job in graph.jobs}
    return timed(lambda: [execute(index[job_id]) for job_id in topological_order(graph.jobs)])


def run_guide(graph: Graph, workers: int | None) -> float:
    """The guide's TrueParallelOrchestrator.run_parallel, with the dependents in a valid order."""
    execute = sleeper(graph)
    index = {job.id: job for job in graph.jobs}
    independent = [job for job in graph.jobs if not job.dependencies]
    dependent = [index[j] for j in topological_order(graph.jobs) if index[j].dependencies]

    def go() -> None:
        with ThreadPoolExecutor(max_workers=workers or len(independent)) as pool:
            for future in as_completed([pool.submit(execute, job) for job in independent]):
                future.result()
        for job in dependent:
            execute(job)

    return timed(go)


def zero_work(graph: Graph, workers: int | None) -> float:
    """run_graph with instant jobs: the scheduler's own cost, thread start-up included."""
    return timed(lambda: run_graph(graph.jobs, lambda job: True, max_workers=workers))


def thread_start_cost(count: int) -> float:
    """Starting and joining `count` idle threads, the fixed cost of an unbounded run."""
    threads = [threading.Thread(target=lambda: None) for _ in range(count)]

    def go() -> None:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return timed(go)


# -- part 1: run_graph ---------------------------------------------------------------------------


def label(workers: int | None) -> str:
    return "inf" if workers is None else str(workers)


def bench_scheduler(graph: Graph, repeats: int) -> dict[str, Any]:
    """Median makespans; the long serial runs once, the parallel ones `repeats` times."""
    result: dict[str, Any] = {
        "graph": graph.name, "shape": graph.shape, "tasks": len(graph.jobs),
        "levels": graph.levels, "work_s": graph.work, "critical_path_s": graph.critical_path,
        "sequential_s": run_sequential(graph), "scheduler_s": {}, "guide_s": {},
        "lower_bound_s": {label(w): graph.lower_bound(w) for w in WORKERS},
    }
    for workers in WORKERS:
        runs = 1 if workers == 1 else repeats
        result["scheduler_s"][label(workers)] = median(
            run_scheduler(graph, workers) for _ in range(runs)
        )
    for workers in GUIDE_WORKERS:
        result["guide_s"][label(workers)] = run_guide(graph, workers)
    result["zero_work_ms"] = {
        label(w): 1000 * median(zero_work(graph, w) for _ in range(5)) for w in (4, None)
    }
    result["thread_start_ms"] = 1000 * median(
        thread_start_cost(len(graph.jobs)) for _ in range(5)
    )
    return result


def scheduler_tables(results: Sequence[Mapping[str, Any]]) -> str:
    headers = ["graph", "levels", "CP (ms)", "sequential", "guide w=4", "guide w=inf",
               *(f"w={label(w)}" for w in WORKERS), "speedup vs guide (w=4 / inf)"]
    rows = []
    for r in results:
        cp = r["critical_path_s"]
        sched = r["scheduler_s"]
        guide = r["guide_s"]
        rows.append([
            r["graph"], r["levels"], f"{cp * 1000:.0f}", r["sequential_s"] / cp,
            guide["4"] / cp, guide["inf"] / cp,
            *(sched[label(w)] / cp for w in WORKERS),
            f"{guide['4'] / sched['4']:.2f} / {guide['inf'] / sched['inf']:.2f}",
        ])
    bound_rows = []
    for r in results:
        bounds = r["lower_bound_s"]
        bound_rows.append([
            r["graph"], *(r["scheduler_s"][label(w)] / bounds[label(w)] for w in WORKERS),
            f"{r['zero_work_ms']['4']:.1f}", f"{r['zero_work_ms']['inf']:.1f}",
            f"{r['thread_start_ms']:.1f}",
        ])
    return (
        "Makespan / critical path (lower is better; 1.00 is the limit):\n"
        + table(headers, rows)
        + "\n\nMakespan / lower bound for that many workers, max(critical path, work / w), "
        "and the scheduler's own cost:\n"
        + table(["graph", *(f"w={label(w)}" for w in WORKERS), "zero-work run w=4 (ms)",
                 "zero-work run w=inf (ms)", "start+join N threads (ms)"], bound_rows)
    )


# -- part 2: the real orchestrator ---------------------------------------------------------------


def bench_orchestrator(graph: Graph, workers: int, scale: float, workdir: Path) -> dict[str, Any]:
    """One FileBasedOrchestrator run; each task's agent answers after its scaled latency."""
    repo = make_repo(workdir / f"{graph.name}-w{workers}", {"README.md": "# bench\n"})
    ids = [job.id for job in graph.jobs]
    tasks = [
        plan_task(f"TASK-{i + 1:03d}", ROLES[i % len(ROLES)],
                  [f"TASK-{ids.index(dep) + 1:03d}" for dep in job.dependencies])
        for i, job in enumerate(graph.jobs)
    ]
    delays = {f"TASK-{i + 1:03d}": graph.durations[job.id] * scale
              for i, job in enumerate(graph.jobs)}
    model = ScriptedModel(team_session(tasks, delays))
    orchestrator = FileBasedOrchestrator(repo, model=model, max_workers=workers,
                                         output=lambda line: None, test_command=PASSING_TESTS)
    spans: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()
    original = orchestrator.agent_execute_task

    def execute(task: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return original(task)
        finally:
            with lock:
                spans[task["task_id"]] = (started, time.perf_counter())

    orchestrator.agent_execute_task = execute  # type: ignore[method-assign]
    summary = orchestrator.run(f"makespan benchmark {graph.name} w{workers}")
    if summary["exit_code"] != 0:
        raise RuntimeError(f"the orchestrator run of {graph.name} ended {summary.get('status')}: "
                           + failure_cause(orchestrator.state.read()))
    model.assert_complete()
    jobs = tuple(Job(t["task_id"], tuple(t["dependencies"])) for t in tasks)
    makespan = max(end for _, end in spans.values()) - min(start for start, _ in spans.values())
    measured = {task_id: end - start for task_id, (start, end) in spans.items()}
    model_cp = critical_path_length(jobs, delays)[0]
    measured_cp = critical_path_length(jobs, measured)[0]
    overhead = [measured[t] - delays[t] for t in measured]
    return {
        "graph": graph.name, "workers": workers, "makespan_s": makespan,
        "model_critical_path_s": model_cp, "measured_critical_path_s": measured_cp,
        "model_work_s": sum(delays.values()),
        "mean_task_overhead_s": sum(overhead) / len(overhead),
    }


def orchestrator_table(results: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [r["graph"], r["workers"], f"{r['model_critical_path_s']:.2f}", f"{r['makespan_s']:.2f}",
         r["makespan_s"] / r["model_critical_path_s"],
         r["makespan_s"] / r["measured_critical_path_s"],
         f"{r['mean_task_overhead_s'] * 1000:.0f}"]
        for r in results
    ]
    return table(["graph", "max_workers", "model CP (s)", "makespan (s)", "/ model CP",
                  "/ measured CP", "git+state per task (ms)"], rows)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, help="runs per parallel setting (default 3)")
    ap.add_argument("--skip-orchestrator", action="store_true",
                    help="only part 1 (run_graph and the baselines)")
    args = ap.parse_args()
    sizes = (10, 20) if args.quick else (20, 50, 200)
    low, high = (0.004, 0.012) if args.quick else (0.010, 0.040)
    repeats = args.repeats or (1 if args.quick else 3)
    rng = random.Random(args.seed)
    graphs = [make_graph(shape, size, rng, low, high) for size in sizes for shape in SHAPES]

    print(machine_line())
    print(f"Part 1: run_graph with a sleeping execute; task latency uniform "
          f"{low * 1000:.0f}-{high * 1000:.0f} ms, seed {args.seed}, median of {repeats} "
          "run(s) per parallel setting (sequential, w=1 and guide: one run).\n")
    scheduler = [bench_scheduler(graph, repeats) for graph in graphs]
    print(scheduler_tables(scheduler))

    orchestrated: list[dict[str, Any]] = []
    if not args.skip_orchestrator:
        scale = 5.0 if args.quick else 20.0
        small = [g for g in graphs if len(g.jobs) == sizes[0 if args.quick else 0]]
        settings = (4,) if args.quick else (1, 4, 16)
        print(f"\nPart 2: FileBasedOrchestrator, scripted agents whose one turn waits the "
              f"task's latency x{scale:g} ({low * scale:.2f}-{high * scale:.2f} s), real "
              "worktrees, commits, merges and state writes:\n")
        with tempfile.TemporaryDirectory(prefix="agent-team-makespan-") as tmp:
            for graph in small:
                for workers in settings:
                    orchestrated.append(bench_orchestrator(graph, workers, scale, Path(tmp)))
        print(orchestrator_table(orchestrated))

    print()
    for r in scheduler:
        ratio = r["scheduler_s"]["inf"] / r["critical_path_s"]
        line = f"{r['graph']}: w=inf makespan {ratio:.2f} x critical path (target <= 1.05: " \
               f"{'met' if ratio <= 1.05 else 'missed'})"
        if r["shape"] == "deep-narrow":
            speedup = r["guide_s"]["inf"] / r["scheduler_s"]["inf"]
            line += f"; {speedup:.2f}x faster than the guide (target >= 2: " \
                    f"{'met' if speedup >= 2 else 'missed'})"
        print(line)
    write_json(args.json, "makespan", args, {
        "latency_range_s": [low, high], "repeats": repeats,
        "scheduler": scheduler, "orchestrator": orchestrated,
    })


if __name__ == "__main__":
    main()
