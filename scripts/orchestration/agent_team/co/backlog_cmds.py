"""Backlog commands: add, parse, list, show, update, delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..plan import Plan
from ..steps_plan import plan_feature
from .backlog import STATUSES, Backlog, BacklogTask, open_backlog
from .base import BadInput, CoContext, errors_as_click, json_option, working_dir_option
from .engine import co_team, manager_run

MAX_DOCUMENT_CHARS = 60_000


def _backlog(ctx: CoContext, working_dir: Path | None) -> tuple[Path, Backlog]:
    project = ctx.working_dir(working_dir)
    return project, open_backlog(project)


def _line(task: BacklogTask, indent: str = "") -> str:
    deps = ",".join(str(d) for d in task.dependencies) or "-"
    return (f"{indent}{task.id:>4}  {task.status:<11} {task.priority_name:<6}({task.priority:>2}) "
            f"{(task.role or '-'):<13} deps:{deps:<8} {task.description}")


@click.command()
@click.argument("description")
@click.option("--priority", "-p", default=None, help="high, medium, low or 1-10 (default medium).")
@click.option("--depends-on", "dependencies", multiple=True, type=int,
              help="Id of a task this one needs first (repeatable).")
@click.option("--parent", type=int, help="Make it a subtask of this task.")
@click.option("--role", help="The role that should do it (default: the manager decides).")
@working_dir_option
@click.pass_obj
def add(ctx: CoContext, description: str, priority: str | None, dependencies: Sequence[int],
        parent: int | None, role: str | None, working_dir: Path | None) -> None:
    """Add a task to the backlog; prints its id."""
    _, backlog = _backlog(ctx, working_dir)
    with errors_as_click():
        task = backlog.add(description, priority=priority, dependencies=dependencies,
                           parent=parent, role=role)
    click.echo(f"Added task {task.id}: {task.description}")


@click.command()
@click.argument("file_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@working_dir_option
@json_option
@click.pass_obj
def parse(ctx: CoContext, file_path: Path, working_dir: Path | None, as_json: bool) -> None:
    """Have the manager turn a requirements document or PRD into backlog tasks."""
    project, backlog = _backlog(ctx, working_dir)
    text = file_path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise BadInput(f"{file_path} is empty: nothing to turn into tasks.")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise BadInput(f"{file_path} has {len(text)} characters; at most {MAX_DOCUMENT_CHARS} "
                       "fit in one planning request. Split it and parse the parts.")
    request = (
        f"Requirements document {file_path.name}. Turn it into backlog tasks: one task per "
        "piece of work, with dependencies and a priority each. A large task may have subtasks: "
        "give a subtask the task_id of its parent, a dot and a number (T3.1, T3.2), and make "
        "it depend on what it needs.\n\n" + text)
    with errors_as_click():
        team = co_team(ctx, ctx.settings(project), project)
        plan = plan_feature(team, manager_run(team), request)
        created = add_plan(backlog, plan, source=file_path.name)
    if as_json:
        click.echo(json.dumps([t.to_json() for t in created], indent=2))
        return
    click.echo(f"Created {len(created)} task(s) from {file_path}:")
    for task in created:
        click.echo(_line(task, "  " if task.parent else ""))


def add_plan(backlog: Backlog, plan: Plan, *, source: str) -> list[BacklogTask]:
    """Add a validated plan's tasks in dependency order; `X.n` ids become subtasks of `X`."""
    ids: dict[str, int] = {}
    created = []
    known = {t["task_id"] for t in plan.tasks}
    for task in plan.order():
        task_id = task["task_id"]
        head = task_id.rsplit(".", 1)[0] if "." in task_id else None
        parent = ids.get(head) if head in known and head is not None else None
        new = backlog.add(task["description"], priority=task.get("priority", "medium"),
                          dependencies=[ids[d] for d in task["dependencies"]],
                          parent=parent, role=task["assigned_to"],
                          details="; ".join(task.get("deliverables", [])), source=source)
        ids[task_id] = new.id
        created.append(new)
    return created


@click.command("list")
@click.option("--filter-status", type=click.Choice(STATUSES + ("in_progress", "completed")),
              help="Only tasks with this status.")
@click.option("--show-subtasks", is_flag=True, help="Also list subtasks under their parents.")
@working_dir_option
@json_option
@click.pass_obj
def list_tasks(ctx: CoContext, filter_status: str | None, show_subtasks: bool,
               working_dir: Path | None, as_json: bool) -> None:
    """List the backlog's tasks."""
    _, backlog = _backlog(ctx, working_dir)
    with errors_as_click():
        tasks = backlog.all()
    wanted = {"in_progress": "in-progress", "completed": "done"}.get(filter_status or "",
                                                                     filter_status)
    chosen = [t for t in tasks if (wanted is None or t.status == wanted)
              and (show_subtasks or t.parent is None or wanted is not None)]
    if as_json:
        click.echo(json.dumps([t.to_json() for t in chosen], indent=2))
        return
    if not chosen:
        click.echo("No tasks" + (f" with status {wanted}." if wanted else " yet: co add \"...\""))
        return
    click.echo(f"{'ID':>4}  {'STATUS':<11} {'PRIORITY':<10} {'ROLE':<13} {'DEPS':<13} TASK")
    by_parent: dict[int | None, list[BacklogTask]] = {}
    for task in chosen:
        by_parent.setdefault(task.parent if show_subtasks else None, []).append(task)
    shown = {t.id for t in chosen}

    def emit(task: BacklogTask, depth: int) -> None:
        children = by_parent.get(task.id, []) if show_subtasks else []
        hidden = len(backlog.subtasks(task.id)) if not show_subtasks else 0
        suffix = f"  (+{hidden} subtasks)" if hidden and wanted is None else ""
        click.echo(_line(task, "  " * depth) + suffix)
        for child in children:
            emit(child, depth + 1)

    for task in chosen:
        if not show_subtasks or task.parent is None or task.parent not in shown:
            emit(task, 0)


@click.command()
@click.argument("task_id", type=int)
@working_dir_option
@json_option
@click.pass_obj
def show(ctx: CoContext, task_id: int, working_dir: Path | None, as_json: bool) -> None:
    """Everything recorded about one task: fields, subtasks, dependents, runs."""
    _, backlog = _backlog(ctx, working_dir)
    with errors_as_click():
        task = backlog.get(task_id)
        subtasks, dependents = backlog.subtasks(task_id), backlog.dependents(task_id)
    if as_json:
        data: dict[str, Any] = task.to_json()
        data["subtasks"] = [t.id for t in subtasks]
        data["dependents"] = [t.id for t in dependents]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Task {task.id}: {task.description}")
    click.echo(f"  status:       {task.status}")
    click.echo(f"  priority:     {task.priority_name} ({task.priority})")
    click.echo(f"  role:         {task.role or '(the manager decides)'}")
    click.echo(f"  depends on:   {', '.join(map(str, task.dependencies)) or 'nothing'}")
    click.echo(f"  needed by:    {', '.join(str(t.id) for t in dependents) or 'nothing'}")
    if task.parent is not None:
        click.echo(f"  parent:       {task.parent}")
    if subtasks:
        click.echo("  subtasks:     " + ", ".join(f"{t.id} ({t.status})" for t in subtasks))
    if task.details:
        click.echo(f"  details:      {task.details}")
    if task.source:
        click.echo(f"  from:         {task.source}")
    for run in task.runs:
        click.echo(f"  run {run.get('run_id')}: {run.get('status')} on {run.get('branch')}")
        for part in run.get("plan_tasks", []):
            merged = f", merged {str(part.get('merge_commit'))[:10]}" if part.get(
                "merge_commit") else ""
            error = f" - {part['error']}" if part.get("error") else ""
            click.echo(f"    {part['task_id']} ({part['role']}): {part['status']}{merged}{error}")
        tests = run.get("tests")
        if tests:
            click.echo(f"    tests: exit {tests.get('exit_code')}, {tests.get('passed')} passed, "
                       f"{tests.get('failed')} failed")


@click.command()
@click.argument("task_id", type=int)
@click.option("--status", help=f"New status: {', '.join(STATUSES)}.")
@click.option("--priority", help="New priority: high, medium, low or 1-10.")
@click.option("--role", help="New role.")
@click.option("--description", help="New description.")
@working_dir_option
@click.pass_obj
def update(ctx: CoContext, task_id: int, status: str | None, priority: str | None,
           role: str | None, description: str | None, working_dir: Path | None) -> None:
    """Change a task's status, priority, role or description."""
    _, backlog = _backlog(ctx, working_dir)
    fields: dict[str, Any] = {k: v for k, v in (("status", status), ("priority", priority),
                                                 ("role", role)) if v is not None}
    if description is not None:
        if not description.strip():
            raise BadInput("--description is empty.")
        fields["description"] = description.strip()
    if not fields:
        raise BadInput("Nothing to change: pass --status, --priority, --role or --description.")
    with errors_as_click():
        task = backlog.update(task_id, **fields)
    click.echo(_line(task))


@click.command()
@click.argument("task_id", type=int)
@click.option("--force", is_flag=True, help="Also when other tasks depend on it.")
@working_dir_option
@click.pass_obj
def delete(ctx: CoContext, task_id: int, force: bool, working_dir: Path | None) -> None:
    """Delete a task and its subtasks (refused while running, or needed, unless --force)."""
    _, backlog = _backlog(ctx, working_dir)
    with errors_as_click():
        removed = backlog.delete(task_id, force=force)
    click.echo(f"Deleted task(s) {', '.join(map(str, removed))}.")


COMMANDS = [add, parse, list_tasks, show, update, delete]
