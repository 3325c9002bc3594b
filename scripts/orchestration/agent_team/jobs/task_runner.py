"""Child process of a worker: run one claimed task with `execute_job_task`, then exit.

Exit status 0 completed, 1 failed, 3 refused (the attempt's lease was lost). Dies with its
worker (PR_SET_PDEATHSIG), so a killed worker leaves no agent running.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
EXIT_COMPLETED, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit if it already did."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the lease still protects the task
        return
    if os.getppid() != parent:
        os._exit(EXIT_REFUSED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent_team.jobs.task_runner")
    parser.add_argument("--db", default=os.environ.get("AGENT_TEAM_DB"))
    parser.add_argument("--task", type=int, required=True)
    parser.add_argument("--fence", type=int, required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--lease", type=float, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True, help="the worker's pid")
    args = parser.parse_args(argv)
    die_with_parent(args.parent)
    if not args.db:
        parser.error("no job store: pass --db or set AGENT_TEAM_DB")
    # Imported only now: a worker killed while this process starts must take it along.
    from .execute import execute_job_task
    from .queue import Claim, TaskQueue
    from .store import JobStore

    store = JobStore(args.db)
    queue = TaskQueue(store, lease_s=args.lease)
    claim = Claim(store.get_task(args.task), args.fence, args.worker, args.lease)
    outcome = execute_job_task(queue, claim, work_dir=args.work_dir)
    if outcome.status == "completed":
        return EXIT_COMPLETED
    return EXIT_REFUSED if outcome.status == "refused" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
