"""A worker: claim a task, run it in a child process, keep its lease alive, repeat.

The agent of each task runs in a child process of its own process group (`python -m
agent_team.jobs.task_runner`), so the worker can always stop it: when the lease cannot be
renewed for half its length (the database is unreachable, or another worker took the task
over) the worker kills the child's whole group itself. The child dies with its worker
(PR_SET_PDEATHSIG), so a killed worker leaves nothing running: its task is claimed again once
the lease expires. Stopping is graceful: the running task is finished, or on a second request
killed and released back to the queue, never lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .db import DEFAULT_MAX_ATTEMPTS
from .errors import FenceRejected
from .queue import Claim, TaskQueue
from .store import JobStore

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # scripts/orchestration
EXIT_COMPLETED, EXIT_FAILED, EXIT_REFUSED = 0, 1, 3


@dataclass
class WorkerOptions:
    """How one worker behaves; `job_id` limits it to one job, `exit_when_idle` for pools."""

    work_dir: Path
    lease_s: float = 60.0
    poll_s: float = 0.5
    job_id: str | None = None
    exit_when_idle: bool = False
    worker_id: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


class Worker:
    """One worker loop over a store. `stop()` finishes the current task; `stop(now=True)`
    kills it and releases it to the queue."""

    def __init__(self, store: JobStore, options: WorkerOptions) -> None:
        self.store = store
        self.options = options
        self.queue = TaskQueue(store, lease_s=options.lease_s,
                               max_attempts=options.max_attempts)
        self.worker_id = ""
        self._stop = threading.Event()
        self._stop_now = threading.Event()
        self.tasks_run = 0

    def stop(self, *, now: bool = False) -> None:
        self._stop.set()
        if now:
            self._stop_now.set()

    def run(self) -> int:
        """Work until stopped (or idle, with `exit_when_idle`); returns tasks run."""
        self.worker_id = self.store.workers.register(self.options.worker_id)
        last_beat = 0.0
        try:
            while not self._stop.is_set():
                claim = self.queue.claim(self.worker_id, job_id=self.options.job_id)
                if claim is None:
                    if self.options.exit_when_idle and self._nothing_left():
                        break
                    if time.monotonic() - last_beat > max(1.0, self.options.lease_s / 3):
                        self.store.workers.heartbeat(self.worker_id, status="idle")
                        last_beat = time.monotonic()
                    self._stop.wait(self.options.poll_s)
                    continue
                self.store.workers.heartbeat(self.worker_id, status="busy",
                                            current_task_id=claim.task_id)
                self.run_claim(claim)
                self.tasks_run += 1
                self.store.workers.heartbeat(self.worker_id, status="idle", finished_task=True)
                last_beat = time.monotonic()
        finally:
            self.store.workers.heartbeat(self.worker_id, status="stopped")
        return self.tasks_run

    def _nothing_left(self) -> bool:
        """Whether the pool's job (or every job) has no pending or running task left."""
        if self.options.job_id is None:
            return not self.store.list_tasks(status=("pending", "running"), limit=1,
                                             claimable=True)
        status = self.store.job_status(self.options.job_id)
        return status.pending == 0 and status.running == 0

    def run_claim(self, claim: Claim) -> int:
        """Run one claimed task in a child process, renewing its lease; returns its exit code."""
        argv = [sys.executable, "-m", "agent_team.jobs.task_runner",
                "--task", str(claim.task_id), "--fence", str(claim.fence),
                "--worker", self.worker_id, "--lease", str(claim.lease_s),
                "--work-dir", str(self.options.work_dir), "--parent", str(os.getpid())]
        env = dict(os.environ)
        env["AGENT_TEAM_DB"] = self.store.url  # not on the command line: it may hold a password
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        child = subprocess.Popen(argv, env=env, process_group=0, stdin=subprocess.DEVNULL)
        last_ok = time.monotonic()
        interval = max(0.2, claim.lease_s / 4)
        while True:
            try:
                code = child.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                pass
            else:
                self._fail_if_unrecorded(claim, code)
                return code
            if self._stop_now.is_set():
                _kill_group(child)
                self.queue.release(claim, "worker stopped")
                return child.wait()
            try:
                renewed = self.queue.renew(claim)
            except Exception:  # noqa: BLE001 - an unreachable database is a failed renewal
                renewed = False
            if renewed:
                last_ok = time.monotonic()
                self.store.workers.heartbeat(self.worker_id)
            elif not renewed and (time.monotonic() - last_ok >= claim.lease_s / 2
                                  or self._lost(claim)):
                _kill_group(child)
                with contextlib.suppress(Exception):  # the database may be what is gone
                    self.store.events.add("lease_lost", "agent stopped: lease not renewed",
                                         job_id=claim.task.job_id, task_id=claim.task_id,
                                         worker_id=self.worker_id)
                return child.wait()

    def _fail_if_unrecorded(self, claim: Claim, code: int) -> None:
        """A task process that died without recording anything fails its task (no loop of
        re-claims of a task that crashes its process every time)."""
        if self._lost(claim):
            return
        with contextlib.suppress(FenceRejected):
            self.queue.fail(claim, f"the task process exited with status {code} without "
                                   "recording a result; see the worker's output")

    def _lost(self, claim: Claim) -> bool:
        """Whether the database says another attempt owns the task (kill at once then)."""
        try:
            task = self.store.get_task(claim.task_id)
        except Exception:  # noqa: BLE001
            return False
        return task.attempts != claim.fence or task.status != "running"


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def install_signal_handlers(workers: list[Worker]) -> None:
    """SIGTERM / Ctrl-C once: finish running tasks; twice: kill them and release them."""
    count = {"n": 0}

    def handler(signum: int, _frame: object) -> None:
        count["n"] += 1
        for worker in workers:
            worker.stop(now=count["n"] > 1)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
