"""Command lines of the worker pool: `claude_coordinator.py N` and one worker process.

`coordinator_main` starts N worker processes and stops them gracefully on SIGTERM or Ctrl-C
(a second signal stops them at once, releasing their tasks to the queue).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, AgentTeamError
from .db import redact_url, resolve_db_url, resolve_max_attempts
from .store import JobStore
from .worker import PACKAGE_ROOT, Worker, WorkerOptions, install_signal_handlers

LEASE_ENV = "AGENT_TEAM_LEASE_S"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers; give a positive integer, e.g. 4")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def default_project_dir() -> Path:
    """ORCHESTRATOR_WORKING_DIR, else the repository of the current directory, else it."""
    configured = os.environ.get("ORCHESTRATOR_WORKING_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    found = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True,
                           text=True, check=False)
    if found.returncode == 0 and found.stdout.strip():
        return Path(found.stdout.strip()).resolve()
    return Path.cwd().resolve()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-dir", type=Path, default=None,
                        help="where the store lives by default, and the workers' clones and "
                             "logs (default: the repository of the current directory)")
    parser.add_argument("--db", default=None,
                        help="job store URL or SQLite path (default: $AGENT_TEAM_DB, config "
                             "storage.url, or PROJECT/.ai-agents/jobs.db)")
    parser.add_argument("--job", default=None,
                        help="claim only this job's tasks; the only way to serve an opt-in "
                             "job such as co's backlog (default: every job that is not opt-in)")
    parser.add_argument("--poll", type=_positive_float, default=0.5,
                        help="seconds an idle worker waits before it looks at the queue again")
    parser.add_argument("--lease", type=_positive_float,
                        default=float(os.environ.get(LEASE_ENV) or 60.0),
                        help="lease of a claimed task in seconds (default 60)")
    parser.add_argument("--max-attempts", type=_positive_int, default=None,
                        help="leases of one task that may expire in a row (its worker died "
                             "or hung) before it fails (default: $AGENT_TEAM_MAX_ATTEMPTS, "
                             "config storage.max_attempts, or 3)")


def coordinator_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="claude_coordinator.py",
        description="Run N job workers until SIGTERM or Ctrl-C.")
    parser.add_argument("workers", type=_positive_int, help="number of worker processes")
    _common(parser)
    args = parser.parse_args(argv)
    project = (args.project_dir or default_project_dir()).expanduser().resolve()
    if not project.is_dir():
        print(f"error: --project-dir {project} is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        url = resolve_db_url(args.db, project)
        max_attempts = resolve_max_attempts(args.max_attempts, project)
        JobStore(url).close()  # create or migrate once, before the workers race to
    except AgentTeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    env = dict(os.environ)
    env["AGENT_TEAM_DB"] = url
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    children = [
        subprocess.Popen([sys.executable, "-m", "agent_team.jobs.cli", "--project-dir",
                          str(project), "--lease", str(args.lease), "--poll", str(args.poll),
                          "--max-attempts", str(max_attempts),
                          *(["--job", args.job] if args.job else [])], env=env,
                         stdin=subprocess.DEVNULL, process_group=0)
        for _ in range(args.workers)
    ]
    print(f"{args.workers} worker(s) on {redact_url(url)}; Ctrl-C or SIGTERM to stop "
          "(running tasks finish; twice: released to the queue)", flush=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while any(child.poll() is None for child in children):
        time.sleep(0.2)
    return EXIT_INTERRUPTED if signal.SIGINT in received else 0


def worker_main(argv: list[str] | None = None) -> int:
    """One worker process (started by the coordinator)."""
    parser = argparse.ArgumentParser(prog="agent_team.jobs.cli")
    _common(parser)
    args = parser.parse_args(argv)
    project = (args.project_dir or default_project_dir()).expanduser().resolve()
    try:
        store = JobStore.open(args.db, project)
        max_attempts = resolve_max_attempts(args.max_attempts, project)
    except AgentTeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    worker = Worker(store, WorkerOptions(work_dir=project, lease_s=args.lease,
                                         max_attempts=max_attempts, poll_s=args.poll,
                                         job_id=args.job))
    install_signal_handlers([worker])
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
