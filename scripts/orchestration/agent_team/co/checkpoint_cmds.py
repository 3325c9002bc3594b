"""Checkpoint commands: checkpoint, list-checkpoints, rollback."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from ..state_file import STATE_RELATIVE_PATH
from .backlog import Backlog, open_backlog
from .base import CoContext, errors_as_click, json_option, working_dir_option
from .checkpoints import CheckpointType, RollbackManager, RollbackStrategy


def _state(project: Path) -> dict[str, Any]:
    try:
        data = json.loads((project / STATE_RELATIVE_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def owned_branches(project: Path, backlog: Backlog) -> list[str]:
    """Branches the tool made: every run's feature branch and task branches, from the team
    state and the backlog's run records. The user's own branches are never among them."""
    names: set[str] = set()
    state = _state(project)
    feature = state.get("current_feature") or {}
    if feature.get("branch"):
        names.add(feature["branch"])
    for run in state.get("runs") or []:
        if run.get("feature_id"):
            names.add(f"feature/{run['feature_id']}")
    for task in state.get("tasks") or []:
        if task.get("branch"):
            names.add(task["branch"])
    for item in backlog.all():
        for record in item.runs:
            if record.get("branch"):
                names.add(record["branch"])
            for part in record.get("plan_tasks") or []:
                if part.get("branch"):
                    names.add(part["branch"])
    return sorted(names)


def merges_of_task(project: Path, backlog: Backlog, task: str) -> list[tuple[str, str]]:
    """(branch, merge commit) of a backlog task (`12`) or a plan task (`T12.1`)."""
    found: list[tuple[str, str]] = []
    for item in backlog.all():
        for record in item.runs:
            for part in record.get("plan_tasks") or []:
                if part.get("merge_commit") and record.get("branch") and (
                        task in (str(item.id), part["task_id"])):
                    found.append((record["branch"], part["merge_commit"]))
    if not found:
        state = _state(project)
        branch = (state.get("current_feature") or {}).get("branch")
        for part in state.get("tasks") or []:
            if part.get("task_id") == task and part.get("merge_commit") and branch:
                found.append((branch, part["merge_commit"]))
    return list(dict.fromkeys(found))


def rollback_manager(project: Path, backlog: Backlog | None = None,
                     storage: Any = None) -> RollbackManager:
    """The project's RollbackManager, wired to its backlog and team state."""
    items = backlog or open_backlog(project)
    return RollbackManager(
        project, storage=storage,
        owned_branches=lambda: owned_branches(project, items),
        snapshot_backlog=items.snapshot, restore_backlog=items.restore,
        merges_of_task=lambda task: merges_of_task(project, items, task))


@click.command()
@click.argument("description")
@click.option("--file", "files", multiple=True,
              help="Also keep this file as it is now in the working directory (repeatable).")
@working_dir_option
@click.pass_obj
def checkpoint(ctx: CoContext, description: str, files: Sequence[str],
               working_dir: Path | None) -> None:
    """Record the tool's branches and the backlog now; prints the checkpoint id."""
    project = ctx.working_dir(working_dir)
    with errors_as_click():
        manager = rollback_manager(project)
        checkpoint_id = manager.create_checkpoint(CheckpointType.MANUAL, description, files)
        kept = manager.get(checkpoint_id)
    click.echo(f"Checkpoint {checkpoint_id}: {len(kept.branches)} branch(es), "
               f"{len(kept.backlog or [])} backlog task(s).")


@click.command("list-checkpoints")
@working_dir_option
@json_option
@click.pass_obj
def list_checkpoints(ctx: CoContext, working_dir: Path | None, as_json: bool) -> None:
    """Every checkpoint, oldest first."""
    project = ctx.working_dir(working_dir)
    with errors_as_click():
        found = rollback_manager(project).list_checkpoints()
    if as_json:
        click.echo(json.dumps([c.to_json() for c in found], indent=2))
        return
    if not found:
        click.echo("No checkpoints yet: co checkpoint \"description\" (co run takes them too).")
        return
    for c in found:
        click.echo(f"{c.checkpoint_id}  {c.created_at}  {c.kind:<9} {len(c.branches):>3} "
                   f"branch(es)  {c.description}")


@click.command()
@click.argument("checkpoint_id")
@click.option("--strategy", type=click.Choice([s.value for s in RollbackStrategy]),
              default="full", show_default=True,
              help="full: branches and backlog; partial: --files; selective: --tasks.")
@click.option("--files", multiple=True, help="Paths to restore (partial; repeatable).")
@click.option("--tasks", multiple=True, help="Task ids whose merges to revert (selective).")
@working_dir_option
@click.pass_obj
def rollback(ctx: CoContext, checkpoint_id: str, strategy: str, files: Iterable[str],
             tasks: Iterable[str], working_dir: Path | None) -> None:
    """Go back to a checkpoint; every moved branch's old tip is kept under a backup ref."""
    project = ctx.working_dir(working_dir)
    with errors_as_click():
        manager = rollback_manager(project)
        result = manager.rollback(checkpoint_id, strategy, list(_split(tasks)),
                                  files=list(_split(files)))
    for line in result.lines():
        click.echo(line)
    if not result.success:
        raise SystemExit(1)


def _split(values: Iterable[str]) -> list[str]:
    """`--files a b` arrives as repeated options or one comma/space separated value."""
    return [part for value in values for part in value.replace(",", " ").split() if part]


COMMANDS = [checkpoint, list_checkpoints, rollback]
