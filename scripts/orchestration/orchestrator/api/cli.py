"""Command-line helpers behind quick-start.sh and check-status.sh (submit, follow, status).

    python -m orchestrator.api.cli submit "task" [--follow]
    python -m orchestrator.api.cli status JOB_ID

The server's address comes from ORCHESTRATOR_URL (default http://127.0.0.1:8000) and the key
from ORCHESTRATOR_API_KEY.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from .client import TERMINAL, OrchestratorClient, OrchestratorError

EXIT_CODES = {"completed": 0, "partial": 1, "failed": 1, "cancelled": 130}


def _client() -> OrchestratorClient:
    return OrchestratorClient(os.environ.get("ORCHESTRATOR_URL", "http://127.0.0.1:8000"),
                              os.environ.get("ORCHESTRATOR_API_KEY", ""))


def _print_tasks(tasks: list[dict[str, Any]], depth: int = 0) -> None:
    for task in tasks:
        child = f" -> child job {task['child_job_id']}" if task.get("child_job_id") else ""
        files = ", ".join(task.get("files_created") or [])
        click.echo(f"{'  ' * depth}  {task['worker_id']:<12} {task['task_id']:<10} "
                   f"{task['status']:<18} {files}{child}")
        _print_tasks(task.get("child_results") or [], depth + 1)


def _print_status(status: dict[str, Any]) -> None:
    results = status["results"]
    usage = status["usage"]
    cost = "unknown" if usage.get("cost_usd") is None else f"${usage['cost_usd']:.4f}"
    click.echo(f"Job {status['job_id']}: {status['status']} (depth {status['depth']}; "
               f"{usage['api_calls']} API calls, {usage['tokens']} tokens, {cost})")
    if status.get("error"):
        click.echo(f"  Problem: {status['error']}")
    _print_tasks(results["tasks"])
    click.echo(f"Workspace:    {results['workspace']}")
    if results.get("final_report"):
        click.echo(f"Final report: {results['final_report']}")
    if results.get("branch"):
        click.echo(f"Branch:       {results['branch']} in {results['repository']}")


@click.group()
def main() -> None:
    """Talk to a running orchestration service."""


@main.command()
@click.argument("task")
@click.option("--follow/--no-follow", default=True, help="Print progress until the job ends.")
@click.option("--max-workers", type=int)
@click.option("--timeout", type=float, default=3600.0, help="Seconds to follow at most.")
def submit(task: str, follow: bool, max_workers: int | None, timeout: float) -> None:
    """Submit TASK as a job, then follow it."""
    try:
        with _client() as client:
            job = client.orchestrate(task, max_workers=max_workers)
            click.echo(f"Job {job['job_id']} submitted ({job['status']}).")
            if not follow:
                return
            seen = ""
            deadline = time.monotonic() + timeout
            while True:
                status = client.get_status(job["job_id"])
                tasks = status["results"]["tasks"]
                done = sum(1 for t in tasks if t["status"] in ("success", "recursive_success"))
                line = f"  {status['status']}: {done}/{len(tasks)} tasks done"
                if line != seen:
                    click.echo(line)
                    seen = line
                if status["status"] in TERMINAL or time.monotonic() > deadline:
                    break
                time.sleep(1)
            _print_status(status)
            sys.exit(EXIT_CODES.get(status["status"], 1))
    except OrchestratorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Print a job's status, tasks and where its results are."""
    try:
        with _client() as client:
            _print_status(client.get_status(job_id))
    except OrchestratorError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
