"""The job dashboard: jobs, tasks, workers and recent events from the store, drawn with rich.

`claude_dashboard.py --once` prints one snapshot (for scripts); without it the view refreshes
every second until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..errors import EXIT_INTERRUPTED, AgentTeamError
from .cli import default_project_dir
from .store import JobStore

STATUS_STYLE = {"completed": "green", "running": "cyan", "pending": "white",
                "failed": "red", "blocked": "yellow", "cancelled": "magenta"}
MAX_TASKS = 30


def _clock(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S") if epoch else "-"


def _status(text: str) -> Text:
    return Text(text, style=STATUS_STYLE.get(text, ""))


def snapshot(store: JobStore, *, jobs_limit: int = 10, events_limit: int = 12) -> Group:
    """One renderable view of the whole store."""
    jobs = store.list_jobs(limit=jobs_limit)
    job_table = Table(title=f"Jobs ({store.display_url})", expand=True)
    for column in ("job", "goal", "status", "progress", "done/total", "running", "failed",
                   "cost $"):
        job_table.add_column(column)
    total_cost = 0.0
    for job in jobs:
        status = store.job_status(job.id)
        total_cost += status.cost_usd
        job_table.add_row(job.id, job.goal[:50], _status(status.status),
                          f"{status.progress_pct:.0f}%", f"{status.completed}/{status.total_tasks}",
                          str(status.running), str(status.failed + status.blocked),
                          f"{status.cost_usd:.4f}")
    task_table = Table(title="Tasks of the newest jobs", expand=True)
    for column in ("task", "job", "status", "prio", "attempt", "worker", "prompt", "time s"):
        task_table.add_column(column)
    shown = 0
    for job in jobs:
        for task in store.list_tasks(job.id):
            if shown >= MAX_TASKS:
                break
            shown += 1
            task_table.add_row(str(task.id), job.id, _status(task.status), str(task.priority),
                               str(task.attempts), task.worker_id or "-", task.prompt[:60],
                               f"{task.duration_s:.1f}" if task.duration_s else "-")
    worker_table = Table(title="Workers", expand=True)
    for column in ("worker", "host", "pid", "state", "on task", "done", "heartbeat"):
        worker_table.add_column(column)
    for worker in store.workers.records():
        state = worker.status if worker.alive else "gone"
        style = {"busy": "cyan", "idle": "green", "gone": "red"}.get(state, "")
        worker_table.add_row(worker.id, worker.host, str(worker.pid), Text(state, style=style),
                             str(worker.current_task_id or "-") if worker.alive else "-",
                             str(worker.tasks_done), _clock(worker.heartbeat_at))
    event_table = Table(title="Recent events", expand=True)
    for column in ("time", "event", "job", "task", "worker", "message"):
        event_table.add_column(column)
    for event in store.events.recent(limit=events_limit):
        event_table.add_row(_clock(event.created_at), event.kind, event.job_id or "-",
                            str(event.task_id or "-"), event.worker_id or "-",
                            event.message[:70])
    alive = sum(1 for w in store.workers.records() if w.alive)
    summary = Text(f"{len(jobs)} job(s), {alive} worker(s) alive, cost so far "
                   f"${total_cost:.4f}", style="bold")
    return Group(summary, job_table, task_table, worker_table, event_table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claude_dashboard.py",
                                     description="Watch jobs, tasks and workers.")
    parser.add_argument("--db", default=None, help="job store URL or SQLite path")
    parser.add_argument("--project-dir", type=Path, default=None)
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh seconds (1)")
    args = parser.parse_args(argv)
    console = Console()
    try:
        store = JobStore.open(args.db, args.project_dir or default_project_dir())
        if args.once:
            console.print(snapshot(store))
            return 0
        with Live(snapshot(store), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(max(0.2, args.interval))
                live.update(snapshot(store))
    except AgentTeamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
