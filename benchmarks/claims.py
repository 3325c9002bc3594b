"""Claim latency and throughput of the job queue on SQLite and PostgreSQL; kill-to-rerun time.

Part 1: W worker processes (1, 4, 16) drain a job of 400 empty tasks through the real queue
(`TaskQueue.claim` then `complete`, the two transactions a worker makes per task besides its
agent). Reported: the median and 95th-percentile latency of one claim, and tasks per second.

Part 2: a process claims a task with a 2 s lease and renews it every lease/4 like a worker,
then is SIGKILLed; a second process polls `claim` every 50 ms. Reported: the time from the
kill to the second claim (bounded by the lease by design), and that the task ran once per
fence. PostgreSQL is a throwaway server from the machine's binaries (skipped when absent).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine_line, median, parser, table, write_json
from agent_team.jobs import JobStore, TaskQueue
from agent_team.jobs.pgserver import find_pg_bin, start_postgres

LEASE_S = 2.0


def _drain(url: str, name: str, out: Any) -> None:
    store = JobStore(url)
    queue = TaskQueue(store, lease_s=60)
    latencies = []
    first = time.time()
    while True:
        started = time.perf_counter()
        claim = queue.claim(name)
        latencies.append(time.perf_counter() - started)
        if claim is None:
            break
        queue.complete(claim, {"summary": "ok"})
    out.put((latencies[:-1], first, time.time()))


def throughput(url: str, workers: int, tasks: int) -> dict[str, Any]:
    store = JobStore(url)
    job = store.create_job("benchmark")
    for n in range(tasks):
        store.add_task(job.id, f"t{n}", priority=1 + n % 10)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain, args=(url, f"w{i}", out)) for i in range(workers)]
    for proc in procs:
        proc.start()
    latencies: list[float] = []
    starts, ends = [], []
    for _ in procs:
        part, first, last = out.get()
        latencies += part
        starts.append(first)
        ends.append(last)
    for proc in procs:
        proc.join()
    elapsed = max(ends) - min(starts)  # from the first claim of any worker: no start-up cost
    status = store.job_status(job.id)
    assert status.completed == tasks, status
    assert all(t.attempts == 1 for t in store.list_tasks(job.id)), "a task ran twice"
    ordered = sorted(latencies)
    return {"workers": workers, "tasks": tasks, "claim_median_ms": median(ordered) * 1000,
            "claim_p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000,
            "tasks_per_s": tasks / elapsed, "elapsed_s": elapsed}


def _hold(url: str, task_claimed: Any) -> None:
    queue = TaskQueue(JobStore(url), lease_s=LEASE_S)
    claim = queue.claim("victim")
    assert claim is not None
    task_claimed.set()
    while True:  # renew like a worker until killed
        time.sleep(LEASE_S / 4)
        queue.renew(claim)


def kill_to_rerun(url: str, rounds: int) -> dict[str, Any]:
    store = JobStore(url)
    ctx = mp.get_context("spawn")
    waits = []
    for _ in range(rounds):
        job = store.create_job("kill")
        task = store.add_task(job.id, "victim task")
        claimed = ctx.Event()
        victim = ctx.Process(target=_hold, args=(url, claimed))
        victim.start()
        claimed.wait(60)
        time.sleep(LEASE_S * 0.6)  # mid-task, after at least one renewal
        os.kill(victim.pid or 0, signal.SIGKILL)
        killed = time.perf_counter()
        victim.join()
        queue = TaskQueue(store, lease_s=LEASE_S)
        while (claim := queue.claim("rescuer", job_id=job.id)) is None:
            time.sleep(0.05)
        waits.append(time.perf_counter() - killed)
        assert claim.fence == 2 and claim.task_id == task.id
        queue.complete(claim, {"summary": "rerun"})
    return {"rounds": rounds, "lease_s": LEASE_S, "median_s": statistics.median(waits),
            "max_s": max(waits)}


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    tasks = 40 if args.quick else 400
    worker_counts = (1, 4) if args.quick else (1, 4, 16)
    rounds = 1 if args.quick else 5
    print(machine_line())
    tmp = Path(tempfile.mkdtemp(prefix="claims-bench-"))
    server = None
    if find_pg_bin() is not None:
        server = start_postgres()
    else:
        print("PostgreSQL binaries not installed: PostgreSQL rows skipped")
    results: dict[str, Any] = {"throughput": [], "kill_to_rerun": []}
    try:
        rows, kill_rows = [], []
        for backend in ("sqlite", "postgresql"):
            if backend == "postgresql" and server is None:
                continue
            for workers in worker_counts:
                url = (f"sqlite:///{tmp / f'{backend}-{workers}.db'}" if backend == "sqlite"
                       else server.create_database())  # type: ignore[union-attr]
                row = {"backend": backend, **throughput(url, workers, tasks)}
                results["throughput"].append(row)
                rows.append([backend, workers, tasks, row["claim_median_ms"],
                             row["claim_p95_ms"], row["tasks_per_s"]])
            url = (f"sqlite:///{tmp / 'kill.db'}" if backend == "sqlite"
                   else server.create_database())  # type: ignore[union-attr]
            kill = {"backend": backend, **kill_to_rerun(url, rounds)}
            results["kill_to_rerun"].append(kill)
            kill_rows.append([backend, rounds, kill["lease_s"], kill["median_s"],
                              kill["max_s"]])
        print("\n## Claim latency and throughput (claim + complete per task)\n")
        print(table(["backend", "workers", "tasks", "claim median ms", "claim p95 ms",
                     "tasks/s"], rows))
        print("\n## SIGKILL of a lease holder to the task's next claim\n")
        print(table(["backend", "rounds", "lease s", "median s", "max s"], kill_rows))
        print("\nEvery task was claimed exactly once per fence in every run.")
    finally:
        if server is not None:
            server.stop()
    write_json(args.json, "claims", args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
