"""`co run`: run the backlog's pending tasks with the agent team (see run_engine.py)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, AgentTeamError, UserError
from ..progress import ProgressDisplay
from ..run_frame import new_run
from ..state import TeamState
from ..task_record import TaskRecord
from .backlog import Backlog, BacklogTask, open_backlog
from .base import BadInput, CoContext, errors_as_click, working_dir_option
from .checkpoint_cmds import rollback_manager
from .checkpoints import CheckpointType
from .engine import co_team
from .notify import Notifications, summary_event
from .run_engine import (
    BacklogRun,
    CoSeams,
    WorkerFunction,
    backlog_feature,
    record_results,
    run_backlog_tasks,
)
from .settings import CoSettings, configure_logging

FINISHED = ("completed", "failed", "blocked", "skipped")


class RichProgress:
    """An event-log listener drawing one bar: plan tasks finished out of planned."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("[bold]co run"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.bar = self.progress.add_task("planning", total=None)
        self.done: set[str] = set()

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def write_line(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "plan_accepted":
            self.progress.update(self.bar, total=int(event.get("tasks") or 0), description="")
        elif kind == "task_status" and event.get("status") in FINISHED:
            self.done.add(str(event.get("task_id")))
            self.progress.update(self.bar, completed=len(self.done),
                                 description=f"{event.get('task_id')} {event.get('status')}")


def runnable(tasks: Sequence[BacklogTask], only: int | None) -> tuple[list[BacklogTask], list[str]]:
    """The tasks this run takes, and why others wait.

    A parent with unfinished subtasks is done through them; a task whose dependency is neither
    done nor in this run waits.
    """
    by_id = {t.id: t for t in tasks}
    if only is not None:
        if only not in by_id:
            raise UserError(f"No task {only} in the backlog. List them with `co list`.")
        task = by_id[only]
        if task.status not in ("pending", "failed", "blocked"):
            raise UserError(f"Task {only} is {task.status}; only pending, failed or blocked tasks "
                            f"run (co update {only} --status pending to run it again).")
        candidates = [task]
    else:
        candidates = [t for t in tasks if t.status == "pending"]
    open_children = {t.parent for t in tasks if t.parent is not None and t.status != "done"}
    chosen = [t for t in candidates if t.id not in open_children]
    waiting: list[str] = []
    changed = True
    while changed:
        changed = False
        ids = {t.id for t in chosen}
        for task in list(chosen):
            blockers = [d for d in task.dependencies
                        if d not in ids and by_id.get(d) and by_id[d].status != "done"]
            if blockers:
                chosen.remove(task)
                waiting.append(f"task {task.id} waits for {', '.join(map(str, blockers))}")
                changed = True
    return chosen, waiting


def preflight(project: Path, settings: CoSettings) -> None:
    """monitoring.check_usage_before_start: what `co check` finds wrong stops the run first."""
    if not settings.check_usage_before_start:
        return
    from .setup_cmds import startup_problems

    problems = startup_problems(project)
    if problems:
        raise UserError("Not started; `co check` finds problems:\n" + "\n".join(
            f"  - {p}" for p in problems))


def run_backlog(ctx: CoContext, project: Path, *, workers: int | None, verbose: bool,
                progress: bool, only: int | None, limits: Mapping[str, Any],
                worker: WorkerFunction | None = None,
                notifiers: Sequence[Any] = (), model: Any = None, storage: Any = None) -> int:
    """The whole of `co run`; returns the exit code. Also used by ClaudeOrchestrator."""
    settings = ctx.settings(project)
    configure_logging(verbose or settings.verbose_logging)
    backlog = open_backlog(project)
    chosen, waiting = runnable(backlog.all(), only)
    for line in waiting:
        click.echo(f"[co] {line}")
    if not chosen:
        click.echo("[co] Nothing to run: no pending task is ready. Add one with co add \"...\".")
        return 0
    preflight(project, settings)
    notifications = Notifications.from_settings(settings.slack, notifiers)
    label = time.strftime("%Y-%m-%d %H:%M:%S") + " " + uuid.uuid4().hex[:4]
    manager = rollback_manager(project, backlog, storage)
    show_bar = progress and settings.show_progress_bar and sys.stdout.isatty()
    display = ProgressDisplay(sys.stdout, live=False, verbose=verbose or settings.cli_verbose)
    bar = RichProgress(Console(file=sys.stdout)) if show_bar else None
    seams = CoSeams(worker_timeout=settings.worker_timeout, review=settings.enable_opus_review)
    team = co_team(ctx, settings, project, model=model,
                   output=bar.write_line if bar else display.write_line,
                   progress=display if bar is None else None, seams=seams,
                   limits=dict(limits), coordination={"max_workers": workers})
    run = new_run(team)
    manager.create_checkpoint(CheckpointType.PRE_RUN, f"before co run {label}")

    def before_merge(task: TaskRecord, branch: str) -> None:
        manager.create_checkpoint(CheckpointType.PRE_MERGE,
                                  f"before merging {task['task_id']} into {run.feature_branch}")

    spec = BacklogRun(chosen=chosen, feature=backlog_feature(chosen, label),
                      max_workers=team.settings.max_workers, seams=seams, worker=worker,
                      before_merge=before_merge,
                      listeners=[x for x in (bar, notifications.listener(f"co run {label}"))
                                 if x is not None])
    for task in chosen:
        backlog.update(task.id, status="in-progress")
    code = EXIT_BAD_INPUT
    try:
        with bar or _nothing():
            summary = run_backlog_tasks(team, run, spec)
        code = int(summary["exit_code"])
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        raise
    except AgentTeamError as exc:
        code = exc.exit_code
        raise
    finally:
        state = TeamState.for_project(project, create=False, must_exist=False).read()
        outcome = record_results(backlog, state, run.run_id, code) if run.began else {}
        for task in chosen:
            if task.id not in outcome:
                backlog.update(task.id, status="pending")
        roll_up_parents(backlog)
        _report(backlog, chosen, outcome, state, code, display.write_line)
        notifications.event(summary_event(code), _notice(chosen, outcome, state, code))
        _usage_warning(state, settings, notifications, display.write_line)
    return code


class _nothing:  # noqa: N801 - a no-op context manager
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def roll_up_parents(backlog: Backlog) -> None:
    """A parent whose subtasks are all done is done."""
    tasks = backlog.all()
    for task in tasks:
        children = [t for t in tasks if t.parent == task.id]
        if children and task.status != "done" and all(c.status == "done" for c in children):
            backlog.update(task.id, status="done")


def _report(backlog: Backlog, chosen: Sequence[BacklogTask], outcome: Mapping[int, str],
            state: Mapping[str, Any], code: int, write: Any) -> None:
    write("")
    write("co run summary")
    for task in chosen:
        write(f"  task {task.id}: {outcome.get(task.id, 'pending (not run)')} - {task.description}")
    feature = state.get("current_feature") or {}
    tests = (state.get("integration") or {}).get("test_results")
    if feature.get("branch"):
        write(f"  branch: {feature['branch']}")
    if tests:
        write(f"  tests: exit {tests.get('exit_code')}, {tests.get('passed')} passed, "
              f"{tests.get('failed')} failed")
    write(f"  exit code: {code}")


def _notice(chosen: Sequence[BacklogTask], outcome: Mapping[int, str],
            state: Mapping[str, Any], code: int) -> str:
    done = sum(1 for s in outcome.values() if s == "done")
    branch = (state.get("current_feature") or {}).get("branch") or "no branch"
    what = {0: "completed", 3: "stopped by its budget", 130: "interrupted"}.get(code, "failed")
    return f"co run {what}: {done}/{len(chosen)} task(s) done on {branch} (exit {code})."


def _usage_warning(state: Mapping[str, Any], settings: CoSettings,
                   notifications: Notifications, write: Any) -> None:
    """monitoring.usage_warning_threshold: say when a budget is nearly used up."""
    usage = state.get("usage") or {}
    limits = usage.get("limits") or {}
    total = usage.get("total") or {}
    spent = {"max_api_calls": total.get("api_calls"),
             "token_budget": sum(int(total.get(k) or 0) for k in (
                 "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")),
             "cost_limit_usd": usage.get("estimated_cost_usd")}
    for name, limit in limits.items():
        value = spent.get(name)
        if limit and value is not None and value / limit * 100 >= settings.usage_warning_threshold:
            message = (f"co run used {value / limit * 100:.0f}% of {name} ({value} of {limit}); "
                       f"monitoring.usage_warning_threshold is "
                       f"{settings.usage_warning_threshold:g}%.")
            write(f"[co] Warning: {message}")
            notifications.send(message, "warning")


@click.command("run")
@click.option("--workers", "-w", type=click.IntRange(1, 64),
              help="Agents working at once (default: execution.max_workers).")
@click.option("--verbose", "-v", is_flag=True, help="Also print every model and tool call.")
@click.option("--no-progress", is_flag=True, help="No progress bar: plain lines only.")
@working_dir_option
@click.option("--id", "task_id", type=int, help="Run only this backlog task.")
@click.option("--max-api-calls", type=click.IntRange(1), help="Stop after this many API calls.")
@click.option("--token-budget", type=click.IntRange(1), help="Stop before this many tokens.")
@click.option("--cost-limit", type=click.FloatRange(0), help="Stop before this cost in USD.")
@click.pass_obj
def run(ctx: CoContext, workers: int | None, verbose: bool, no_progress: bool,
        working_dir: Path | None, task_id: int | None, max_api_calls: int | None,
        token_budget: int | None, cost_limit: float | None) -> None:
    """Run the pending tasks: plan, execute in worktrees, merge, test, review."""
    project = ctx.working_dir(working_dir)
    limits = {"max_api_calls": max_api_calls, "token_budget": token_budget,
              "cost_limit_usd": cost_limit}
    try:
        with errors_as_click():
            code = run_backlog(ctx, project, workers=workers, verbose=verbose,
                               progress=not no_progress, only=task_id, limits=limits)
    except KeyboardInterrupt:
        click.echo("Interrupted. Work committed so far is kept on its branches.", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except BadInput:
        raise
    raise SystemExit(code)


COMMANDS = [run]
