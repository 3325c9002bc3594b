"""A pool of workers inside the calling process, for callers that find no live worker.

`wait_and_collect` and `quick_delegate` use it so nothing hangs when no
`claude_coordinator.py` is running: each pool worker is a thread that claims only the job's
tasks and runs each in a child process, exactly like a standalone worker, then exits when the
job has nothing left to run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .db import DEFAULT_MAX_ATTEMPTS
from .store import JobStore
from .worker import Worker, WorkerOptions


def run_pool(store: JobStore, job_id: str, *, work_dir: Path, workers: int = 2,
             lease_s: float = 60.0, poll_s: float = 0.3, until: float | None = None,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Run the job's ready tasks with `workers` threads until none is left; tasks run.

    At `until` (a `time.monotonic()` deadline) the workers stop at once and their running
    tasks go back to the queue.
    """
    pool = [Worker(store, WorkerOptions(work_dir=work_dir, lease_s=lease_s, poll_s=poll_s,
                                        job_id=job_id, exit_when_idle=True,
                                        max_attempts=max_attempts))
            for _ in range(max(1, workers))]
    threads = [threading.Thread(target=w.run, name=f"job-pool-{i}", daemon=True)
               for i, w in enumerate(pool)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
                if until is not None and time.monotonic() >= until:
                    for worker in pool:
                        worker.stop(now=True)
    except KeyboardInterrupt:
        for worker in pool:
            worker.stop(now=True)
        for thread in threads:
            thread.join()
        raise
    return sum(w.tasks_run for w in pool)
